"""The agent API's ``Exec`` stream, sans-IO: the ``start`` message for a command, how a refusal to
start reads, and the outcome record; shared by the asyncio ``RemoteProcess`` and the blocking CLI
driver.

Layer contract: bottom of the guest layer; ``kuasar.wire`` messages, ``kuasar.codes`` and
``kuasar.errors``. No asyncio, no protobuf, no IO.
"""

from __future__ import annotations

import os

from kuasar import wire
from kuasar._record import Record
from kuasar.codes import Code
from kuasar.errors import CommandNotExecutable, CommandNotFound, KuasarError, RPCError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

SERVICE = "kuasar.agent.v1.Agent"
STDOUT, STDERR = 1, 2


class CompletedProcess(Record):
    """How a remote process ended, with its collected output.

    Attributes:
        argv: the command.
        exit_status: its exit code, or ``None`` when a signal killed it.
        signal: the signal that killed it, or 0.
        core_dumped: it dumped core.
        stdout: output collected by :meth:`RemoteProcess.wait` (chunks already taken with
            :meth:`RemoteProcess.read` are not repeated).
        stderr: likewise (empty on a PTY: stderr is merged into stdout).
    """

    argv: tuple[str, ...]
    exit_status: int | None
    signal: int = 0
    core_dumped: bool = False
    stdout: bytes = b""
    stderr: bytes = b""

    @property
    def returncode(self) -> int:
        """``exit_status``, or ``-signal`` as :mod:`subprocess` reports a death by signal."""
        return -self.signal if self.signal else (self.exit_status or 0)


class ProcessError(KuasarError):
    """``run(check=True)``: the remote command failed. ``result`` holds the outcome and output."""

    def __init__(self, result: CompletedProcess) -> None:
        how = (
            f"was killed by signal {result.signal}"
            if result.signal
            else f"exited with status {result.exit_status}"
        )
        super().__init__(f"remote command {result.argv[0] if result.argv else '?'} {how}")
        self.result = result


_CONTAINER_TEXT_ONLY = (
    "arguments, environment and working directory for a container must be UTF-8 text "
    "(runc passes them through JSON, which would replace other bytes)"
)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def exec_start(
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: str,
    *,
    user: str = "",
    tty: bool = False,
    container_id: str = "",
    stdin: bool = False,
    size: tuple[int, int] | None = None,
) -> wire.ExecStart:
    """The ``ExecStart`` for a command, its arguments, environment and directory byte-exact.

    ``argv``, ``env`` and ``cwd`` travel in the ``*_bytes`` fields as :func:`os.fsencode` makes
    them: a ``str`` from ``sys.argv`` or ``os.environ`` carries bytes that are not UTF-8 as
    surrogate escapes, and gets them back exactly. When all of it is UTF-8 the string fields are
    filled too, for agents that predate the bytes fields.

    Raises:
        UsageError: ``user`` or ``container_id`` is not UTF-8 text (no field can carry it), or a
            command for a container is not (runc's process spec is JSON, which cannot carry it).
    """
    for what, text in (("user", user), ("container id", container_id)):
        if not _is_utf8(text):
            raise UsageError(f"{what} {text!r} is not UTF-8 text")
    utf8 = all(_is_utf8(item) for item in (*argv, *env.keys(), *env.values(), cwd))
    if not utf8 and container_id:
        raise UsageError(_CONTAINER_TEXT_ONLY)
    return wire.ExecStart(
        argv=tuple(argv) if utf8 else (),
        env=dict(env) if utf8 else {},
        cwd=cwd if utf8 else "",
        user=user,
        tty=tty,
        size=None if size is None else wire.TerminalSize(rows=size[0], cols=size[1]),
        container_id=container_id,
        stdin=stdin,
        argv_bytes=tuple(os.fsencode(arg) for arg in argv),
        env_bytes=tuple(os.fsencode(key) + b"=" + os.fsencode(value) for key, value in env.items()),
        cwd_bytes=os.fsencode(cwd),
    )


def start_error(exc: RPCError, argv: Sequence[str]) -> KuasarError:
    """The error for an Exec the agent refused to start: 127/126 for not found/not executable."""
    name = argv[0] if argv else "?"
    if exc.code == Code.NOT_FOUND:
        return CommandNotFound(exc.message or f"{name}: command not found")
    if exc.code == Code.PERMISSION_DENIED:
        return CommandNotExecutable(exc.message or f"{name}: permission denied")
    return exc
