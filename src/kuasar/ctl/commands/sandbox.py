"""``kuasarctl sandbox run|stop``: local sandboxes for development, no VM needed.

Layer contract: ``kuasar.ctl`` only; delegates to ``kuasar.sandbox.local`` (synchronous).
``run`` prints the new sandbox's ID and returns once its agent serves (or, with ``--foreground``,
replaces this process with the sandbox supervisor until Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from kuasar.ctl.commands._common import add_socket_dir, resolve
from kuasar.errors import UsageError

#: Local sandboxes go here as root (where discovery looks by default).
DEFAULT_LOCAL_ROOT = "/run/kuasar"


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "sandbox",
        help="run and stop local sandboxes",
        description=__doc__.split("\n\n", 1)[0] if __doc__ else None,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    run_parser: argparse.ArgumentParser = actions.add_parser(
        "run", help="start a local sandbox in the background"
    )
    run_parser.add_argument("--name", metavar="ID", help="sandbox ID (default: 64 random hex digits)")
    add_socket_dir(run_parser)
    run_parser.add_argument("--foreground", action="store_true", help="stay in the foreground until Ctrl-C")
    run_parser.add_argument(
        "--debug-console",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve the debug console on vsock port 1025 (default on)",
    )
    run_parser.add_argument(
        "--agent-api",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve the agent API on vsock port 1024 (--no-agent-api: a console-only guest)",
    )
    run_parser.add_argument(
        "--namespaces",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="as root: own PID/mount/UTS/IPC namespaces, agent as PID 1 (default on)",
    )
    run_parser.add_argument(
        "--shell", metavar="PATH", help="debug console shell (default /bin/bash, else /bin/sh)"
    )
    run_parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    run_parser.set_defaults(func=run)

    stop_parser: argparse.ArgumentParser = actions.add_parser(
        "stop", aliases=["rm"], help="stop local sandboxes"
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
    sandbox_id = local.validate_id(args.name) if args.name else local.new_sandbox_id()
    options = local.LocalOptions(
        debug_console=args.debug_console,
        agent_api=args.agent_api,
        namespaces=args.namespaces,
        shell=args.shell,
        log_level=args.log_level,
    )
    if args.foreground:
        directory = local.prepare_directory(root, sandbox_id)
        sys.stdout.write(sandbox_id + "\n")
        sys.stdout.flush()
        command = local.supervisor_command(os.path.dirname(directory), sandbox_id, options)
        os.execv(command[0], command)
    local.start_sandbox(root, sandbox_id, options)
    sys.stdout.write(sandbox_id + "\n")
    return 0


def stop(args: argparse.Namespace) -> int:
    from kuasar.sandbox import local

    refs = [resolve(args, query) for query in args.sandboxes]
    for ref in refs:
        local.stop_sandbox(ref)
        sys.stdout.write(ref.id + "\n")
    return 0
