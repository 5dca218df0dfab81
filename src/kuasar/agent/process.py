"""The agent's one process spawner: on pipes or on a PTY, pumped, signalled, killed and reaped.

Layer contract: agent side; stdlib (os, subprocess, asyncio), ``kuasar.agent.pty`` (PTY
primitives), ``kuasar.agent.procfs``, ``kuasar.agent.users`` (who it runs as), ``kuasar._fdio``,
``kuasar.config`` (its bounds) and ``kuasar.errors`` / ``kuasar.codes`` (for the statuses a
failed start becomes). No protobuf: :mod:`kuasar.agent.services.exec` translates messages. Every
process the agent starts for someone (an ``Exec``, a ``runc exec``, a debug-console shell) is a
:class:`Process`.

Shape:
- :meth:`Process.start` forks with :class:`subprocess.Popen` (so exec errors are raised here in the
  parent: ``FileNotFoundError`` -> ``NOT_FOUND``, ``PermissionError``/``ENOEXEC`` ->
  ``PERMISSION_DENIED``) in a new session: with ``tty`` the PTY slave (in the given
  :class:`~kuasar.agent.pty.PtyMode`) becomes its controlling terminal; otherwise stdout and
  stderr are two pipes and stdin is a pipe or ``/dev/null``.
- The exit is watched through a pidfd: its status is read with ``waitid(WNOWAIT)`` (exit code,
  signal and core dump kept apart), and the zombie is reaped only in :meth:`Process.close`, after
  the session has been killed, so the group and session ids cannot have been reused in between.
  :func:`is_spawned` tells a PID-1 orphan reaper to leave these zombies alone.
- :meth:`Process.pump_output` reads at most ``CHUNK`` bytes at a time from each output fd and hands
  them to an async sink (backpressure: the next read waits for the sink); after the process exits,
  descendants still holding the output get ``Limits.output_drain`` seconds before the pumps are cut.
- One kill policy, :func:`kill_session`: SIGKILL the process group and every other process of the
  session (job-control groups of an interactive shell included; only processes that called
  ``setsid()`` themselves escape). :meth:`Process.kill` applies it; :meth:`Process.close` (always
  called, also on cancellation) applies it, reaps within a bound and closes every fd.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import signal
import subprocess
import termios
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from kuasar._fdio import read_chunks, write_all
from kuasar._log import get_logger
from kuasar.agent.procfs import processes
from kuasar.agent.pty import DEFAULT_COLS, DEFAULT_ROWS, PtyMode, open_pty, set_window_size
from kuasar.agent.users import Credentials, resolve_user
from kuasar.codes import Code
from kuasar.config import DEFAULT_LIMITS, Limits
from kuasar.errors import RPCError

#: Largest output chunk handed to the sink.
CHUNK = 64 * 1024
#: stdout and stderr, as the sink's first argument.
STDOUT, STDERR = 1, 2
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Passes of :func:`kill_session`: a process forking while we scan is caught by the next pass.
_KILL_PASSES = 8
#: PIDs of started processes not reaped yet (their exit statuses belong to their ``Process``).
_unreaped: set[int] = set()

OutputSink = Callable[[int, bytes], Awaitable[None]]

log = get_logger("kuasar.agent.process")


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """How a process ended: ``exit_code`` is valid when ``signal`` is 0."""

    exit_code: int = 0
    signal: int = 0
    core_dumped: bool = False

    @classmethod
    def from_wait_status(cls, status: int) -> ExitStatus:
        """From a ``waitpid`` status word."""
        if os.WIFSIGNALED(status):
            return cls(0, os.WTERMSIG(status), os.WCOREDUMP(status))
        return cls(os.WEXITSTATUS(status))


def default_home() -> str:
    """The agent's own HOME, else ``/root``: the HOME of what it runs without a user by default."""
    return os.environ.get("HOME") or "/root"


def build_env(
    extra: Mapping[str, str], *, tty: bool, credentials: Credentials | None, home: str | None = None
) -> dict[str, str]:
    """The default environment (PATH, HOME, and TERM on a PTY), then ``extra`` on top.

    HOME is the user's home directory with ``credentials``, else ``home`` (``None``:
    :func:`default_home`).
    """
    env = {"PATH": os.environ.get("PATH") or DEFAULT_PATH}
    if credentials is not None:
        env.update(HOME=credentials.home, USER=credentials.name, LOGNAME=credentials.name)
    else:
        env["HOME"] = home or default_home()
    if tty:
        env["TERM"] = "xterm"
    env.update(extra)
    return env


