"""``kuasarctl exec``: an interactive shell or one command inside a sandbox, with its exit code.

Layer contract: ``kuasar.ctl`` only. Parses flags, resolves the sandbox, then talks to the guest
through the agent API (``kuasar.guest``: exact bytes, separate stderr, resize, signals) when the
sandbox answers a quick ``grpc.Health/Check`` probe, else through the debug console
(``kuasar.transport`` + ``kuasar.console_session``), as the original tool did. Everything heavy is
imported inside ``run``; with ``--console`` nothing imports protobuf.

Modes (as the original kuasarctl and docker exec)::

    exec -it ID            interactive shell (raw terminal, Ctrl-] detaches)
    exec -it ID CMD...     interactive command on a PTY, its exit code
    exec [-t] ID CMD...    one command for scripts: its output and exit code, stdin not passed
    exec -i ID CMD...      the same with stdin piped through
    exec --tty ID CMD...   one command on a PTY without stdin (agent API)
    exec ID "a && b"       one argument with spaces is a shell command line
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from typing import TYPE_CHECKING, Any

from kuasar.config import CONSOLE_PORT, DEFAULT_LIMITS
from kuasar.ctl.commands import fanout
from kuasar.ctl.commands._common import (
    add_sandbox,
    add_socket_dir,
    check_user_spec,
    positive_seconds,
    resolve,
)
from kuasar.ctl.terminal import DEFAULT_ESCAPE
from kuasar.errors import DeadlineExceeded, KuasarError, UsageError

if TYPE_CHECKING:
    from asyncio import Event, StreamReader, StreamWriter
    from collections.abc import Awaitable, Callable, Coroutine

    from kuasar.console import ConsoleExec
    from kuasar.guest import Guest
    from kuasar.remote_process import RemoteProcess
    from kuasar.session import ExecPath, GuestTarget, Session

    Writer = Callable[[bytes], Awaitable[None]]


DESCRIPTION = """Run a command or an interactive shell inside a sandbox, with its exact exit code.

The agent API (vsock port 1024) is used when the guest serves it; otherwise the debug console
(port 1025, or -p PORT). -e and -w work on both; -u, --container and --tty need the agent API.
"""

EPILOG = """modes (as the original kuasarctl; unlike docker, -t alone does not allocate a terminal):
  kuasarctl exec -it pod-abc                 interactive shell (raw terminal, Ctrl-] detaches)
  kuasarctl exec -it pod-abc top             interactive command on a terminal, its exit code
  kuasarctl exec -t pod-abc ls -la /         one command for scripts: output and exit code, no stdin
  echo hi | kuasarctl exec -i pod-abc cat    the same with stdin passed through (EOF ends it)
  kuasarctl exec --tty pod-abc stty size     one command on a terminal, without stdin (agent API)
  kuasarctl exec pod-abc "ls -la && ps aux"  one argument with spaces is a shell command line
  kuasarctl exec pod-abc -- sh -c 'exit 3'   everything after -- is the command

exit codes:
  N      the remote command's own exit status (a death by signal N gives 128+N)
  2      bad flags or arguments
  124    --timeout expired
  125    kuasarctl itself failed (sandbox not found, ambiguous prefix, socket, handshake, protocol)
  126    the remote command is not executable
  127    the remote command was not found
  130    interrupted (Ctrl-C)
