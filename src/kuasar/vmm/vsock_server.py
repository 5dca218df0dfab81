"""The vhost-user-vsock device process: a thin ``selectors`` driver around the sans-IO cores.

Layer contract: the IO half of :mod:`kuasar.vmm`: sockets, eventfds, ``selectors``; imports
``kuasar.config``, ``kuasar.errors``, ``kuasar._log`` and this package. Every protocol rule lives in
:mod:`.vhost_user`, :mod:`.backend`, :mod:`.virtqueue` and :mod:`.vsock_device`; this module (the
front-end socket, memory, eventfds, the rings) and :mod:`._host` (the host sockets) only move bytes
between them and the descriptors. ``SIGUSR1`` logs every queue and stream (to see a stall).

Why ``selectors`` and not asyncio (facts file): the front-end's messages carry descriptors
(``recvmsg`` with ``SCM_RIGHTS``, which asyncio 3.11 streams cannot do), kicks and calls are
eventfds, and the work per wake-up is a synchronous batch over the rings followed by one call per
queue (facts §7). A plain loop over ready descriptors does exactly that with no task or future per
packet. The device runs as a process of its own, like a VMM: a bad guest ring or a busy queue
cannot stall anyone else's event loop, and it has its own GIL and core beside QEMU.

Lifetime: :meth:`VsockDevice.run` serves one front-end connection (QEMU connects once, during
device realize, and the handshake is synchronous in QEMU) and returns when it goes away; the host
socket is removed then. A host client that vanishes mid-transfer resets its stream only; a bad ring
stops that queue (its error eventfd is signalled) and is logged; nothing takes the process down.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import logging
import math
import os
import selectors
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence

from kuasar import _log
from kuasar.config import DEFAULT_LIMITS, Limits
from kuasar.errors import KuasarError
from kuasar.vmm._host import HostSockets, bind_unix, unlink_socket
from kuasar.vmm._memory import MappedMemory, map_regions
from kuasar.vmm.backend import F_INDIRECT_DESC, F_VERSION_1, Backend
from kuasar.vmm.vhost_user import MAX_FDS, MemoryRegion, VhostUserError
from kuasar.vmm.virtqueue import GuestMemory, RingError, Virtqueue
from kuasar.vmm.vsock_device import Muxer
from kuasar.vmm.vsock_packet import HEADER_SIZE

__all__ = ["FEATURES", "VsockDevice", "main"]

#: What the device offers (facts: no EVENT_IDX, no SEQPACKET).
FEATURES = F_VERSION_1 | F_INDIRECT_DESC
RX, TX = 0, 1
_CMSG_SPACE = socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)
_ONE = struct.pack("=Q", 1)

log = _log.get_logger("kuasar.vmm.device")

_Callback = Callable[[int], None]


class VsockDevice:
    """A vhost-user-vsock backend serving ``socket_path``, muxing the guest onto ``uds_path``.

    Args:
        socket_path: the vhost-user socket QEMU's ``-chardev socket,path=`` connects to.
        uds_path: the hybrid vsock socket for host clients (``task.socket``); guest-initiated
            connections to host port P go to ``<uds_path>_<P>``.
        guest_cid: the guest's CID, answered in GET_CONFIG.
        limits: the CONNECT line bounds and the device's own (``vsock_buf_alloc``,
            ``vsock_request_timeout``, ``vsock_max_streams``).
    """

    def __init__(
        self,
        socket_path: str,
        uds_path: str,
        guest_cid: int,
        *,
        limits: Limits = DEFAULT_LIMITS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.socket_path = socket_path
        self.uds_path = uds_path
        self.muxer = Muxer(guest_cid, limits=limits)
        self.backend = Backend(self, features=FEATURES, config=struct.pack("<Q", guest_cid), queues=2)
        self._clock = clock
        self._selector = selectors.DefaultSelector()
        self.host = HostSockets(self._selector, self.muxer, uds_path, limits, clock)
        self._kicks: list[int] = []
        self._frontend: socket.socket | None = None
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._running = False
        self._busy = False
        self._online = self.muxer.online = False

    # ------------------------------------------------------------------ lifetime

    def run(self) -> None:
        """Listen on both sockets, serve one front-end until it disconnects, then clean up.

        Raises:
            KuasarError: a socket cannot be bound.
        """
        self._listener = bind_unix(self.socket_path)
        self._selector.register(self._listener, selectors.EVENT_READ, self._accept_frontend)
        self.host.listen()
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._woken)
        self._running = True
        try:
            self._loop()
        finally:
            self._teardown()

    def stop(self) -> None:
        """Make :meth:`run` return (from a signal handler or another thread)."""
        self._running = False
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _loop(self) -> None:
        while self._running:
            now = self._clock()
            deadline = self.muxer.tick(now)
            if self.host:
                self.host.check_hangups(now)
                deadline = min(deadline or math.inf, self.host.next_check)
            timeout = None if deadline is None else max(deadline - self._clock(), 0.0)
            if self._busy:  # the last batch stopped at its bound: look again at once
                timeout = 0.0
            for key, mask in self._selector.select(timeout):
                callback: _Callback = key.data
                callback(mask)
                if not self._running:
                    return
            self._pump()

    def describe(self) -> list[str]:
        """One line per queue and per stream: what an operator needs to see a stall."""
        lines = []
        for vring in self.backend.vrings:
            queue = vring.queue
            if queue is None:
                lines.append(f"vring {vring.index}: stopped")
                continue
            state = "running" if queue.error is None else f"stopped ({queue.error})"
            lines.append(
                f"vring {vring.index}: {state}, next_avail {queue.next_avail}, used {queue.used_idx}"
            )
        for link in self.muxer.links.values():
            lines.append(
                f"{link!r}: to_host {len(link.to_host)}, to_guest {len(link.to_guest)}, "
                f"peer_free {link.peer_free()}, fwd_cnt {link.fwd_cnt} (told {link.fwd_cnt_told}), "
                f"tx_cnt {link.tx_cnt}, peer_fwd_cnt {link.peer_fwd_cnt}, read_budget "
                f"{link.read_budget()}, want {sorted(op.name for op in link.want)}, host_eof "
                f"{link.host_eof}, peer_shutdown {link.peer_shutdown}, socket {link.id in self.host}"
            )
        return lines

    def _woken(self, mask: int) -> None:
        with contextlib.suppress(OSError):
            self._wake_r.recv(64)

    def _teardown(self) -> None:
        self.backend.close()
        self.muxer.reset()
        self.host.sync()
        self.host.close()
        if self._listener is not None:
            self._listener.close()
        unlink_socket(self.socket_path)
        if self._frontend is not None:
            self._frontend.close()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    # ------------------------------------------------------------------ front-end (QEMU)

    def _accept_frontend(self, mask: int) -> None:
        assert self._listener is not None
        sock, _ = self._listener.accept()
        if self._frontend is not None:
            log.warning("a second vhost-user front-end connected: refused")
            sock.close()
            return
        sock.setblocking(False)
        self._frontend = sock
        self._selector.register(sock, selectors.EVENT_READ, self._frontend_readable)
        log.info("vhost-user front-end connected on %s", self.socket_path)

    def _frontend_readable(self, mask: int) -> None:
        assert self._frontend is not None
        connection = self.backend.connection
        try:
            data, ancillary, flags, _ = self._frontend.recvmsg(connection.bytes_wanted(), _CMSG_SPACE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._frontend_gone(f"read failed: {exc}")
            return
        fds = _received_fds(ancillary)
        if not data:
            _close_fds(fds)
            self._frontend_gone("disconnected")
            return
        if flags & socket.MSG_CTRUNC:
            _close_fds(fds)
            self._frontend_gone("protocol error: descriptors were truncated")
            return
        try:
            connection.receive_data(data, fds)
            while (message := connection.next_request()) is not None:
                reply = self.backend.handle(message)
                if reply:
                    self._frontend.sendall(reply)
        except (VhostUserError, OSError) as exc:
            _close_fds(connection.close())
            self._frontend_gone(f"protocol error: {exc}")

    def _frontend_gone(self, why: str) -> None:
        log.info("vhost-user front-end %s: stopping the device", why)
        self._running = False

    # ------------------------------------------------------------------ Backend hooks

    def map_memory(self, regions: Sequence[MemoryRegion], fds: Sequence[int]) -> GuestMemory:
        memory = map_regions(regions, fds)
        log.info("guest memory: %s", ", ".join(f"{r.guest_addr:#x}+{r.size:#x}" for r in regions))
        return memory

    def unmap_memory(self, memory: GuestMemory) -> None:
        if isinstance(memory, MappedMemory):
            memory.unmap()

    def queues_changed(self) -> None:
        for fd in self._kicks:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(fd)
        self._kicks = []
        for vring in self.backend.vrings:
            if vring.queue is not None and vring.kick is not None and vring.queue.error is None:
                self._selector.register(vring.kick, selectors.EVENT_READ, self._kicked)
                self._kicks.append(vring.kick)
        online = all(v.queue is not None for v in self.backend.vrings)
        if self._online and not online:
            log.info("device stopped: every stream is reset")
            self.muxer.reset()
        self._online = self.muxer.online = online

    def _kicked(self, mask: int) -> None:
        for fd in self._kicks:  # which one does not matter: _pump looks at both queues
            with contextlib.suppress(BlockingIOError, OSError):
                os.read(fd, 8)

    # ------------------------------------------------------------------ the rings

    def _queue(self, index: int) -> Virtqueue | None:
        queue = self.backend.vrings[index].queue
        return None if queue is None or queue.error is not None else queue

    def _pump(self) -> None:
        """One batch: drain tx, fill rx, interrupt the guest once per queue, sync host sockets."""
        self._busy = True
        for _ in range(64):  # bounded: a guest that keeps the rings busy still lets sockets run
            self.host.sync()  # may queue packets (credit updates after writes to the host)
            moved = self._ring(TX, self._drain_tx) + self._ring(RX, self._fill_rx)
            if not moved and not self.muxer.changed:
                self._busy = False
                break
        for index in (RX, TX):
            queue = self._queue(index)
            if queue is not None and queue.needs_notify():
                self._signal(self.backend.vrings[index].call)

    def _ring(self, index: int, work: Callable[[Virtqueue], int]) -> int:
        queue = self._queue(index)
        if queue is None:
            return 0
        try:
            return work(queue)
        except RingError as exc:
            queue.error = queue.error or str(exc)  # errors found outside pop() stop it too
            log.error("vring %d stopped: %s", index, exc)
            self._signal(self.backend.vrings[index].err)
            self.queues_changed()
            return 0

    def _drain_tx(self, queue: Virtqueue) -> int:
        count = 0
        while (chain := queue.pop()) is not None or queue.enable_notifications():
            if chain is None:
                continue
            data = chain.read()
            queue.push(chain.head, 0)
            self.muxer.guest_packet(data)
            count += 1
        return count

    def _fill_rx(self, queue: Virtqueue) -> int:
        count = 0
        while self.muxer.has_rx():
            chain = queue.pop()
            if chain is None:
                break
            room = chain.writable_len - HEADER_SIZE
            if room < 0:
                raise RingError(f"rx buffer of {chain.writable_len} bytes cannot hold a packet header")
            packet = self.muxer.next_rx(room)
            if packet is None:
                queue.unpop()
                break
            header, payload = packet
            written = chain.write(header) + chain.write(payload, HEADER_SIZE)
            queue.push(chain.head, written)
            count += 1
        return count

    @staticmethod
    def _signal(fd: int | None) -> None:
        if fd is not None:
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(fd, _ONE)


def _received_fds(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            received = array.array("i")
            received.frombytes(data[: len(data) - len(data) % received.itemsize])
            fds.extend(received)
    return fds


def _close_fds(fds: Sequence[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def main(argv: Sequence[str] | None = None) -> int:
    """The device process's entry: ``--socket S --uds-path U --guest-cid N``; returns the exit
    status (0 when the front-end went away, 1 when a socket could not be bound). Run it as
    ``python -m kuasar.vmm.vsock_server ...``."""
    parser = argparse.ArgumentParser(prog="kuasar.vmm.vsock_server", description="vhost-user-vsock device")
    parser.add_argument("--socket", required=True, help="vhost-user socket (QEMU's chardev path)")
    parser.add_argument("--uds-path", required=True, help="hybrid vsock socket for host clients")
    parser.add_argument("--guest-cid", type=int, default=3)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    device = VsockDevice(args.socket, args.uds_path, args.guest_cid)
    signal.signal(signal.SIGTERM, lambda *_: device.stop())
    signal.signal(signal.SIGUSR1, lambda *_: log.info("state:\n  %s", "\n  ".join(device.describe())))
    try:
        device.run()
    except KuasarError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
