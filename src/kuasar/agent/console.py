"""The agent's debug console (vsock port 1025), compatible with Kuasar's vmm-task.

Layer contract: agent side; asyncio, ``kuasar.agent.pty``, ``kuasar.config``. ``serve_console`` is a
connection handler (``transport.listen`` / ``asyncio.start_unix_server`` callback):

1. wait up to ``limits.console_sniff`` (100 ms) for a first line of at most ``limits.console_header``
   bytes; exactly ``KSR_MODE exec`` (``\\r`` tolerated) selects exec mode: no echo, ``PS1=""``, and
   — our improvement over vmm-task — no output processing, so bytes pass through unchanged;
   any other early bytes are replayed into the PTY;
2. run the shell (``/bin/bash``, else ``/bin/sh``) in a new session on a PTY it controls;
3. pump both ways; when either side ends, SIGKILL the shell's process group, reap it, close all fds.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal

from kuasar._fdio import wait_fd, write_all
from kuasar._log import get_logger
from kuasar.agent.pty import PtyMode, open_pty, spawn_on_pty
from kuasar.config import DEFAULT_LIMITS, Limits

EXEC_MODE_LINE = b"KSR_MODE exec"
FALLBACK_SHELL = "/bin/sh"
READ_CHUNK = 64 * 1024
_connections = 0

log = get_logger("kuasar.agent.console")


def pick_shell(preferred: str) -> str:
    """``preferred`` when it is executable, else ``/bin/sh`` (vmm-task's ``task.debug_shell`` rule)."""
    if preferred and os.access(preferred, os.X_OK):
        return preferred
    return FALLBACK_SHELL


async def sniff_header(reader: asyncio.StreamReader, limits: Limits) -> tuple[bool, bytes]:
    """Read the optional ``KSR_MODE exec`` line. Returns ``(exec_mode, bytes_to_replay)``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.console_sniff
    buffer = bytearray()
    while b"\n" not in buffer and len(buffer) < limits.console_header:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        try:
            async with asyncio.timeout(remaining):
                chunk = await reader.read(limits.console_header - len(buffer))
        except TimeoutError:
            break
        if not chunk:
            break
        buffer += chunk
    line, newline, rest = bytes(buffer).partition(b"\n")
    if newline and line.rstrip(b"\r") == EXEC_MODE_LINE:
        return True, rest
    return False, bytes(buffer)


def shell_argv(shell: str, exec_mode: bool) -> list[str]:
    """The shell's command line. In exec mode it reads one line and then execs the wrapper, so
    bash skips its start-up files (bash-completion alone costs a few hundred milliseconds)."""
    if exec_mode and os.path.basename(shell) == "bash":
        return [shell, "--norc", "--noprofile"]
    return [shell]


def _shell_env(exec_mode: bool) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH") or "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "TERM": os.environ.get("TERM") or "xterm",
        "HOME": os.environ.get("HOME") or "/root",
        "XDG_RUNTIME_DIR": "/run",
    }
    if exec_mode:
        env["PS1"] = ""
        env["PS2"] = ""
    return env


async def _pty_to_client(master: int, writer: asyncio.StreamWriter) -> None:
    while True:
        await wait_fd(master)
        try:
            data = os.read(master, READ_CHUNK)
        except BlockingIOError:
            continue
        except OSError as exc:
            if exc.errno == errno.EIO:  # every slave fd closed: the shell is gone
                return
            raise
        if not data:
            return
        writer.write(data)
        await writer.drain()


async def _client_to_pty(reader: asyncio.StreamReader, master: int) -> None:
    while data := await reader.read(READ_CHUNK):
        await write_all(master, data)


async def serve_console(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    shell: str = "/bin/bash",
    limits: Limits = DEFAULT_LIMITS,
) -> None:
    """Serve one debug-console connection until either side ends; never raises."""
    global _connections  # noqa: PLW0603 - a log context counter
    _connections += 1
    clog = log.child(console=_connections)
    process: asyncio.subprocess.Process | None = None
    master = -1
    try:
        exec_mode, replay = await sniff_header(reader, limits)
        mode = PtyMode(echo=not exec_mode, opost=not exec_mode, raw_input=exec_mode)
        master, slave = open_pty(mode)
        try:
            process = await spawn_on_pty(
                shell_argv(pick_shell(shell), exec_mode), slave, env=_shell_env(exec_mode), cwd="/"
            )
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        clog.info("shell %d started (%s mode)", process.pid, "exec" if exec_mode else "interactive")
        if replay:
            await write_all(master, replay)
        pumps = [
            asyncio.ensure_future(_pty_to_client(master, writer)),
            asyncio.ensure_future(_client_to_pty(reader, master)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            for pump in pumps:
                with contextlib.suppress(asyncio.CancelledError, OSError, ConnectionError):
                    await pump
    except (OSError, ConnectionError) as exc:
        clog.warning("console connection ended: %s", exc)
    finally:
        if process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            clog.info("shell %d reaped (status %s)", process.pid, process.returncode)
        if master >= 0:
            os.close(master)
        writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await writer.wait_closed()
