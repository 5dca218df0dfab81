"""The agent's debug console (vsock port 1025), compatible with Kuasar's vmm-task.

Layer contract: agent side; asyncio, ``kuasar.agent.process`` (the one spawner: the shell is a
:class:`~kuasar.agent.process.Process` on a PTY, killed and reaped by its policy), ``kuasar.config``.
``serve_console`` is a connection handler (``transport.listen`` / ``asyncio.start_unix_server``
callback):

1. wait up to ``limits.console_sniff`` (100 ms) for a first line of at most ``limits.console_header``
   bytes; the rule is :class:`kuasar.agent.console_header.HeaderSniffer`'s (sans-IO), this module
   only reads and keeps the deadline. Exactly ``KSR_MODE exec`` (``\\r`` tolerated) selects exec
   mode: no echo, ``PS1=""``, and — our improvement over vmm-task — no output processing, so bytes
   pass through unchanged; any other early bytes are replayed into the PTY;
2. run the shell (``/bin/bash``, else ``/bin/sh``) in a new session on a PTY it controls;
3. pump both ways; when either side ends or the shell exits, SIGKILL every process of the shell's
   session (job-control groups included; only ``setsid`` daemons escape), reap the shell, close
   all fds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

from kuasar._log import ContextAdapter, get_logger
from kuasar.agent.console_header import HeaderDecision, HeaderSniffer
from kuasar.agent.process import DEFAULT_PATH, Process, default_home
from kuasar.agent.pty import PtyMode
from kuasar.config import DEFAULT_LIMITS, Limits
from kuasar.errors import KuasarError

FALLBACK_SHELL = "/bin/sh"
READ_CHUNK = 64 * 1024
_connections = 0

log = get_logger("kuasar.agent.console")


def pick_shell(preferred: str) -> str:
    """``preferred`` when it is executable, else ``/bin/sh`` (vmm-task's ``task.debug_shell`` rule)."""
    if preferred and os.access(preferred, os.X_OK):
        return preferred
    return FALLBACK_SHELL


async def sniff_header(reader: asyncio.StreamReader, limits: Limits) -> HeaderDecision:
    """Drive a :class:`HeaderSniffer` for up to ``limits.console_sniff`` seconds.

    Reads never go past ``limits.console_header`` bytes; the connection's end or the deadline ends
    the sniff with whatever arrived replayed.
    """
    sniffer = HeaderSniffer(limits.console_header)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(limits.console_sniff):
            while sniffer.decision is None:
                chunk = await reader.read(sniffer.wanted)
                if not chunk:
                    break
                sniffer.feed(chunk)
    return sniffer.finish()


def shell_argv(shell: str, exec_mode: bool) -> list[str]:
    """The shell's command line. In exec mode it reads one line and then execs the wrapper, so
    bash skips its start-up files (bash-completion alone costs a few hundred milliseconds), line
    editing (readline reads a line one byte per ``read``: ~300 for a wrapper line) and history
    (it would read ``~/.bash_history``, and rewrite it on ``exec``, every session)."""
    if exec_mode and os.path.basename(shell) == "bash":
        return [shell, "--norc", "--noprofile", "--noediting", "+o", "history"]
    return [shell]


def _shell_env(exec_mode: bool, home: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH") or DEFAULT_PATH,
        "TERM": os.environ.get("TERM") or "xterm",
        "HOME": home,
        "XDG_RUNTIME_DIR": "/run",
    }
    if exec_mode:
        env["PS1"] = ""
        env["PS2"] = ""
    return env


async def _start_shell(shell: str, exec_mode: bool, home: str, limits: Limits) -> Process:
    """The shell, a session leader on a new PTY: transparent and silent in exec mode."""
    mode = PtyMode(echo=not exec_mode, opost=not exec_mode, raw_input=exec_mode)
    argv = shell_argv(pick_shell(shell), exec_mode)
    env = _shell_env(exec_mode, home)
    return await Process.start(argv, tty=True, mode=mode, env=env, cwd="/", limits=limits)


async def _client_to_pty(reader: asyncio.StreamReader, process: Process) -> None:
    while data := await reader.read(READ_CHUNK):
        await process.write_stdin(data)


async def serve_console(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    shell: str = "/bin/bash",
    home: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> None:
    """Serve one debug-console connection until either side ends.

    The session ends when the client closes or resets, when the PTY reports EIO (no slave left
    open), or when the shell exits (a background job still holding the PTY does not keep it open).
    Then every process of the shell's session is SIGKILLed, the shell is reaped and all fds are
    closed. Errors are logged, never raised; cancellation (agent shutdown) cleans up the same way.

    Args:
        reader: the connection's input.
        writer: the connection's output; closed on return.
        shell: the preferred shell (``task.debug_shell``); ``/bin/sh`` when it is not executable.
        home: the shell's HOME (``None``: the agent's own, else ``/root``); a local sandbox gives
            a directory of its own, so the host's ``~/.bashrc`` is not read.
        limits: ``console_sniff``, ``console_header`` and ``shutdown_grace`` are used here, and
            passed on to the shell's :class:`~kuasar.agent.process.Process`.
    """
    global _connections  # noqa: PLW0603 - a log context counter
    _connections += 1
    clog = log.child(console=_connections)
    process: Process | None = None
    try:
        exec_mode, replay = await sniff_header(reader, limits)
        process = await _start_shell(shell, exec_mode, home or default_home(), limits)
        clog.info("shell %d started (%s mode)", process.pid, "exec" if exec_mode else "interactive")
        if replay:
            await process.write_stdin(replay)
        await _pump(reader, writer, process, limits=limits, clog=clog)
    except (OSError, ConnectionError, KuasarError) as exc:
        clog.warning("console connection ended: %s", exc)
    finally:
        try:
            if process is not None:
                killed = process.kill()
                await process.close()
                clog.info(
                    "shell %d reaped (%s; %d of its session killed)", process.pid, process.status, killed
                )
        finally:
            await _close_writer(writer, limits.shutdown_grace)


async def _close_writer(writer: asyncio.StreamWriter, grace: float) -> None:
    """Close the connection; one whose peer does not take the buffered bytes is aborted after ``grace``."""
    writer.close()
    try:
        async with asyncio.timeout(grace):
            await writer.wait_closed()
    except OSError:  # TimeoutError and ConnectionError included
        writer.transport.abort()


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a relay task's outcome as seen (it is logged, when it matters, by ``_pump``)."""
    if not task.cancelled():
        task.exception()


async def _pump(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    process: Process,
    *,
    limits: Limits,
    clog: ContextAdapter,
) -> None:
    """Relay both ways until the client or the PTY ends, or the shell exits."""

    async def to_client(_stream: int, data: bytes) -> None:
        writer.write(data)
        await writer.drain()

    output = asyncio.ensure_future(process.pump_output(to_client, chunk=READ_CHUNK))
    inputs = asyncio.ensure_future(_client_to_pty(reader, process))
    shell_exit = asyncio.ensure_future(process.wait())
    tasks: tuple[asyncio.Future[Any], ...] = (output, inputs, shell_exit)
    for task in tasks:
        task.add_done_callback(_retrieve)
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if output not in done and shell_exit in done:
            # The shell is gone but something of its session may still hold the PTY: end it, then
            # let the output pump deliver what the shell wrote until EIO (bounded).
            clog.debug("shell %d exited (%s); ending its session", process.pid, process.status)
            process.kill()
            await asyncio.wait((output,), timeout=limits.shutdown_grace)
        for finished in done:
            if finished is not shell_exit and not finished.cancelled() and finished.exception() is not None:
                clog.warning("console relay failed: %s", finished.exception())
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)  # raises only our own cancellation, never a child's outcome


class ConsoleSessions:
    """The agent's live console connections, so shutdown can end them all.

    ``handle`` is the connection handler to listen with: it starts the session in a task of its own
    and returns (asyncio 3.11's stream server logs a cancelled callback task as an error, and a
    session's cancellation must propagate). ``close`` cancels every session (each kills its
    shell's session and reaps it) and waits for them within a bound. A session task ends
    cancelled when cancelled; one that fails unexpectedly is logged here.

    Args:
        shell: passed to ``serve_console``.
        home: passed to ``serve_console``.
        limits: passed to ``serve_console``; ``shutdown_grace`` bounds ``close``.
    """

    def __init__(
        self, *, shell: str = "/bin/bash", home: str | None = None, limits: Limits = DEFAULT_LIMITS
    ) -> None:
        self.shell = shell
        self.home = home
        self.limits = limits
        self._sessions: set[asyncio.Task[None]] = set()

    @property
    def active(self) -> int:
        """How many sessions are open."""
        return len(self._sessions)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Start serving one connection (see ``serve_console``) in a session task; returns at once."""
        session = asyncio.ensure_future(
            serve_console(reader, writer, shell=self.shell, home=self.home, limits=self.limits)
        )
        self._sessions.add(session)
        session.add_done_callback(self._ended)

    def _ended(self, session: asyncio.Task[None]) -> None:
        self._sessions.discard(session)
        if not session.cancelled() and (exc := session.exception()) is not None:
            log.error("console session failed", exc_info=exc)

    async def close(self) -> None:
        """End every open session and wait for their clean-up (bounded)."""
        sessions = set(self._sessions)
        for session in sessions:
            session.cancel()
        if sessions:
            _, pending = await asyncio.wait(sessions, timeout=self.limits.shutdown_grace * 2)
            if pending:
                log.warning("%d console session(s) did not end in time", len(pending))
