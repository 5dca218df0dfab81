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

import os
import sys
import time

from kuasar.config import CONSOLE_PORT, DEFAULT_LIMITS
from kuasar.ctl import quickparse
from kuasar.ctl.commands import summary
from kuasar.ctl.commands._common import (
    SOCKET_DIR,
    add_sandbox,
    check_user_spec,
    guest_target,
    positive_seconds,
)
from kuasar.ctl.quickparse import APPEND, FLAG, Option
from kuasar.ctl.terminal import DEFAULT_ESCAPE
from kuasar.errors import DeadlineExceeded, KuasarError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Awaitable, Callable, Coroutine
    from types import SimpleNamespace
    from typing import Any

    from kuasar.ctl.quickparse import Namespace
    from kuasar.session import ExecPath, GuestTarget

    Writer = Callable[[bytes], Awaitable[None]]

#: Option groups: the paths (one at most) and --all's companions.
PATH, ALL = "path", "all"


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


#: exec's options, in ``--help`` order: registered with argparse (``register``) and read by the
#: quick parser (``parse``) alike.
OPTIONS = (
    Option("-i", "--interactive", dest="interactive", action=FLAG, help="pass stdin to the command"),
    Option(
        "-t",
        dest="tty",
        action=FLAG,
        help="with -i: an interactive terminal session; alone: a one-shot command for scripts",
    ),
    Option("--tty", dest="force_tty", action=FLAG, help="run on a PTY even without -i (agent API)"),
    Option(
        "--console", dest="console", action=FLAG, group=PATH, help="use the debug console, not the agent API"
    ),
    Option("--agent", dest="agent", action=FLAG, group=PATH, help="use the agent API; fail if there is none"),
    Option(
        "--vm-process",
        dest="vm_process",
        action=FLAG,
        group=PATH,
        help="use a stock Kuasar vmm-task's ExecVMProcess (one shot, output at the end)",
    ),
    Option(
        "-e",
        "--env",
        dest="env",
        action=APPEND,
        default=[],
        metavar="KEY=VAL",
        help="set an environment variable",
    ),
    Option(
        "-w", "--workdir", dest="workdir", default="", metavar="DIR", help="working directory in the guest"
    ),
    Option("-u", "--user", dest="user", default="", metavar="USER", help="name, uid or uid:gid to run as"),
    Option("--container", dest="container", default="", metavar="ID", help="exec inside this container"),
    Option("-p", "--port", dest="port", type=int, help=f"debug console vsock port (default {CONSOLE_PORT})"),
    SOCKET_DIR,
    Option(
        "--timeout",
        dest="timeout",
        type=positive_seconds,
        metavar="SECS",
        help="give up after SECS (exit 124)",
    ),
    Option(
        "--connect-timeout",
        dest="connect_timeout",
        type=positive_seconds,
        default=DEFAULT_LIMITS.connect_timeout,
        metavar="SECS",
        help="how long to wait for the guest to accept the connection (default 10)",
    ),
    Option(
        "--escape",
        dest="escape",
        default=DEFAULT_ESCAPE,
        metavar="KEY",
        help="detach key for -it (default ^]; 'none' disables)",
    ),
    # --all and its companions (kuasar.ctl.commands.fanout)
    Option("--all", dest="all", action=FLAG, group=ALL, help="run the command in every sandbox of the roots"),
    Option(
        "--prefix",
        dest="prefix",
        default="",
        metavar="P",
        group=ALL,
        help="with --all: only sandboxes whose ID starts with P",
    ),
    Option(
        "-P",
        "--parallel",
        dest="parallel",
        type=int,
        default=16,
        metavar="N",
        group=ALL,
        help="with --all: at most N at a time",
    ),
    Option(
        "--no-prefix",
        dest="no_prefix",
        action=FLAG,
        group=ALL,
        help="with --all: do not prefix lines with the ID",
    ),
    Option(
        "-o",
        "--output",
        dest="output",
        choices=("text", "json"),
        default="text",
        group=ALL,
        help="with --all: json = one record per sandbox",
    ),
)