def _take_controlling_terminal() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def shown(text: str) -> str:
    """``text`` fit for a status message: bytes that were not UTF-8 (surrogate escapes from
    :func:`os.fsdecode`) become U+FFFD, so the message can always be encoded."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _start_error(exc: OSError, argv: Sequence[str], cwd: str) -> RPCError:
    program = shown(argv[0])
    if exc.filename == cwd and exc.filename != argv[0]:
        return RPCError(Code.INVALID_ARGUMENT, f"cannot change to directory {cwd!r}: {exc.strerror}")
    if isinstance(exc, FileNotFoundError):
        return RPCError(Code.NOT_FOUND, f"{program}: command not found")
    if isinstance(exc, PermissionError) or exc.errno in (errno.ENOEXEC, errno.EISDIR):
        return RPCError(Code.PERMISSION_DENIED, f"{program}: {exc.strerror or 'permission denied'}")
    return RPCError(Code.FAILED_PRECONDITION, f"{program}: cannot start: {exc.strerror or exc}")


def session_members(sid: int) -> set[int]:
    """Live (non-zombie) processes whose session ID is ``sid``."""
    return {proc.pid for proc in processes() if proc.session == sid and proc.state != "Z"}


def kill_session(sid: int) -> int:
    """SIGKILL the process group ``sid`` and every other process of session ``sid``.

    Safe until the session leader is reaped: Linux does not reuse a PID while a process, a process
    group or a session still carries it. Returns how many processes were signalled by PID.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(sid, signal.SIGKILL)
    killed: set[int] = set()
    for _ in range(_KILL_PASSES):
        fresh = session_members(sid) - killed
        if not fresh:
            break
        for pid in fresh:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        killed |= fresh
    return len(killed)


def is_spawned(pid: int) -> bool:
    """True for a :class:`Process` not reaped yet: its :meth:`Process.close` will reap it."""
    return pid in _unreaped


