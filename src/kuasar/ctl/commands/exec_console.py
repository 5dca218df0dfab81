"""``kuasarctl exec`` over the debug console (and a stock vmm-task's ExecVMProcess): the one-shot
runners of the paths that are not our agent API, on the blocking drivers.

Layer contract: ``kuasar.ctl`` only; the sans-IO console core (``kuasar.console``) with its blocking
driver (``kuasar.console_sync``) and the blocking session's ExecVMProcess. No asyncio, no protobuf.
"""

from __future__ import annotations

import functools
import os
import sys
import time

from kuasar.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import _socket

    from kuasar.console import ConsoleExec
    from kuasar.ctl.quickparse import Namespace
    from kuasar.session._blocking import BlockingSession


def console_core(args: Namespace, command: list[str], env: dict[str, str]) -> ConsoleExec:
    """The console command: an interactive one with the client's terminal, or a one-shot one."""
    from kuasar.commandline import DEFAULT_SHELL, command_argv
    from kuasar.console import ConsoleExec, StdinMode, TerminalSetup
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


def run_console(
    sock: _socket.socket,
    args: Namespace,
    command: list[str],
    env: dict[str, str],
    *,
    escape: int | None,
    deadline: float | None,
) -> int:
    """Run the command over a connected console socket (closed here) on the blocking driver."""
    from kuasar import console_sync
    from kuasar.ctl import terminal
    from kuasar.ctl.main import exit_code_for

    core = console_core(args, command, env)
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
    finally:
        sock.close()
    if result.detached:
        sys.stderr.write("\r\n[detached]\r\n")
    return exit_code_for(exit_status=result.exit_status)


def run_vm_process(
    session: BlockingSession,
    args: Namespace,
    command: list[str],
    env: dict[str, str],
    deadline: float | None,
) -> int:
    """One command through a stock vmm-task's ExecVMProcess: stdin sent whole, output at the end."""
    from kuasar._fdio import write_all_blocking
    from kuasar.commandline import command_argv
    from kuasar.ctl.main import exit_code_for

    if args.interactive and args.tty:
        raise session.interactive_needs_console()
    if os.isatty(sys.stderr.fileno()):
        sys.stderr.write(
            "kuasarctl: no debug console; running through ExecVMProcess"
            " (output arrives when the command ends)\n"
        )
    stdin = _read_all_stdin(session.limits.max_message // 2) if args.interactive else b""
    timeout = None if deadline is None else max(deadline - time.monotonic(), 0.001)
    result = session.exec_vm_process(
        command_argv(command), input=stdin, timeout=timeout, env=env, cwd=args.workdir
    )
    write_all_blocking(sys.stdout.fileno(), result.stdout)
    write_all_blocking(sys.stderr.fileno(), result.stderr)
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
