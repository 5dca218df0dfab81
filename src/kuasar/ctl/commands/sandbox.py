"""``kuasarctl sandbox run|stop|logs``: sandboxes for development, local ones or QEMU guests.

Layer contract: ``kuasar.ctl`` only; delegates to ``kuasar.sandbox.local`` (synchronous).
``run`` prints the new sandbox's ID and returns once its agent serves (or, with ``--foreground``,
replaces this process with the sandbox supervisor until Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from kuasar._text import printable
from kuasar.config import DEFAULT_LIMITS
from kuasar.ctl import output
from kuasar.ctl.commands import summary
from kuasar.ctl.commands._common import add_socket_dir, non_empty, positive_int, positive_seconds, resolve
from kuasar.errors import SandboxError, UsageError

#: How often ``sandbox logs -f`` looks for appended lines (a file has no readiness to wait for).
_FOLLOW_POLL = 0.2
#: Local sandboxes go here as root (where discovery looks by default).
DEFAULT_LOCAL_ROOT = "/run/kuasar"


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "sandbox",
        help=summary("sandbox"),
        description="Run and stop sandboxes for development: local ones (the guest agent runs as a "
        "process behind a hybrid vsock socket, no VM needed) or real Linux guests under QEMU "
        "(--vmm qemu) behind the same kind of socket.",
    )
    actions = parser.add_subparsers(
        dest="action", metavar="ACTION", required=True, help="run or stop (see ACTION --help)"
    )

    run_parser: argparse.ArgumentParser = actions.add_parser(
        "run",
        help="start a sandbox (local, or --vmm qemu) in the background",
        description="Start a sandbox in ROOT/ID (a local one, or a real Linux guest with --vmm qemu), "
        "print its ID, and return once its agent serves.",
        epilog="examples:\n"
        "  kuasarctl sandbox run -d /tmp/ksr --name pod-1\n"
        "  kuasarctl exec -d /tmp/ksr pod-1 uname -a\n"
        "  kuasarctl sandbox stop -d /tmp/ksr pod-1\n"
        "  kuasarctl sandbox run -d /tmp/ksr --vmm qemu --name vm-1   # a real kernel (TCG: ~10-30 s)",
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
    vm = run_parser.add_argument_group("real kernel (--vmm qemu)")
    vm.add_argument(
        "--vmm",
        choices=("local", "qemu"),
        default="local",
        help="local: the agent as a host process; qemu: a Linux guest under QEMU, the agent as its "
        "PID 1 (default: local)",
    )
    vm.add_argument("--memory", metavar="MIB", type=positive_int, default=512, help="guest RAM (default 512)")
    vm.add_argument("--cpus", metavar="N", type=positive_int, default=1, help="guest vCPUs (default 1)")
    vm.add_argument(
        "--accel",
        choices=("auto", "tcg", "kvm"),
        default="auto",
        help="auto: KVM when a KVM guest really boots here (tried once, remembered), else TCG",
    )
    vm.add_argument(
        "--boot-timeout",
        metavar="SECS",
        type=positive_seconds,
        default=DEFAULT_LIMITS.vm_boot_timeout,
        help=f"how long the guest may take to answer (default {DEFAULT_LIMITS.vm_boot_timeout:g})",
    )
    run_parser.set_defaults(func=run)

    logs_parser: argparse.ArgumentParser = actions.add_parser(
        "logs",
        help="print a sandbox's own log: a QEMU guest's serial console, a local sandbox's sandbox.log",
        description="Print a sandbox's log: the serial console of a QEMU guest (kernel and agent "
        "messages), the supervisor's and agent's sandbox.log of a local one.",
    )
    add_socket_dir(logs_parser)
    logs_parser.add_argument("sandbox", metavar="SANDBOX", help="ID or unique prefix")
    logs_parser.add_argument("-f", "--follow", action="store_true", help="keep printing what is appended")
    logs_parser.add_argument(
        "--supervisor", action="store_true", help="a QEMU guest's sandbox.log (supervisor, device) instead"
    )
    logs_parser.set_defaults(func=logs)

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
    vm = None
    if args.vmm == "qemu":
        if not args.agent_api:
            raise UsageError(
                "--no-agent-api is for local sandboxes: a QEMU guest always serves the agent API"
            )
        vm = local.VmOptions(
            memory_mib=args.memory, cpus=args.cpus, accel=args.accel, boot_timeout=args.boot_timeout
        )
    if args.foreground:
        command = local.supervisor_command(os.path.abspath(root), sandbox_id, options, vm)  # checks QEMU
        local.prepare_directory(root, sandbox_id)
        output.write_stdout(sandbox_id + "\n")
        output.flush_stdout()
        os.execv(command[0], command)
    local.start_sandbox(root, sandbox_id, options, vm=vm)
    output.write_stdout(sandbox_id + "\n")
    return 0


def logs(args: argparse.Namespace) -> int:
    from kuasar.sandbox import local

    ref = resolve(args, args.sandbox)
    path = local.log_path(ref, supervisor=args.supervisor)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise SandboxError(f"cannot read {printable(path)}: {exc.strerror}") from None
    try:
        _copy_out(fd, follow=args.follow, alive=lambda: os.path.exists(path))
    finally:
        os.close(fd)
    return 0


def _copy_out(fd: int, *, follow: bool, alive: Callable[[], bool]) -> None:
    """Write what ``fd`` holds to stdout, bytes unchanged; with ``follow``, keep writing what is
    appended until ``alive()`` turns false (the sandbox was stopped) or Ctrl-C."""
    import time

    while True:
        chunk = os.read(fd, 1 << 16)
        if chunk:
            output.write_stdout_bytes(chunk)
            continue
        if not follow or not alive():
            return
        output.flush_stdout()
        time.sleep(_FOLLOW_POLL)


def stop(args: argparse.Namespace) -> int:
    from kuasar.sandbox import local

    refs = [resolve(args, query) for query in args.sandboxes]
    for ref in refs:
        local.stop_sandbox(ref)
        output.write_stdout(printable(ref.id) + "\n")
    return 0