"""


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "exec",
        help="run a command or a shell inside a sandbox",
        description=DESCRIPTION,
        epilog=EPILOG,
    )
    parser.add_argument("-i", "--interactive", action="store_true", help="pass stdin to the command")
    parser.add_argument(
        "-t",
        dest="tty",
        action="store_true",
        help="with -i: an interactive terminal session; alone: a one-shot command for scripts",
    )
    parser.add_argument(
        "--tty", dest="force_tty", action="store_true", help="run on a PTY even without -i (agent API)"
    )
    path = parser.add_mutually_exclusive_group()
    path.add_argument("--console", action="store_true", help="use the debug console, not the agent API")
    path.add_argument("--agent", action="store_true", help="use the agent API; fail if there is none")
    path.add_argument(
        "--vm-process",
        action="store_true",
        help="use a stock Kuasar vmm-task's ExecVMProcess (one shot, output at the end)",
    )
    parser.add_argument(
        "-e", "--env", action="append", default=[], metavar="KEY=VAL", help="set an environment variable"
    )
    parser.add_argument("-w", "--workdir", default="", metavar="DIR", help="working directory in the guest")
    parser.add_argument("-u", "--user", default="", metavar="USER", help="name, uid or uid:gid to run as")
    parser.add_argument("--container", default="", metavar="ID", help="exec inside this container")
    parser.add_argument(
        "-p", "--port", type=int, default=None, help=f"debug console vsock port (default {CONSOLE_PORT})"
    )
    add_socket_dir(parser)
    parser.add_argument(
        "--timeout", type=positive_seconds, metavar="SECS", help="give up after SECS (exit 124)"
    )
    parser.add_argument(
        "--connect-timeout",
        type=positive_seconds,
        default=DEFAULT_LIMITS.connect_timeout,
        metavar="SECS",
        help="how long to wait for the guest to accept the connection (default 10)",
    )
    parser.add_argument(
        "--escape",
        default=DEFAULT_ESCAPE,
        metavar="KEY",
        help="detach key for -it (default ^]; 'none' disables)",
    )
    fanout.add_flags(parser)
    add_sandbox(parser)
    parser.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        metavar="COMMAND",
        help="command and arguments (default: a shell with -it)",
    )
    parser.set_defaults(func=run)


def _target(args: argparse.Namespace) -> GuestTarget:
    from kuasar.session import GuestTarget

    if "://" not in args.sandbox:
        ref = resolve(args, args.sandbox)
        return GuestTarget.for_socket(ref.socket, console_port=args.port, label=ref.id)
    return GuestTarget.for_address(args.sandbox, console_port=args.port)


def _parse_env(items: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key or "\0" in item:
            raise UsageError(f"invalid environment variable {item!r}", hints=["Use -e KEY=VALUE."])
        if sep:
            env[key] = value
        elif key in os.environ:  # docker's -e KEY: take the local value
            env[key] = os.environ[key]
    return env


def run(args: argparse.Namespace) -> int | Coroutine[Any, Any, int]:
    """Check the arguments, then run: ``--console`` on the blocking driver (no asyncio, no
    protobuf), everything else in the event loop (``kuasar.ctl.main`` runs the coroutine)."""
    from kuasar.ctl import terminal

    command: list[str] = list(args.command)
    if args.all:  # no SANDBOX operand: the first word is the command's
        command = [args.sandbox, *command]
    if command and command[0] == "--":
        command = command[1:]
    interactive_tty = args.interactive and args.tty
    if not command and not args.interactive:
        raise UsageError(
            "no command given", hints=["Use -it for an interactive shell: kuasarctl exec -it SANDBOX"]
        )
    escape = terminal.parse_escape(args.escape)
    if interactive_tty:
        terminal.require_tty(sys.stdin.fileno())
    if args.port is not None and not 0 < args.port <= 0xFFFFFFFF:
        raise UsageError(f"invalid port {args.port}")
    env = _parse_env(args.env)
    check_user_spec(args.user)
    if args.all:
        return fanout.run_all(args, command, env)
    api_only = [
        flag
        for flag, value in (("-u", args.user), ("--container", args.container), ("--tty", args.force_tty))
        if value
    ]
    target = _target(args)
    if args.console:
        return _run_console_blocking(args, target, command, env, escape)
    return _run_async(args, target, command=command, env=env, escape=escape, api_only=api_only)


async def _run_async(args: argparse.Namespace, target: GuestTarget, **options: Any) -> int:
    try:
        async with _deadline(args.timeout):
            return await _dispatch(args, target, **options)
    except TimeoutError as exc:
        if isinstance(exc, DeadlineExceeded):
            raise
        raise DeadlineExceeded(f"timed out after {args.timeout:g} s") from None


def _console_core(args: argparse.Namespace, command: list[str], env: dict[str, str]) -> ConsoleExec:
    """The console command: an interactive one with the client's terminal, or a one-shot one."""
    from kuasar.console import DEFAULT_SHELL, ConsoleExec, StdinMode, TerminalSetup, command_argv
    from kuasar.ctl import terminal

    if args.interactive and args.tty:
        rows, cols = terminal.window_size(sys.stdin.fileno())
        return ConsoleExec(
            command_argv(command) if command else DEFAULT_SHELL,
            stdin=StdinMode.TERMINAL,
            env=env,
            cwd=args.workdir,
            terminal=TerminalSetup(rows, cols, os.environ.get("TERM", "")),
        )
    stdin = StdinMode.DATA if args.interactive else StdinMode.NONE
    return ConsoleExec(command_argv(command), stdin=stdin, env=env, cwd=args.workdir)


