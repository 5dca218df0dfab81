"""``kuasarctl exec``: an interactive shell or one command inside a sandbox, with its exit code.

Layer contract: ``kuasar.ctl`` only. Parses flags, resolves the sandbox, dials the debug console
through ``kuasar.transport`` and runs a ``kuasar.console_session``. Imports them lazily inside
``run`` so ``kuasarctl --help`` stays cheap; nothing on this path imports protobuf.

Modes (as the original kuasarctl and docker exec)::

    exec -it ID            interactive shell (raw terminal, Ctrl-] detaches)
    exec -it ID CMD...     interactive command, its exit code
    exec [-t] ID CMD...    one command for scripts: its output and exit code, stdin not passed
    exec -i ID CMD...      the same with stdin piped through
    exec ID "a && b"       one argument with spaces is a shell command line
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from kuasar.config import CONSOLE_PORT
from kuasar.ctl.commands._common import add_socket_dir, positive_seconds, resolve
from kuasar.ctl.terminal import DEFAULT_ESCAPE
from kuasar.errors import DeadlineExceeded, UsageError


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "exec",
        help="run a command or a shell inside a sandbox",
        description=__doc__.split("\n\n", 1)[0] if __doc__ else None,
    )
    parser.add_argument("-i", "--interactive", action="store_true", help="pass stdin to the command")
    parser.add_argument("-t", "--tty", action="store_true", help="with -i: interactive terminal session")
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
        default=10.0,
        metavar="SECS",
        help="how long to wait for the guest to accept the connection (default 10)",
    )
    parser.add_argument(
        "--escape",
        default=DEFAULT_ESCAPE,
        metavar="KEY",
        help="detach key for -it (default ^]; 'none' disables)",
    )
    parser.add_argument("sandbox", metavar="SANDBOX", help="sandbox ID, unique prefix, or sandbox directory")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND", help="command and arguments")
    parser.set_defaults(func=run)


async def run(args: argparse.Namespace) -> int:
    from kuasar import console_session, transport
    from kuasar.address import HvsockAddress, parse_address, with_port
    from kuasar.config import DEFAULT_LIMITS
    from kuasar.ctl import stdio, terminal

    command: list[str] = list(args.command)
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

    if "://" in args.sandbox:
        address = parse_address(args.sandbox)
        if args.port is not None or not isinstance(address, HvsockAddress):
            address = with_port(address, args.port or CONSOLE_PORT)
    else:
        address = HvsockAddress(resolve(args, args.sandbox).socket, args.port or CONSOLE_PORT)

    out = stdio.FdWriter(sys.stdout.fileno())
    source = stdio.read_chunks(sys.stdin.fileno()) if args.interactive else None
    try:
        async with _deadline(args.timeout):
            reader, writer = await transport.dial(
                address, limits=DEFAULT_LIMITS, connect_timeout=args.connect_timeout
            )
            try:
                if interactive_tty:
                    with terminal.raw_terminal(sys.stdin.fileno()):
                        if command:
                            result = await console_session.run_command(
                                reader,
                                writer,
                                console_session.tty_argv(command),
                                out.write,
                                source=source,
                                escape=escape,
                            )
                        else:
                            result = await console_session.relay(
                                reader, writer, out.write, source=source, escape=escape, send_eof=False
                            )
                else:
                    result = await console_session.run_command(
                        reader, writer, command or ["sh"], out.write, source=source
                    )
            finally:
                writer.close()
                with _suppress_close_errors():
                    await writer.wait_closed()
    except TimeoutError as exc:
        if isinstance(exc, DeadlineExceeded):
            raise
        raise DeadlineExceeded(f"timed out after {args.timeout:g} s") from None
    if result.detached:
        sys.stderr.write("\r\n[detached]\r\n")
    from kuasar.ctl.main import exit_code_for

    return exit_code_for(exit_status=result.exit_status)


def _deadline(seconds: float | None) -> Any:
    import asyncio
    import contextlib

    return asyncio.timeout(seconds) if seconds else contextlib.nullcontext()


def _suppress_close_errors() -> Any:
    import contextlib

    return contextlib.suppress(ConnectionError, OSError)
