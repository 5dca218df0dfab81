"""The VMM stand-in and the guest it fronts, in one event loop (``python -m tests.functional.guests_vm``).

The VMM is ours (``kuasar.transport.hvsock_server``, as Kuasar's Cloud Hypervisor would be); the guest
side is the tests' own (``guests_peers``, ``guests_console``). See ``guests`` for the kinds and layout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TextIO

from kuasar.transport.hvsock_server import HvsockServer, port_directory_resolver
from tests.functional.guests_console import Children
from tests.functional.guests_peers import KataGuest, VmmTaskGuest
from tests.functional.guests_records import Guest

KINDS = ("vmm-task", "kata-agent", "booting", "mute", "hung")
SOCKET_NAMES = {"kuasar-vmm": "task.vsock", "kuasarctl": "task.socket"}
DEFAULT_CONSOLE_PORT = {"vmm-task": 1025, "kata-agent": 1026}

StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class _Journal:
    def __init__(self, path: str) -> None:
        self._file: TextIO = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def __call__(self, record: dict[str, object]) -> None:
        self._file.write(json.dumps(record, sort_keys=True) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


async def _hold_silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept, read and drop whatever comes, never write a byte: a hung peer."""
    try:
        while await reader.read(65536):
            pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


class GuestVM:
    """A stand-in sandbox in this event loop: the guest's listeners and the VMM in front of them.

    Use as ``async with GuestVM(...) as vm:``; ``vm.guest`` is the :class:`Guest`.
    """

    def __init__(
        self,
        root: str,
        sandbox_id: str,
        kind: str,
        *,
        private_dir: str,
        console: bool | None = None,
        console_port: int | None = None,
        layout: str = "kuasar-vmm",
        boot_delay: float = 0.0,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown guest kind {kind!r}")
        self._kind = kind
        self._console = (kind == "kata-agent") if console is None else console
        port = console_port or DEFAULT_CONSOLE_PORT.get(kind)
        self._boot_delay = boot_delay
        self._boot: asyncio.Task[None] | None = None
        self._listen_dir = os.path.join(private_dir, "vsock")
        directory = os.path.join(root, sandbox_id)
        self.guest = Guest(
            kind,
            root,
            sandbox_id,
            os.path.join(directory, SOCKET_NAMES[layout]),
            console_port=port if self._console else None,
            journal=os.path.join(private_dir, "journal.jsonl"),
            pid=os.getpid(),
        )
        self._children = Children()
        self._servers: list[tuple[asyncio.AbstractServer, str]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._journal: _Journal | None = None
        self._peer: VmmTaskGuest | KataGuest | None = None
        self._vmm: HvsockServer | None = None

    def _tracked(self, handler: StreamHandler) -> StreamHandler:
        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            try:
                await handler(reader, writer)
            except asyncio.CancelledError:
                pass
            finally:
                self._tasks.discard(task)

        return run

    async def _listen(self, path: str, handler: StreamHandler) -> None:
        server = await asyncio.start_unix_server(self._tracked(handler), path)
        self._servers.append((server, path))

    async def start(self) -> None:
        """Start the guest's listeners, then the VMM socket; with ``boot_delay``, the other way round."""
        os.makedirs(self._listen_dir, mode=0o700, exist_ok=True)
        os.makedirs(self.guest.directory, mode=0o755, exist_ok=True)
        self._journal = _Journal(self.guest.journal or os.devnull)
        if self._kind == "hung":
            await self._listen(self.guest.socket, _hold_silent)
            os.chmod(self.guest.socket, 0o600)
            return
        vmm = HvsockServer(self.guest.socket, port_directory_resolver(self._listen_dir))
        if self._boot_delay <= 0:
            await self._boot_guest()
            self._vmm = vmm
            await vmm.start()
            return
        self._vmm = vmm
        await vmm.start()  # the VMM is up; the guest boots: every CONNECT is closed until it listens
        self._boot = asyncio.ensure_future(self._boot_later())

    async def _boot_later(self) -> None:
        await asyncio.sleep(self._boot_delay)
        await self._boot_guest()

    async def _boot_guest(self) -> None:
        assert self._journal is not None
        at = self._listen_dir
        if self._kind == "mute":
            await self._listen(os.path.join(at, "1024.sock"), _hold_silent)
        elif self._kind in ("vmm-task", "kata-agent"):
            if self._kind == "vmm-task":
                peer: VmmTaskGuest | KataGuest = VmmTaskGuest(
                    self._journal, self._children, console=self._console
                )
            else:
                peer = KataGuest(
                    self._journal,
                    self._children,
                    console=self._console,
                    console_port=self.guest.console_port or 1026,
                )
            self._peer = peer
            if peer.console is not None:  # vmm-task starts its console listener before its ttrpc server
                await self._listen(os.path.join(at, f"{self.guest.console_port}.sock"), peer.console.serve)
            await self._listen(os.path.join(at, f"{peer.api_port}.sock"), peer.ttrpc.serve)

    async def close(self) -> None:
        if self._boot is not None:
            self._boot.cancel()
            await asyncio.gather(self._boot, return_exceptions=True)
        if self._vmm is not None:
            self._vmm.close()
            await self._vmm.wait_closed()
        for server, path in self._servers:
            server.close()
            with contextlib.suppress(OSError):
                os.unlink(path)
        for task in list(self._tasks):
            task.cancel()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._peer is not None:
            await self._peer.close()
        for server, _ in self._servers:
            await server.wait_closed()
        await self._children.kill_all()
        if self._journal is not None:
            self._journal.close()

    async def __aenter__(self) -> GuestVM:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def _serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_reader(0, lambda: None if os.read(0, 4096) else stop.set())
    vm = GuestVM(
        args.root,
        args.id,
        args.kind,
        private_dir=args.private_dir,
        console=args.console,
        console_port=args.console_port,
        layout=args.layout,
        boot_delay=args.boot_delay,
    )
    async with vm:
        info = {"socket": vm.guest.socket, "console_port": vm.guest.console_port, "journal": vm.guest.journal}
        sys.stdout.write("ready " + json.dumps(info) + "\n")
        sys.stdout.flush()
        await stop.wait()
    loop.remove_reader(0)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.functional.guests_vm", description=__doc__)
    parser.add_argument("--root", required=True)
    parser.add_argument("--id", required=True)
    parser.add_argument("--kind", choices=KINDS, required=True)
    parser.add_argument("--private-dir", required=True)
    parser.add_argument("--console", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--console-port", type=int)
    parser.add_argument("--layout", choices=sorted(SOCKET_NAMES), default="kuasar-vmm")
    parser.add_argument(
        "--boot-delay", type=float, default=0.0, help="the guest listens this long after the VMM"
    )
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
