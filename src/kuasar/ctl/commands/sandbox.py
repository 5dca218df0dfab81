"""``kuasarctl sandbox run|stop``: local sandboxes for development, no VM needed.

Layer contract: ``kuasar.ctl`` only; delegates to ``kuasar.sandbox.local`` (synchronous).
``run`` prints the new sandbox's ID and returns once its agent serves (or, with ``--foreground``,
replaces this process with the sandbox supervisor until Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from kuasar._text import printable
from kuasar.ctl import output
from kuasar.ctl.commands import summary
from kuasar.ctl.commands._common import add_socket_dir, non_empty, resolve
from kuasar.errors import UsageError

#: Local sandboxes go here as root (where discovery looks by default).
DEFAULT_LOCAL_ROOT = "/run/kuasar"


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "sandbox",
        help=summary("sandbox"),
        description="Run and stop local sandboxes for development: the guest agent runs as a process "
        "behind a hybrid vsock socket, no VM needed.",
    )
    actions = parser.add_subparsers(
        dest="action", metavar="ACTION", required=True, help="run or stop (see ACTION --help)"
    )

    run_parser: argparse.ArgumentParser = actions.add_parser(
        "run",
        help="start a local sandbox in the background",
        description="Start a local sandbox in ROOT/ID, print its ID, and return once its agent serves.",
        epilog="examples:\n"
        "  kuasarctl sandbox run -d /tmp/ksr --name pod-1\n"
        "  kuasarctl exec -d /tmp/ksr pod-1 uname -a\n"
        "  kuasarctl sandbox stop -d /tmp/ksr pod-1",
    )
    run_parser.add_argument(
        "--name", metavar="ID", type=non_empty, help="sandbox ID (default: 64 random hex digits)"
    )
    add_socket_dir(
        run_parser,
        help=f"sandbox root to create it in (default: $KUASAR_SOCKET_DIR, else {DEFAULT_LOCAL_ROOT})",
    )
    run_parser.add_argument("--foreground", action="store_true", help="stay in the foreground until Ctrl-C")
    for flag, text in (
        ("--debug-console", "serve the debug console on vsock port 1025"),
        ("--agent-api", "serve the agent API on vsock port 1024 (--no-agent-api: a console-only guest)"),
        ("--namespaces", "as root: own PID/mount/UTS/IPC namespaces, agent as PID 1"),
    ):
        run_parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=True, help=text)
    run_parser.add_argument(
        "--shell", metavar="PATH", help="debug console shell (default /bin/bash, else /bin/sh)"
    )
    run_parser.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="sandbox.log detail",
    )
    run_parser.set_defaults(func=run)

    stop_parser: argparse.ArgumentParser = actions.add_parser(
        "stop",
        aliases=["rm"],
        help="stop local sandboxes",
        description="Stop local sandboxes (or clean up crashed ones) and remove their directories.",
    )
    add_socket_dir(stop_parser)
    stop_parser.add_argument("sandboxes", nargs="+", metavar="SANDBOX", help="ID or unique prefix")
    stop_parser.set_defaults(func=stop)


def _local_root(args: argparse.Namespace) -> str:
    from kuasar.sandbox.discovery import SOCKET_DIR_ENV

    root: str | None = args.socket_dir or os.environ.get(SOCKET_DIR_ENV)
    if root:
        return root
    if os.geteuid() != 0 and not os.access(os.path.dirname(DEFAULT_LOCAL_ROOT), os.W_OK):
        raise UsageError(
            f"cannot create local sandboxes in {DEFAULT_LOCAL_ROOT} without root",
            hints=["Pass -d DIR (and the same -d to ps/exec/stop), or set KUASAR_SOCKET_DIR."],
        )
    return DEFAULT_LOCAL_ROOT


def run(args: argparse.Namespace) -> int:
    from kuasar.sandbox import local

    root = _local_root(args)
    sandbox_id = local.validate_id(args.name) if args.name is not None else local.new_sandbox_id()
    options = local.LocalOptions(
        debug_console=args.debug_console,
        agent_api=args.agent_api,
        namespaces=args.namespaces,
        shell=args.shell,
        log_level=args.log_level,
    )
    if args.foreground:
        directory = local.prepare_directory(root, sandbox_id)
        output.write_stdout(sandbox_id + "\n")
        output.flush_stdout()
        command = local.supervisor_command(os.path.dirname(directory), sandbox_id, options)
        os.execv(command[0], command)
    local.start_sandbox(root, sandbox_id, options)
    output.write_stdout(sandbox_id + "\n")
    return 0


def stop(args: argparse.Namespace) -> int:
    from kuasar.sandbox import local

    refs = [resolve(args, query) for query in args.sandboxes]
    for ref in refs:
        local.stop_sandbox(ref)
        output.write_stdout(printable(ref.id) + "\n")
    return 0
