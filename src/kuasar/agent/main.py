"""``kuasar-agent``: the guest agent's entry point (PID 1 capable).

Layer contract: agent top; the one ``asyncio.run`` of the agent. Reads flags and the kernel command
line (``task.*``), listens with ``kuasar.transport.listen`` on the agent API address (ttrpc: health,
containers, and whatever services are registered in ``kuasar.agent.services``) and, when debug is
on, the debug console address; reaps orphans as PID 1; stops cleanly on SIGTERM/SIGINT, removing
the socket files it bound. Errors are one line on stderr and exit status 1. ``python -m kuasar.agent``
runs the same entry point.

As PID 1 of a VM (PID 1 without ``--isolate``) it is the guest's init (:mod:`.early_init`): early
init before anything else, and it never returns: a stop (SIGINT from ctrl-alt-delete, SIGTERM), a
fatal error, even bad flags, end in the same power-off, logged to stderr (the serial console).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

from kuasar import __version__
from kuasar.address import UnixAddress, parse_address
from kuasar.agent import early_init
from kuasar.agent.cmdline import read_cmdline
from kuasar.agent.console import ConsoleSessions
from kuasar.agent.process import is_spawned
from kuasar.agent.reaper import OrphanReaper
from kuasar.config import AGENT_PORT, CONSOLE_PORT, DEFAULT_LIMITS, Limits
from kuasar.errors import KuasarError

if TYPE_CHECKING:
    from kuasar import ttrpc
    from kuasar.agent.services import AgentServices
    from kuasar.transport import Handler
    from kuasar.transport.unix import SocketFile

log = logging.getLogger("kuasar.agent")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kuasar-agent",
        description="kuasar-py guest agent: ttrpc agent API and Kuasar-compatible debug console.",
    )
    parser.add_argument("--version", action="version", version=f"kuasar-agent {__version__}")
    parser.add_argument("--api", default=f"vsock://-1:{AGENT_PORT}", metavar="ADDR", help="agent API address")
    parser.add_argument(
        "--console", default=f"vsock://-1:{CONSOLE_PORT}", metavar="ADDR", help="debug console address"
    )
    parser.add_argument(
        "--debug-console",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="serve the debug console (default: on when the kernel command line has task.debug)",
    )
    parser.add_argument("--no-agent-api", dest="agent_api", action="store_false", help="console-only guest")
    parser.add_argument(
        "--debug-shell", metavar="PATH", help="console shell (default task.debug_shell or /bin/bash)"
    )
    parser.add_argument("--hostname", help="set the (UTS namespace's) hostname")
    parser.add_argument(
        "--home",
        metavar="DIR",
        help="HOME of the console's shells and of commands run without a user (default: $HOME or /root)",
    )
    parser.add_argument(
        "--cmdline", default="/proc/cmdline", metavar="FILE", help="kernel command line to read"
    )
    parser.add_argument("--log-level", help="debug, info, warning, error (default task.log_level or info)")
    parser.add_argument("--ready-fd", type=int, metavar="N", help="write 'ready' to fd N once listening")
    parser.add_argument(
        "--exit-with-parent",
        type=int,
        metavar="PID",
        help="die when parent PID dies (local sandboxes: the guest dies with its VMM stand-in)",
    )
    parser.add_argument(
        "--isolate",
        action="store_true",
        help="as root: run as PID 1 of new PID/mount/UTS/IPC namespaces (local sandboxes)",
    )
    parser.add_argument(
        "--state-dir", metavar="DIR", help="containers' runc root, state and logs (default /run/kuasar-agent)"
    )
    return parser


def _owned_by(services: AgentServices | None) -> Callable[[int], bool]:
    """The zombies the orphan reaper leaves alone: unreaped ``Process``es and container inits."""

    def owned(pid: int) -> bool:
        return is_spawned(pid) or (services is not None and services.owns_pid(pid))

    return owned


class _Listeners:
    """The agent's listening sockets: ``close`` stops them and removes the socket files they bound."""

    def __init__(self) -> None:
        self._servers: list[asyncio.AbstractServer] = []
        self._files: list[SocketFile] = []

    async def listen(self, text: str, handler: Handler) -> None:
        """Listen on the address ``text`` (socket files get mode 0600)."""
        from kuasar import transport
        from kuasar.transport.unix import SocketFile

        address = parse_address(text)
        self._servers.append(await transport.listen(address, handler, mode=0o600))
        if isinstance(address, UnixAddress) and not address.abstract:
            self._files.append(SocketFile(address.path))

    def close(self) -> None:
        """Stop accepting, then remove each socket file that is still the one bound here."""
        for server in self._servers:
            server.close()
        for file in self._files:
            try:
                if file.remove():
                    log.debug("removed %s", file.path)
            except OSError as exc:
                log.warning("cannot remove %s: %s", file.path, exc)