async def kill_subprocess(process: asyncio.subprocess.Process, grace: float) -> None:
    """SIGKILL a helper command (``runc``, ``ip``: an asyncio subprocess) unless it has exited, and
    wait at most ``grace`` seconds for it to be reaped."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    try:
        async with asyncio.timeout(grace):
            await process.wait()
    except TimeoutError:
        log.warning("helper process %d did not exit %g s after SIGKILL", process.pid, grace)


@dataclass(frozen=True, slots=True)
class _Stdio:
    """The child's three fds, the parent's ends (by name) and every fd to close after the fork."""

    child: tuple[int, int, int]
    parent: dict[str, int]
    child_ends: list[int]


def _open_stdio(*, tty: bool, stdin: bool, mode: PtyMode, rows: int, cols: int) -> _Stdio:
    """A PTY pair (``tty``) or pipes; on failure every fd opened so far is closed."""
    parent: dict[str, int] = {}
    child_ends: list[int] = []
    try:
        if tty:
            parent["master"], slave = open_pty(mode, rows or DEFAULT_ROWS, cols or DEFAULT_COLS)
            child_ends.append(slave)
            return _Stdio((slave, slave, slave), parent, child_ends)
        parent["stdout"], out_w = os.pipe()
        child_ends.append(out_w)
        parent["stderr"], err_w = os.pipe()
        child_ends.append(err_w)
        if stdin:
            in_r, parent["stdin"] = os.pipe()
        else:
            in_r = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        child_ends.append(in_r)
        return _Stdio((in_r, out_w, err_w), parent, child_ends)
    except BaseException:
        for fd in (*parent.values(), *child_ends):
            os.close(fd)
        raise


def _popen(
    argv: Sequence[str],
    stdio: tuple[int, int, int],
    env: dict[str, str],
    cwd: str,
    credentials: Credentials | None,
    *,
    ctty: bool,
) -> subprocess.Popen[bytes]:
    """Fork and exec in a new session (with ``ctty``, stdin becomes its controlling terminal)."""
    try:
        # Popen, not asyncio's: its child watcher would race our pidfd for the status.
        return subprocess.Popen(
            list(argv),
            stdin=stdio[0],
            stdout=stdio[1],
            stderr=stdio[2],
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_take_controlling_terminal if ctty else None,  # noqa: PLW1509 - one ioctl
            user=credentials.uid if credentials else None,
            group=credentials.gid if credentials else None,
            extra_groups=list(credentials.groups) if credentials else None,
        )
    except OSError as exc:
        raise _start_error(exc, argv, cwd) from None


class Process:
    """A started process; use :meth:`start`, and always :meth:`close` (or ``async with``)."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        *,
        tty: bool,
        fds: dict[str, int],
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self._popen = popen
        self._limits = limits
        self.pid = popen.pid
        self.tty = tty
        self._fds = fds  # "stdin", "stdout", "stderr", "master": parent ends, non-blocking
        self._pidfd = os.pidfd_open(self.pid)
        self._status: ExitStatus | None = None
        self._exited = asyncio.Event()
        self._reaped = False
        _unreaped.add(self.pid)
        asyncio.get_running_loop().add_reader(self._pidfd, self._on_exit)

    @classmethod
    async def start(
        cls,
        argv: Sequence[str],
        *,
        tty: bool = False,
        rows: int = 0,
        cols: int = 0,
        stdin: bool = False,
        env: Mapping[str, str] | None = None,
        cwd: str = "",
        user: str = "",
        mode: PtyMode | None = None,
        home: str | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> Process:
        """Start ``argv`` in a new session.

        Args:
            argv: program and arguments (the program is looked up on the environment's PATH).
            tty: run on a new PTY (stderr is merged into stdout) that becomes its controlling tty.
            rows: initial PTY rows (0: 24).
            cols: initial PTY columns (0: 80).
            stdin: give the process a stdin pipe (:meth:`write_stdin`); else ``/dev/null``
                (a PTY process always reads the PTY).
            env: added to the default environment (PATH, HOME, TERM on a PTY).
            cwd: working directory (empty: ``/``).
            user: ``name``, ``uid`` or ``uid:gid`` (switching needs root).
            mode: the PTY's echo, output-processing and input flags (with ``tty``; default: a
                terminal's usual ones).
            home: HOME when no ``user`` is given (``None``: the agent's own, else ``/root``).
            limits: ``output_drain`` bounds :meth:`pump_output` after the exit, ``kill_timeout``
                bounds :meth:`close`.

        Raises:
            RPCError: ``NOT_FOUND`` (no such program), ``PERMISSION_DENIED`` (not executable, or
                a user switch without root), ``INVALID_ARGUMENT`` (empty argv, bad user or cwd).
        """
        if not argv or not argv[0]:
            raise RPCError(Code.INVALID_ARGUMENT, "empty command")
        credentials = resolve_user(user)
        workdir = cwd or "/"
        if not os.path.isdir(workdir):  # noqa: ASYNC240 - one stat, before the fork
            raise RPCError(Code.INVALID_ARGUMENT, f"no such directory: {workdir!r}")
        environment = build_env(env or {}, tty=tty, credentials=credentials, home=home)
        stdio = _open_stdio(tty=tty, stdin=stdin, mode=mode or PtyMode(), rows=rows, cols=cols)
        try:
            popen = _popen(argv, stdio.child, environment, workdir, credentials, ctty=tty)
        except BaseException:
            for fd in stdio.parent.values():
                os.close(fd)
            raise
        finally:
            for fd in stdio.child_ends:
                os.close(fd)
        for fd in stdio.parent.values():
            os.set_blocking(fd, False)
        return cls(popen, tty=tty, fds=stdio.parent, limits=limits)

    async def __aenter__(self) -> Process:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- input -----------------------------------------------------------------------------------

    async def write_stdin(self, data: bytes) -> None:
        """Write all of ``data`` to the process's stdin (the PTY with ``tty``); dropped once closed."""
        fd = self._fds.get("master" if self.tty else "stdin")
        if fd is None or not data:
            return
        try:
            await write_all(fd, data)
        except (BrokenPipeError, OSError) as exc:
            if isinstance(exc, BrokenPipeError) or exc.errno in (errno.EIO, errno.EPIPE):
                self._close_fd("stdin")  # the reader is gone; later input is dropped
                return
            raise

    async def close_stdin(self) -> None:
        """End of input: close the stdin pipe; on a PTY, type the EOF character (``^D``)."""
        if self.tty:
            master = self._fds.get("master")
            if master is not None:
                with contextlib.suppress(OSError):
                    eof = termios.tcgetattr(master)[6][termios.VEOF]
                    await write_all(master, eof if isinstance(eof, bytes) else bytes([eof]))
            return
        self._close_fd("stdin")

    def resize(self, rows: int, cols: int) -> None:
        """Set the PTY's window size (the foreground group gets SIGWINCH); ignored without a PTY."""
        master = self._fds.get("master")
        if master is not None and rows > 0 and cols > 0:
            set_window_size(master, min(rows, 0xFFFF), min(cols, 0xFFFF))

    def send_signal(self, signum: int) -> None:
        """Deliver ``signum`` to the process (to its process group on a PTY, as a terminal would).

        Raises:
            RPCError: ``INVALID_ARGUMENT`` for a signal number that does not exist.
        """
        if self._reaped:
            return
        try:
            if self.tty:
                os.killpg(self.pid, signum)
            else:
                os.kill(self.pid, signum)
        except ProcessLookupError:
            pass
        except (ValueError, OSError) as exc:
            raise RPCError(Code.INVALID_ARGUMENT, f"cannot send signal {signum}: {exc}") from None

    # -- output and exit -------------------------------------------------------------------------

    async def pump_output(self, sink: OutputSink, *, chunk: int = CHUNK) -> None:
        """Hand every output chunk (at most ``chunk`` bytes) to ``sink(STDOUT|STDERR, data)`` until
        EOF on all outputs, or until ``Limits.output_drain`` after the exit when descendants keep them
        open."""
        names = ("master",) if self.tty else ("stdout", "stderr")
        size = max(1, min(chunk, CHUNK))
        pumps = [asyncio.ensure_future(self._pump(name, sink, size)) for name in names if name in self._fds]
        if not pumps:
            return
        try:
            waiting = asyncio.ensure_future(asyncio.wait(pumps))
            exited = asyncio.ensure_future(self._exited.wait())
            try:
                await asyncio.wait({waiting, exited}, return_when=asyncio.FIRST_COMPLETED)
                if not waiting.done():
                    await asyncio.wait({waiting}, timeout=self._limits.output_drain)
            finally:
                waiting.cancel()
                exited.cancel()
            for pump in pumps:
                if pump.done() and not pump.cancelled() and pump.exception() is not None:
                    raise pump.exception()  # type: ignore[misc]
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

    async def _pump(self, name: str, sink: OutputSink, size: int) -> None:
        stream = STDERR if name == "stderr" else STDOUT
        async for data in read_chunks(self._fds[name], size):  # EIO (PTY, every slave closed) ends it
            await sink(stream, data)

    def _on_exit(self) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._pidfd)
        try:
            info = os.waitid(os.P_PIDFD, self._pidfd, os.WEXITED | os.WNOWAIT | os.WNOHANG)
        except ChildProcessError:
            info = None
        if info is None:  # reaped by someone else (a PID-1 reaper): the status is lost
            self._status = ExitStatus(255)
        elif info.si_code == os.CLD_EXITED:
            self._status = ExitStatus(info.si_status)
        else:
            self._status = ExitStatus(0, info.si_status, info.si_code == os.CLD_DUMPED)
        self._exited.set()

    @property
    def status(self) -> ExitStatus | None:
        """The exit status once the process has exited, else ``None``."""
        return self._status

    async def wait(self) -> ExitStatus:
        """Wait for the process to exit and return how it ended (it is reaped by :meth:`close`)."""
        await self._exited.wait()
        assert self._status is not None
        return self._status

    def kill(self) -> int:
        """SIGKILL the process's whole session (:func:`kill_session`); :meth:`close` reaps it.

        Returns:
            How many processes were signalled by PID (0 once reaped).
        """
        return 0 if self._reaped else kill_session(self.pid)

    async def close(self) -> None:
        """Kill the whole session, reap the process (waiting at most ``Limits.kill_timeout`` for it
        to die), close every fd. Idempotent; a cancelled close still reaps and closes."""
        try:
            self.kill()
            if not self._reaped and not self._exited.is_set():
                try:
                    async with asyncio.timeout(self._limits.kill_timeout):
                        await self._exited.wait()
                except TimeoutError:
                    log.warning(
                        "process %d did not exit %g s after SIGKILL", self.pid, self._limits.kill_timeout
                    )
        finally:
            self._reap()
            for name in list(self._fds):
                self._close_fd(name)

    def _reap(self) -> None:
        if self._reaped:
            return
        self._reaped = True
        _unreaped.discard(self.pid)
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PIDFD, self._pidfd, os.WEXITED | os.WNOHANG)
        self._popen.returncode = self._returncode()
        if not self._exited.is_set():
            asyncio.get_running_loop().remove_reader(self._pidfd)
        os.close(self._pidfd)

    def _returncode(self) -> int:
        status = self._status or ExitStatus(255)
        return -status.signal if status.signal else status.exit_code

    def _close_fd(self, name: str) -> None:
        fd = self._fds.pop(name, None)
        if fd is not None:
            os.close(fd)