def register(commands: Any) -> None:
    import argparse

    parser: argparse.ArgumentParser = commands.add_parser(
        "exec",
        help=summary("exec"),
        description=DESCRIPTION,
        epilog=EPILOG,
    )
    groups: dict[str, argparse._ActionsContainer] = {PATH: parser.add_mutually_exclusive_group()}
    for option in OPTIONS:  # groups are made where their first member is, as argparse lists them
        if option.group == ALL and ALL not in groups:
            groups[ALL] = parser.add_argument_group("many sandboxes (--all)")
        quickparse.register(parser, (option,), groups)
    add_sandbox(parser)
    parser.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        metavar="COMMAND",
        help="command and arguments (default: a shell with -it)",
    )
    parser.set_defaults(func=run)


def parse(words: list[str]) -> SimpleNamespace | None:
    """``words`` (``exec ...``) parsed without argparse, or ``None`` when argparse must (see
    :func:`kuasar.ctl.quickparse.parse`)."""
    return quickparse.parse(
        words, "exec", OPTIONS, positional="sandbox", rest="command", exclusive=PATH, func=run
    )


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


def run(args: Namespace) -> int | Coroutine[Any, Any, int]:
    """Check the arguments, then run one sandbox's command on the blocking drivers (no asyncio, no
    protobuf); ``--all`` returns the fan-out's coroutine (``kuasar.ctl.main`` runs it)."""
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
        from kuasar.ctl.commands import fanout

        return fanout.run_all(args, command, env)
    api_only = [
        flag
        for flag, value in (("-u", args.user), ("--container", args.container), ("--tty", args.force_tty))
        if value
    ]
    target, _ = guest_target(args, args.sandbox, console_port=args.port)
    deadline = time.monotonic() + args.timeout if args.timeout else None
    try:
        return _dispatch(
            args, target, command=command, env=env, escape=escape, deadline=deadline, api_only=api_only
        )
    except DeadlineExceeded:
        raise DeadlineExceeded(f"timed out after {args.timeout:g} s") from None


def _dispatch(
    args: Namespace,
    target: GuestTarget,
    *,
    command: list[str],
    env: dict[str, str],
    escape: int | None,
    deadline: float | None,
    api_only: list[str],
) -> int:
    """Probe the guest once (blocking session) and run the command by the path it has, or the one
    forced. ``--console`` skips the probe altogether."""
    from kuasar.session import ExecPath
    from kuasar.session._blocking import BlockingSession, open_console

    connect = args.connect_timeout if deadline is None else min(args.connect_timeout, args.timeout)
    forced = _forced_path(args)
    if forced is ExecPath.CONSOLE:
        from kuasar.ctl.commands import exec_console

        sock = open_console(target, connect_timeout=connect)
        return exec_console.run_console(sock, args, command, env, escape=escape, deadline=deadline)
    if forced is None and args.port is not None and not api_only:
        forced = ExecPath.CONSOLE  # -p names a debug console port: it means the console
    from kuasar.ctl.commands import exec_api

    wants_api = forced in (None, ExecPath.API) or api_only
    api = exec_api.ApiCommand(args, command, env) if wants_api else None
    with BlockingSession.open(target, exec_start=api.start if api is not None else None) as session:
        if forced is ExecPath.API or api_only:
            session.require_api("--agent" if forced is ExecPath.API else ", ".join(api_only))
            assert api is not None
            return api.run(session.api_process(api.start), escape=escape, deadline=deadline)
        paths = (forced,) if forced is not None else session.paths()
        for path in paths:
            if path is ExecPath.API and session.client is not None and api is not None:
                return api.run(session.api_process(api.start), escape=escape, deadline=deadline)
            if path is ExecPath.CONSOLE:
                try:
                    sock = session.open_console(connect_timeout=connect)
                except KuasarError:
                    if ExecPath.VM_PROCESS not in paths:
                        raise
                    if args.interactive and args.tty:
                        raise session.interactive_needs_console() from None
                    continue
                from kuasar.ctl.commands import exec_console

                return exec_console.run_console(sock, args, command, env, escape=escape, deadline=deadline)
            if path is ExecPath.VM_PROCESS:
                from kuasar.ctl.commands import exec_console

                return exec_console.run_vm_process(session, args, command, env, deadline)
    raise AssertionError("unreachable: every guest has the console path")  # pragma: no cover


def _forced_path(args: Namespace) -> ExecPath | None:
    from kuasar.session import ExecPath

    if args.agent:
        return ExecPath.API
    if args.console:
        return ExecPath.CONSOLE
    if args.vm_process:
        return ExecPath.VM_PROCESS
    return None
