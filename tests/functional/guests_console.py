"""Debug consoles of the guests we cannot run here: a Kuasar vmm-task's and a Kata agent's.

Written from the public source, independent of ``kuasar.agent.console``:

Kuasar vmm-task (kuasar-io/kuasar ``vmm/task/src/debug.rs``, HEAD ``6a74f374f3``), port 1025:

- connections are taken one at a time up to the shell's spawn (``listen_debug_console`` awaits
  ``debug_console`` in its accept loop); the relays then run on their own;
- the first bytes are read in chunks of at most 128 bytes for at most 100 ms in all
  (``MODE_HEADER_TIMEOUT``), stopping at the first ``\\n``, at EOF or once 1024 bytes are buffered;
  if the first line, one trailing ``\\r`` stripped, is exactly ``KSR_MODE exec``, the session is in
  exec mode and that line is dropped; every other buffered byte is replayed into the pty;
- ``openpty`` with default termios; in exec mode ECHO is cleared on the slave and the shell gets
  ``PS1=""``; the shell (``task.debug_shell``, default ``/bin/bash``) runs with no arguments on the
  slave after ``setsid()``, *without* ``TIOCSCTTY``: it has no controlling terminal (so bash says
  "no job control in this shell");
- the two copies run under ``select!``: when either ends (host EOF, or the shell's side closing) the
  shell is SIGKILLed and reaped, and the connection is dropped.

Kata agent (kata-containers ``src/agent/src/console.rs``, HEAD ``7c6ba40c54``), on
``agent.debug_console_vport`` (1026 in Kata's docs):

- every connection is served at once (``tokio::spawn``); no header is read: the shell sees every byte;
- shell: the first that exists of ``/run/kata-extensions/devkit/bin/devkit-sh``, ``/bin/bash``,
  ``/bin/sh``; ``openpty`` with default termios (echo ON, as a plain console has); the child calls
  ``setsid()``, puts the slave on fds 0-2 and takes it as controlling terminal (``TIOCSCTTY``);
- host EOF: the shell is SIGKILLed; the shell's side closing: the agent just reaps it; either way
  the connection is dropped.

Stand-in liberties: Kata execs the shell with an empty argv, ours gets ``[shell]``; both guests'
environment (kernel ``HOME=/ TERM=linux`` plus the PATH the agents set) is given explicitly.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import os
import signal
import sys
import termios
from collections.abc import Callable, Mapping, Sequence

#: Writes one event record to the stand-in's journal.
Journal = Callable[[dict[str, object]], None]

GUEST_PATH = "/bin:/sbin/:/usr/bin/:/usr/sbin/"  # vmm-task main.rs and kata-agent main.rs
VMM_TASK_ENV = {"HOME": "/", "TERM": "linux", "PATH": GUEST_PATH, "XDG_RUNTIME_DIR": "/run"}
KATA_ENV = {"HOME": "/", "TERM": "linux", "PATH": GUEST_PATH}
KATA_SHELLS = ("/run/kata-extensions/devkit/bin/devkit-sh", "/bin/bash", "/bin/sh")
EXEC_MODE_HEADER = b"KSR_MODE exec"
MODE_HEADER_TIMEOUT = 0.1
MODE_HEADER_LIMIT = 1024
_SNIFF_CHUNK = 128
_CHUNK = 64 * 1024
_RECORD_LIMIT = 64 * 1024

# Run in the child: take fd 0 (the pty slave) as controlling terminal, then become the shell.
_CTTY_TRAMPOLINE = (
    "import fcntl,os,sys,termios;fcntl.ioctl(0,termios.TIOCSCTTY,0);os.execv(sys.argv[1],sys.argv[1:])"
)


async def _wait_fd(fd: int, *, writable: bool) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    (loop.add_writer if writable else loop.add_reader)(fd, wake)
    try:
        await ready
    finally:
        (loop.remove_writer if writable else loop.remove_reader)(fd)


def kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL ``proc`` unless it has been reaped.

    Not ``proc.send_signal``: that polls (reaps) a zombie behind the child watcher's back, which then
    reports the exit status as 255.
    """
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)