def _run_console_blocking(
    args: argparse.Namespace, target: GuestTarget, command: list[str], env: dict[str, str], escape: int | None
) -> int:
    """``exec --console`` on the blocking driver: one connection, no probe, no event loop."""
    import time

    from kuasar import console_sync
    from kuasar.ctl import terminal
    from kuasar.ctl.main import exit_code_for
    from kuasar.session._blocking import open_console

    core = _console_core(args, command, env)
    deadline = time.monotonic() + args.timeout if args.timeout else None
    budget = args.connect_timeout if deadline is None else min(args.connect_timeout, args.timeout)
    try:
        sock = open_console(target, connect_timeout=budget)
    except KuasarError:
        if deadline is not None and time.monotonic() >= deadline:
            raise DeadlineExceeded(f"timed out after {args.timeout:g} s") from None
        raise
    stdin_fd, stdout_fd = sys.stdin.fileno(), sys.stdout.fileno()
    try:
        run = functools.partial(console_sync.run, sock, core, output_fd=stdout_fd, deadline=deadline)
        if args.interactive and args.tty:
            with terminal.raw_terminal(stdin_fd) as screen:
                result = run(input_fd=stdin_fd, escape=escape)
                if result.detached:
                    screen.reset()
        else:
            result = run(input_fd=stdin_fd if args.interactive else None)
    except DeadlineExceeded:
        raise DeadlineExceeded(f"timed out after {args.timeout:g} s") from None
    finally:
        sock.close()
    if result.detached:
        sys.stderr.write("\r\n[detached]\r\n")
    return exit_code_for(exit_status=result.exit_status)


async def _dispatch(
    args: argparse.Namespace,
    target: GuestTarget,
    *,
    command: list[str],
    env: dict[str, str],
    escape: int | None,
    api_only: list[str],
) -> int:
    """Open the guest session and run the command by the path the guest has (or the one forced)."""
    from kuasar.session import ExecPath, Session

    forced = _forced_path(args)
    if forced is None and args.port is not None and not api_only:
        forced = ExecPath.CONSOLE  # -p names a debug console port: it means the console
    async with await Session.open(target) as session:
        if forced is ExecPath.API or api_only:
            guest = session.require_api("--agent" if forced is ExecPath.API else ", ".join(api_only))
            return await _run_api(guest, args, command, env, escape)
        paths = (forced,) if forced is not None else session.paths()
        for path in paths:
            if path is ExecPath.API and session.guest is not None:
                return await _run_api(session.guest, args, command, env, escape)
            if path is ExecPath.CONSOLE:
                try:
                    streams = await session.open_console(connect_timeout=args.connect_timeout)
                except KuasarError:
                    if ExecPath.VM_PROCESS not in paths:
                        raise
                    if args.interactive and args.tty:
                        raise session.interactive_needs_console() from None
                    continue
                return await _run_console(args, streams, command, env, escape)
            if path is ExecPath.VM_PROCESS:
                return await _run_vm_process(session, args, command, env)
    raise AssertionError("unreachable: every guest has the console path")  # pragma: no cover


