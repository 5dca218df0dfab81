"""``kuasarctl exec`` over the debug console (and a stock vmm-task's ExecVMProcess): the one-shot
runners of the paths that are not our agent API.

Layer contract: ``kuasar.ctl`` only; the sans-IO console core (``kuasar.console``) with its blocking
driver (``kuasar.console_sync``, for ``--console``: no asyncio, no protobuf) or its asyncio driver
(``kuasar.console_session``, after the session's probe), and the session's ExecVMProcess.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
from typing import TYPE_CHECKING

from kuasar.errors import DeadlineExceeded, KuasarError, UsageError

if TYPE_CHECKING:
    from asyncio import StreamReader, StreamWriter

    from kuasar.console import ConsoleExec
    from kuasar.session import GuestTarget, Session


def console_core(args: argparse.Namespace, command: list[str], env: dict[str, str]) -> ConsoleExec:
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


def run_blocking(
    args: argparse.Namespace, target: GuestTarget, command: list[str], env: dict[str, str], escape: int | None
) -> int:
    """``exec --console`` on the blocking driver: one connection, no probe, no event loop."""
    import time

    from kuasar import console_sync
    from kuasar.ctl import terminal
    from kuasar.ctl.main import exit_code_for
    from kuasar.session._blocking import open_console

    core = console_core(args, command, env)
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


async def run_console_streams(
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
    core = console_core(args, command, env)
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
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
    if result.detached:
        sys.stderr.write("\r\n[detached]\r\n")
    return exit_code_for(exit_status=result.exit_status)


async def run_vm_process(
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