class Children:
    """Every process a stand-in started, so that closing it leaves none behind.

    Each was started as the leader of its own process group (a console shell: of its session);
    ``kill_all`` SIGKILLs those groups too, so what a command or shell left running goes as well.
    """

    def __init__(self) -> None:
        self._procs: set[asyncio.subprocess.Process] = set()
        self._groups: set[int] = set()

    def add(self, proc: asyncio.subprocess.Process) -> None:
        self._procs.add(proc)
        self._groups.add(proc.pid)

    def discard(self, proc: asyncio.subprocess.Process) -> None:
        self._procs.discard(proc)

    async def kill_all(self) -> None:
        for group in self._groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        self._groups.clear()
        while self._procs:
            procs = list(self._procs)
            for proc in procs:
                kill(proc)
            await asyncio.gather(*(proc.wait() for proc in procs), return_exceptions=True)
            self._procs.difference_update(procs)


class PtyShell:
    """A shell on a fresh pty; the master side is read and written from asyncio."""

    def __init__(self, master: int, process: asyncio.subprocess.Process, children: Children) -> None:
        self._master = master
        self.process = process
        self._children = children

    @classmethod
    async def spawn(
        cls,
        argv: Sequence[str],
        env: Mapping[str, str],
        children: Children,
        *,
        echo: bool,
        controlling_tty: bool,
    ) -> PtyShell:
        master, slave = os.openpty()
        try:
            if not echo:
                attrs = termios.tcgetattr(slave)
                attrs[3] &= ~termios.ECHO
                termios.tcsetattr(slave, termios.TCSANOW, attrs)
            command = list(argv)
            if controlling_tty:
                command = [sys.executable, "-I", "-S", "-c", _CTTY_TRAMPOLINE, *command]
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=dict(env),
                cwd="/",
                start_new_session=True,
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        children.add(process)
        os.set_blocking(master, False)
        return cls(master, process, children)

    async def read(self) -> bytes:
        """The next bytes the shell's side wrote; ``b""`` once it is closed (EIO)."""
        while True:
            try:
                return os.read(self._master, _CHUNK)
            except BlockingIOError:
                await _wait_fd(self._master, writable=False)
            except OSError as exc:
                if exc.errno == errno.EIO:
                    return b""
                raise

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._master, view) :]
            except BlockingIOError:
                await _wait_fd(self._master, writable=True)

    def kill(self) -> None:
        kill(self.process)

    async def finish(self, *, kill: bool) -> int:
        """Kill the shell if asked, reap it, close the master; the shell's exit status."""
        if kill:
            self.kill()
        try:
            code = await self.process.wait()
        except BaseException:
            self.kill()  # cancelled: Children.kill_all reaps it
            raise
        finally:
            os.close(self._master)
        self._children.discard(self.process)
        return code


async def _host_to_shell(reader: asyncio.StreamReader, shell: PtyShell, seen: bytearray) -> None:
    while chunk := await reader.read(_CHUNK):
        if len(seen) < _RECORD_LIMIT:
            seen += chunk[: _RECORD_LIMIT - len(seen)]
        await shell.write(chunk)


async def _shell_to_host(shell: PtyShell, writer: asyncio.StreamWriter) -> None:
    while chunk := await shell.read():
        writer.write(chunk)
        await writer.drain()


async def _relay(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, shell: PtyShell, seen: bytearray
) -> str:
    """Both copies under one ``select!``; returns which side ended first: ``"host"`` or ``"shell"``."""
    up = asyncio.ensure_future(_host_to_shell(reader, shell, seen))
    down = asyncio.ensure_future(_shell_to_host(shell, writer))
    try:
        done, _ = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (up, down):
            task.cancel()
        await asyncio.gather(up, down, return_exceptions=True)
    # The shell's side ended only if its copy saw EOF; a failed write to the host is the host's end.
    if down in done and down.exception() is None and up not in done:
        return "shell"
    return "host"


