"""The debug console's ``KSR_MODE`` header, sans-IO: bytes in, a decision and the bytes to replay out.

Layer contract: pure, like the host's :class:`kuasar.transport.hvsock.HandshakeReader`: bytes only
(no asyncio, no os, no sockets); imports ``kuasar.config`` for the default limit alone.
:mod:`kuasar.agent.console` drives it: it reads at most :attr:`HeaderSniffer.wanted` bytes at a
time, feeds them, and calls :meth:`HeaderSniffer.finish` when the connection ends or the sniff
deadline (``Limits.console_sniff``, 100 ms) passes.

The rule (Kuasar's vmm-task, bounded by ``Limits.console_header``):

- a first line, within the header limit, that is exactly ``KSR_MODE exec`` (trailing ``\\r``
  tolerated) selects exec mode; the bytes after its ``\\n`` are replayed into the shell;
- anything else is a plain interactive session and every byte received is replayed: a first line
  that differs, bytes that can no longer become the header (decided at once, so an interactive
  user's first keystroke is not held back), the limit reached without a ``\\n``, or the end of the
  input or of the deadline before a complete header.

The decision depends on the bytes only, never on how they were split into chunks.
"""

from __future__ import annotations

from typing import NamedTuple

from kuasar.config import DEFAULT_LIMITS

#: The exec-mode header line, without its line ending.
EXEC_MODE_LINE = b"KSR_MODE exec"


class HeaderDecision(NamedTuple):
    """What the sniffed bytes select.

    Attributes:
        exec_mode: the client sent the ``KSR_MODE exec`` header.
        replay: the bytes received that are not the header, to be written into the shell's PTY.
    """

    exec_mode: bool
    replay: bytes


class HeaderSniffer:
    """Looks for the ``KSR_MODE exec`` first line in the first bytes of a console connection.

    Args:
        limit: the longest first line considered, newline included (``Limits.console_header``).

    Raises:
        ValueError: ``limit`` is not positive.
    """

    def __init__(self, limit: int = DEFAULT_LIMITS.console_header) -> None:
        if limit < 1:
            raise ValueError(f"header limit must be positive, got {limit}")
        self._limit = limit
        self._buffer = bytearray()
        self._decision: HeaderDecision | None = None

    @property
    def decision(self) -> HeaderDecision | None:
        """The decision once made, else ``None`` (more bytes could still change it)."""
        return self._decision

    @property
    def wanted(self) -> int:
        """How many bytes the driver may read next without reading past the header limit."""
        return max(1, self._limit - len(self._buffer))

    def feed(self, data: bytes) -> HeaderDecision | None:
        """Take the next bytes of the connection.

        Returns:
            The decision, once the bytes so far settle it; ``None`` while they do not.

        Raises:
            RuntimeError: called again after the decision (the driver owns the bytes from then on).
        """
        if self._decision is not None:
            raise RuntimeError("the console header is already decided")
        self._buffer += data
        self._decision = self._decide()
        return self._decision

    def finish(self) -> HeaderDecision:
        """The decision at end of input or at the deadline: a plain session unless already decided."""
        if self._decision is None:
            self._decision = HeaderDecision(False, bytes(self._buffer))
        return self._decision

    def _decide(self) -> HeaderDecision | None:
        window = bytes(self._buffer[: self._limit])
        line, newline, _ = window.partition(b"\n")
        if newline:
            if line.rstrip(b"\r") == EXEC_MODE_LINE:
                return HeaderDecision(True, bytes(self._buffer[len(line) + 1 :]))
            return HeaderDecision(False, bytes(self._buffer))
        if not _may_become_header(window) or len(self._buffer) >= self._limit:
            return HeaderDecision(False, bytes(self._buffer))
        return None


def _may_become_header(partial: bytes) -> bool:
    """True when ``partial`` (no ``\\n`` in it) can still grow into ``KSR_MODE exec\\r*\\n``."""
    head, tail = partial[: len(EXEC_MODE_LINE)], partial[len(EXEC_MODE_LINE) :]
    return EXEC_MODE_LINE.startswith(head) and not tail.strip(b"\r")