def _forced_path(args: argparse.Namespace) -> ExecPath | None:
    from kuasar.session import ExecPath

    if args.agent:
        return ExecPath.API
    if args.console:
        return ExecPath.CONSOLE
    if args.vm_process:
        return ExecPath.VM_PROCESS
    return None


async def _run_vm_process(
    session: Session, args: argparse.Namespace, command: list[str], env: dict[str, str]
) -> int:
    """One command through a stock vmm-task's ExecVMProcess: stdin sent whole, output at the end."""
    from kuasar.console import command_argv
    from kuasar.ctl.main import exit_code_for

    if args.interactive and args.tty:
        raise session.interactive_needs_console()
    if os.isatty(sys.stderr.fileno()):
        sys.stderr.write(
            "kuasarctl: no debug console; running through ExecVMProcess"
            " (output arrives when the command ends)\n"
        )
    stdin = _read_all_stdin(session.limits.max_message // 2) if args.interactive else b""
    result = await session.exec_vm_process(
        command_argv(command), input=stdin, timeout=args.timeout, env=env, cwd=args.workdir
    )
    _write_all(sys.stdout.fileno(), result.stdout)
    _write_all(sys.stderr.fileno(), result.stderr)
    return exit_code_for(exit_status=result.exit_status)


def _read_all_stdin(limit: int) -> bytes:
    data = bytearray()
    while chunk := os.read(sys.stdin.fileno(), 65536):
        data += chunk
        if len(data) > limit:
            raise UsageError(
                f"stdin is larger than {limit} bytes, more than ExecVMProcess can carry in one message",
                hints=["Enable the debug console (task.debug) to stream stdin."],
            )
    return bytes(data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def _run_console(
    args: argparse.Namespace,
    streams: tuple[StreamReader, StreamWriter],
    command: list[str],
    env: dict[str, str],
    escape: int | None,
) -> int:
    from kuasar import console_session
    from kuasar.ctl import stdio, terminal
    from kuasar.ctl.main import exit_code_for

    interactive_tty = args.interactive and args.tty
    stdin_fd, stdout_fd = sys.stdin.fileno(), sys.stdout.fileno()
    core = _console_core(args, command, env)
    out = stdio.FdWriter(stdout_fd)
    source = stdio.read_chunks(stdin_fd) if args.interactive else None
    reader, writer = streams
    try:
        if interactive_tty:
            with terminal.raw_terminal(stdin_fd) as screen:
                result = await console_session.run(
                    reader, writer, core, out.write, source=source, escape=escape
                )
                if result.detached:
                    screen.reset()
        else:
            result = await console_session.run(reader, writer, core, out.write, source=source)
    finally:
        writer.close()
        with _suppress_close_errors():
            await writer.wait_closed()
    if result.detached:
        sys.stderr.write("\r\n[detached]\r\n")
    return exit_code_for(exit_status=result.exit_status)


async def _run_api(
    guest: Guest, args: argparse.Namespace, command: list[str], env: dict[str, str], escape: int | None
) -> int:
    import asyncio
    import contextlib
    import signal

    from kuasar.console import DEFAULT_SHELL, command_argv
    from kuasar.ctl import stdio, terminal
    from kuasar.ctl.main import exit_code_for
    from kuasar.errors import Interrupted

    stdin_fd, stdout_fd = sys.stdin.fileno(), sys.stdout.fileno()
    pty = (args.interactive and args.tty) or args.force_tty
    raw = pty and args.interactive and os.isatty(stdin_fd)
    size_fd = stdin_fd if raw else stdout_fd
    if pty:
        env.setdefault("TERM", os.environ.get("TERM") or "xterm")
    argv = command_argv(command) if command else DEFAULT_SHELL
    out, err = stdio.FdWriter(stdout_fd), stdio.FdWriter(sys.stderr.fileno())
    loop = asyncio.get_running_loop()
    detached, interrupted = asyncio.Event(), asyncio.Event()
    background: set[asyncio.Future[None]] = set()
    process = guest.exec(
        argv,
        tty=pty,
        size=terminal.window_size(size_fd) if pty else None,
        stdin=args.interactive,
        env=env,
        cwd=args.workdir,
        user=args.user,
        container_id=args.container,
    )

    async def forward() -> None:
        async for received in stdio.read_chunks(stdin_fd):
            chunk = received
            if raw and escape is not None and escape in chunk:
                chunk = chunk[: chunk.index(escape)]
                detached.set()
            if chunk:
                await process.write(chunk)
            if detached.is_set():
                return
        if not raw:
            await process.close_stdin()

    def spawn(coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        background.add(task)
        task.add_done_callback(background.discard)

    def on_sigint() -> None:
        if interrupted.is_set():  # the second Ctrl-C: stop waiting
            detached.set()
            return
        interrupted.set()
        spawn(process.send_signal(signal.SIGINT))

    def on_winch() -> None:
        spawn(process.resize(*terminal.window_size(size_fd)))

    handlers: list[int] = []
    with contextlib.ExitStack() as stack:
        screen = stack.enter_context(terminal.raw_terminal(stdin_fd)) if raw else None
        async with process:
            if not raw:
                loop.add_signal_handler(signal.SIGINT, on_sigint)
                handlers.append(signal.SIGINT)
            if pty and os.isatty(size_fd):
                loop.add_signal_handler(signal.SIGWINCH, on_winch)
                handlers.append(signal.SIGWINCH)
            try:
                if args.interactive:
                    spawn(forward())
                await _pump(process, out.write, err.write, detached=detached, interrupted=interrupted)
            finally:
                for signum in handlers:
                    loop.remove_signal_handler(signum)
                for task in list(background):
                    task.cancel()
                if background:
                    await asyncio.wait(background)
            finished = process.exited
        if screen is not None and detached.is_set() and not finished:
            screen.reset()
    if detached.is_set() and not interrupted.is_set():
        sys.stderr.write("\r\n[detached]\r\n")
        return 0
    if interrupted.is_set():
        return exit_code_for(error=Interrupted("interrupted"))
    if not finished:  # pragma: no cover - the pump only returns early on detach or interrupt
        return exit_code_for(error=Interrupted("interrupted"))
    result = process.result()
    return exit_code_for(exit_status=result.exit_status, signal_number=result.signal)


async def _pump(
    process: RemoteProcess, write_out: Writer, write_err: Writer, *, detached: Event, interrupted: Event
) -> None:
    """Copy output until the process exits, the user detaches, or a Ctrl-C's grace runs out."""
    import asyncio

    from kuasar.remote_process import STDERR

    stop: asyncio.Future[Any] = asyncio.ensure_future(detached.wait())
    interrupt: asyncio.Future[Any] | None = asyncio.ensure_future(interrupted.wait())
    read: asyncio.Future[Any] | None = None
    try:
        while True:
            if read is None:
                read = asyncio.ensure_future(process.read())
            waiting = {read, stop} if interrupt is None else {read, stop, interrupt}
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if interrupt is not None and interrupt in done:  # keep copying, for a while
                interrupt = None
                stop.cancel()
                stop = asyncio.ensure_future(_either(detached, DEFAULT_LIMITS.interrupt_grace))
                continue
            if stop in done:
                return
            chunk = read.result()
            read = None
            if chunk is None:
                return
            await (write_err if chunk[0] == STDERR else write_out)(chunk[1])
    finally:
        pending = [task for task in (read, stop, interrupt) if task is not None]
        for task in pending:
            task.cancel()
        await asyncio.wait(pending)


async def _either(event: Event, seconds: float) -> None:
    import asyncio
    import contextlib

    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


def _deadline(seconds: float | None) -> Any:
    import asyncio
    import contextlib

    return asyncio.timeout(seconds) if seconds else contextlib.nullcontext()


def _suppress_close_errors() -> Any:
    import contextlib

    return contextlib.suppress(ConnectionError, OSError)