async def _drop(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()


async def _sniff(reader: asyncio.StreamReader) -> tuple[bool, bytes]:
    """vmm-task's mode-header read: (exec mode?, the bytes to replay into the pty)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + MODE_HEADER_TIMEOUT
    buf = b""
    while len(buf) < MODE_HEADER_LIMIT:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        try:
            async with asyncio.timeout(remaining):
                chunk = await reader.read(_SNIFF_CHUNK)
        except TimeoutError:
            break
        if not chunk:
            break
        buf += chunk
        end = buf.find(b"\n")
        if end >= 0:
            header = buf[:end]
            if header.endswith(b"\r"):
                header = header[:-1]
            if header == EXEC_MODE_HEADER:
                return True, buf[end + 1 :]
            break
    return False, buf


class VmmTaskConsole:
    """vmm-task's debug console; ``serve`` is a ``client_connected_cb``."""

    def __init__(
        self, journal: Journal, children: Children, *, port: int = 1025, shell: Sequence[str] = ("/bin/bash",)
    ) -> None:
        self._journal = journal
        self._children = children
        self._port = port
        self._shell = list(shell)
        self._accept = asyncio.Lock()  # one connection at a time up to the spawn, as the accept loop

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        shell: PtyShell | None = None
        exec_mode = False
        seen = bytearray()
        ended = "spawn"
        try:
            async with self._accept:
                exec_mode, replay = await _sniff(reader)
                env = dict(VMM_TASK_ENV)
                if exec_mode:
                    env["PS1"] = ""
                shell = await PtyShell.spawn(
                    self._shell, env, self._children, echo=not exec_mode, controlling_tty=False
                )
            self._journal({"event": "console-open", "port": self._port, "exec_mode": exec_mode})
            seen += replay
            if replay:
                await shell.write(replay)
            ended = await _relay(reader, writer, shell, seen)
        except (ConnectionError, OSError) as exc:
            ended = f"error: {exc}"
        finally:
            code = None
            try:
                if shell is not None:
                    code = await shell.finish(kill=True)
            finally:
                # Journal first: once the host sees the connection close, the record is there.
                self._journal(_closed(self._port, exec_mode, seen, ended, code))
                await _drop(writer)


class KataConsole:
    """The Kata agent's debug console; ``serve`` is a ``client_connected_cb``."""

    def __init__(
        self, journal: Journal, children: Children, *, port: int = 1026, shell: Sequence[str] | None = None
    ) -> None:
        self._journal = journal
        self._children = children
        self._port = port
        if shell is None:
            found = next((path for path in KATA_SHELLS if os.path.exists(path)), None)
            if found is None:
                raise RuntimeError("no shell found to launch debug console")
            shell = [found]
        self._shell = list(shell)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        shell: PtyShell | None = None
        seen = bytearray()
        ended = "spawn"
        try:
            shell = await PtyShell.spawn(
                self._shell, KATA_ENV, self._children, echo=True, controlling_tty=True
            )
            self._journal({"event": "console-open", "port": self._port, "exec_mode": False})
            ended = await _relay(reader, writer, shell, seen)
        except (ConnectionError, OSError) as exc:
            ended = f"error: {exc}"
        finally:
            code = None
            try:
                # The agent SIGKILLs the shell only when the host side ended; else it just reaps it.
                if shell is not None:
                    code = await shell.finish(kill=ended != "shell")
            finally:
                self._journal(_closed(self._port, False, seen, ended, code))
                await _drop(writer)


def _closed(port: int, exec_mode: bool, seen: bytearray, ended: str, code: int | None) -> dict[str, object]:
    return {
        "event": "console-close",
        "port": port,
        "exec_mode": exec_mode,
        "received": base64.b64encode(bytes(seen)).decode(),
        "ended": ended,
        "shell_exit": code,
    }