async def _serve(args: argparse.Namespace, limits: Limits = DEFAULT_LIMITS) -> int:
    from kuasar import ttrpc
    from kuasar.agent.services import AgentServices

    cmdline = read_cmdline(args.cmdline)
    debug_console = cmdline.debug if args.debug_console is None else args.debug_console
    shell = args.debug_shell or cmdline.debug_shell
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    listeners = _Listeners()
    servers: list[ttrpc.Server] = []
    services: AgentServices | None = None
    consoles: ConsoleSessions | None = None
    reaper: OrphanReaper | None = None
    try:
        if args.hostname:
            try:
                socket.sethostname(args.hostname[:64])
            except OSError as exc:
                log.warning("cannot set hostname %r: %s", args.hostname, exc)
        if args.agent_api:
            vm_guest = early_init.is_vm_init(os.getpid(), isolate=args.isolate)
            services = AgentServices(args.state_dir, vm_guest=vm_guest, limits=limits, home=args.home)
            server = ttrpc.Server(services.handlers, limits=limits)
            servers.append(server)
            await listeners.listen(args.api, server.handle_connection)
            log.info("agent API on %s", args.api)
        if debug_console:
            consoles = ConsoleSessions(shell=shell, home=args.home, limits=limits)
            await listeners.listen(args.console, consoles.handle)
            log.info("debug console on %s (shell %s)", args.console, shell)
        if os.getpid() == 1:
            reaper = OrphanReaper(_owned_by(services), limits=limits)
            reaper.start()
        if args.ready_fd is not None:
            with contextlib.suppress(OSError):
                os.write(args.ready_fd, b"ready\n")
                os.close(args.ready_fd)
        await stop.wait()
        log.info("shutting down")
        return 0
    finally:
        if reaper is not None:
            reaper.stop()
        listeners.close()
        if consoles is not None:
            await consoles.close()
        for server in servers:
            server.close()
        for server in servers:
            await server.wait_closed()
        if services is not None:
            await services.close()


_LOG_FORMAT = "%(asctime)s kuasar-agent %(levelname)s %(name)s: %(message)s"


def _level(name: str) -> int:
    level = getattr(logging, name.upper(), logging.INFO)
    return level if isinstance(level, int) else logging.INFO


def _log_failure(exc: BaseException) -> None:
    if isinstance(exc, KeyboardInterrupt):
        log.info("interrupted")
    elif isinstance(exc, KuasarError):
        log.error("%s%s", exc, "".join(f"\n  {hint}" for hint in exc.hints))
    elif isinstance(exc, OSError):
        log.error("%s", exc)
    elif isinstance(exc, SystemExit):
        log.error("exit requested (status %s)", exc.code)
    else:
        log.critical("fatal error", exc_info=exc)


def _run_as_vm_init(args: argparse.Namespace | None) -> NoReturn:
    """PID 1 of a VM: early init, serve until stopped, then power off; whatever happens, never
    return (``args`` None: the flags were bad, so early init and the power-off are all there is)."""
    logging.basicConfig(level=logging.INFO, format=_LOG_FORMAT, stream=sys.stderr)
    try:
        # Until the event loop's handlers take over, SIGTERM interrupts like SIGINT (PID 1 ignores
        # signals left at SIG_DFL, so an early stop would otherwise be lost).
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        early_init.run(os.path.dirname(sys.executable))
        if args is None:
            log.error("bad flags: nothing to serve")
        else:
            logging.getLogger().setLevel(_level(args.log_level or read_cmdline(args.cmdline).log_level))
            asyncio.run(_serve(args))
    except BaseException as exc:  # PID 1 logs everything, then powers off
        _log_failure(exc)
    finally:
        early_init.power_off()


def _wants_isolate(argv: Sequence[str] | None) -> bool:
    return "--isolate" in (sys.argv[1:] if argv is None else argv)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        if early_init.is_vm_init(os.getpid(), isolate=_wants_isolate(argv)):
            _run_as_vm_init(None)
        raise
    if early_init.is_vm_init(os.getpid(), isolate=args.isolate):
        _run_as_vm_init(args)
    if args.exit_with_parent is not None:
        from kuasar.agent import namespaces

        namespaces.die_with_parent()
        if os.getppid() != args.exit_with_parent:  # the parent died before prctl took effect
            sys.stderr.write(f"kuasar-agent: parent {args.exit_with_parent} is gone\n")
            return 1
    if args.isolate:
        from kuasar.agent import namespaces

        if not namespaces.can_isolate():
            sys.stderr.write("kuasar-agent: --isolate needs root and PID namespaces\n")
            return 1
        try:
            namespaces.isolate()  # from here on we are PID 1 of the new namespaces
        except OSError as exc:
            sys.stderr.write(f"kuasar-agent: cannot isolate: {exc}\n")
            return 1
    level = args.log_level or read_cmdline(args.cmdline).log_level
    logging.basicConfig(level=_level(level), format=_LOG_FORMAT, stream=sys.stderr)
    try:
        return asyncio.run(_serve(args))
    except KuasarError as exc:
        sys.stderr.write(f"kuasar-agent: {exc}\n")
        for hint in exc.hints:
            sys.stderr.write(f"  {hint}\n")
        return 1
    except OSError as exc:
        sys.stderr.write(f"kuasar-agent: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
