"""A stand-in for QEMU plus a guest kernel, for testing the vhost-user-vsock device without a VM.

``FakeVM`` connects to the device's vhost-user socket like QEMU 7.2 (the facts file's exact
message sequence, descriptors over SCM_RIGHTS, guest memory in a memfd), then plays the guest's
virtio-vsock driver in a thread: it keeps rx buffers posted, answers REQUESTs on its listening
ports, and runs a service per port: 1024 echo, 1025 "send N bytes then close", 1030 a reader that
never reads; and it can connect out to a host port. Credit is honoured both ways, so the device's
flow control is exercised.
"""

from __future__ import annotations

import array
import collections
import contextlib
import mmap
import os
import select
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from kuasar.vmm import vhost_user as vu
from kuasar.vmm.testing import GuestRing
from kuasar.vmm.vhost_user import ConfigSpace, MemoryRegion, Request, VringAddr, VringState
from kuasar.vmm.vsock_packet import HEADER_SIZE, HOST_CID, SHUTDOWN_BOTH, SHUTDOWN_SEND, Header, Op

MEM_SIZE = 8 << 20
USER_ADDR = 0x7F12_3400_0000  # what "QEMU" says its mapping is at
RX_BUF = 3776  # the 6.1 guest's rx buffer: header and payload in one descriptor (facts §3)
QUEUE = 128


def _hdr(request: int, payload: bytes = b"", flags: int = vu.VERSION) -> bytes:
    return struct.pack("<III", request, flags, len(payload)) + payload


@dataclass
class GuestConn:
    local: int  # the guest's port
    peer: int  # the host's port
    service: str
    received: bytearray = field(default_factory=bytearray)
    outbox: bytearray = field(default_factory=bytearray)
    fwd_cnt: int = 0
    tx_cnt: int = 0
    peer_buf_alloc: int = 0
    peer_fwd_cnt: int = 0
    established: bool = False
    closing: bool = False
    peer_shutdown: int = 0
    total_in: int = 0
    done: threading.Event = field(default_factory=threading.Event)

    def credit(self) -> int:
        return self.peer_buf_alloc - (self.tx_cnt - self.peer_fwd_cnt)


class FakeVM:
    """QEMU's vhost-user front-end and a guest vsock driver over one device socket."""

    def __init__(self, socket_path: str, *, cid: int = 3, buf_alloc: int = 64 * 1024) -> None:
        self.cid = cid
        self.buf_alloc = buf_alloc
        fd = os.memfd_create("fake-guest", os.MFD_CLOEXEC)
        os.ftruncate(fd, MEM_SIZE)
        self._memfd = fd
        self.memory = mmap.mmap(fd, MEM_SIZE)
        half = MEM_SIZE // 2
        self.rx = GuestRing(self.memory, QUEUE, base=0x1000, heap=(0x100000, half))
        self.tx = GuestRing(self.memory, QUEUE, base=0x8000, heap=(half, MEM_SIZE))
        self.kick = [os.eventfd(0, os.EFD_NONBLOCK) for _ in range(2)]
        self.call = [os.eventfd(0, os.EFD_NONBLOCK) for _ in range(2)]
        self.err = [os.eventfd(0, os.EFD_NONBLOCK) for _ in range(2)]
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(socket_path)
        self.conns: dict[tuple[int, int], GuestConn] = {}
        self.listening = {1024: "echo", 1025: "flood", 1030: "stall"}
        self.flood_size = 0
        self.events: collections.deque[tuple[str, int, int]] = collections.deque(maxlen=1000)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_port = 50000
        self._pending: list[bytes] = []

    # ------------------------------------------------------------ the QEMU side

    def send(self, data: bytes, fds: list[int] | None = None) -> None:
        if fds:
            self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        else:
            self.sock.sendall(data)

    def recv_reply(self) -> bytes:
        head = self._recv_exact(12)
        _, flags, size = struct.unpack("<III", head)
        assert flags & vu.FLAG_REPLY, f"not a reply: flags {flags:#x}"
        return self._recv_exact(size)

    def _recv_exact(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("the device closed the vhost-user socket")
            data += chunk
        return data

    def handshake(self) -> None:
        """Realize, then DRIVER_OK, as QEMU 7.2's vhost-user-vsock-pci does (facts file)."""
        self.send(_hdr(Request.GET_FEATURES))
        self.features = struct.unpack("<Q", self.recv_reply())[0]
        self.send(_hdr(Request.GET_PROTOCOL_FEATURES))
        assert struct.unpack("<Q", self.recv_reply())[0] == 0x208
        self.send(_hdr(Request.SET_PROTOCOL_FEATURES, struct.pack("<Q", 0x208)))
        self.send(_hdr(Request.SET_OWNER))
        self.send(_hdr(Request.GET_FEATURES))
        self.recv_reply()
        for i in range(2):
            self.send(_hdr(Request.SET_VRING_CALL, struct.pack("<Q", i)), [self.call[i]])
            self.send(_hdr(Request.SET_VRING_ERR, struct.pack("<Q", i)), [self.err[i]])
        self.send(_hdr(Request.GET_CONFIG, ConfigSpace(0, 0, bytes(8)).encode()))
        config = ConfigSpace.decode(self.recv_reply())
        self.guest_cid = struct.unpack("<Q", config.data)[0]
        for i in range(2):
            self.send(_hdr(Request.SET_VRING_CALL, struct.pack("<Q", i)), [self.call[i]])
        self.send(_hdr(Request.SET_FEATURES, struct.pack("<Q", 0x150000000)))
        table = vu.encode_memory_table([MemoryRegion(0, MEM_SIZE, USER_ADDR, 0)])
        self.send(_hdr(Request.SET_MEM_TABLE, table, vu.VERSION | vu.FLAG_NEED_REPLY), [self._memfd])
        assert struct.unpack("<Q", self.recv_reply())[0] == 0, "SET_MEM_TABLE failed"
        self._set_up_rings()

    def _set_up_rings(self) -> None:
        for i, ring in enumerate((self.rx, self.tx)):
            self.send(_hdr(Request.SET_VRING_NUM, VringState(i, QUEUE).encode()))
            self.send(_hdr(Request.SET_VRING_BASE, VringState(i, 0).encode()))
            addr = VringAddr(i, 0, USER_ADDR + ring.desc, USER_ADDR + ring.used, USER_ADDR + ring.avail, 0)
            self.send(_hdr(Request.SET_VRING_ADDR, addr.encode()))
            self.send(_hdr(Request.SET_VRING_KICK, struct.pack("<Q", i)), [self.kick[i]])
        for i in range(2):
            self.send(_hdr(Request.SET_VRING_ENABLE, VringState(i, 1).encode()))
        with self._lock:
            for _ in range(QUEUE // 2):
                self.rx.add(writable=[RX_BUF])
        self._kick(0)

    def restart_rings(self) -> list[int]:
        """The guest resets the device (a reboot): GET_VRING_BASE stops both rings, then the rings
        are laid out anew and started again. Returns the bases the device reported."""
        with self._lock:
            bases = []
            for i in range(2):
                self.send(_hdr(Request.GET_VRING_BASE, VringState(i, 0).encode()))
                bases.append(VringState.decode(self.recv_reply()).num)
            self.memory[0x1000:0x100000] = bytes(0x100000 - 0x1000)
            half = MEM_SIZE // 2
            self.rx = GuestRing(self.memory, QUEUE, base=0x1000, heap=(0x100000, half))
            self.tx = GuestRing(self.memory, QUEUE, base=0x8000, heap=(half, MEM_SIZE))
            self.conns.clear()
            self._pending.clear()
            self._set_up_rings()
        return bases

    def start(self) -> None:
        self.handshake()
        self._thread = threading.Thread(target=self._run, name="fake-guest", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """QEMU dies: the vhost-user socket closes."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.sock.close()

    def release(self) -> None:
        for fd in (*self.kick, *self.call, *self.err, self._memfd):
            os.close(fd)
        self.memory.close()

    # ------------------------------------------------------------ the guest driver

    def _kick(self, index: int) -> None:
        os.write(self.kick[index], struct.pack("=Q", 1))

    def _run(self) -> None:
        while not self._stop.is_set():
            select.select([self.call[0], self.call[1]], [], [], 0.01)
            for fd in self.call:
                with contextlib.suppress(BlockingIOError):
                    os.read(fd, 8)
            with self._lock:
                self._receive()
                self._transmit()

    def _receive(self) -> None:
        reposted = 0
        for head, written in self.rx.take_used():
            data = self.rx.written(head, written)
            self.rx.recycle(head)
            self.rx.add(writable=[RX_BUF])
            reposted += 1
            self._packet(Header.decode(data), data[HEADER_SIZE:written])
        if reposted:
            self._kick(0)

    def _packet(self, header: Header, payload: bytes) -> None:
        key = (header.dst_port, header.src_port)
        self.events.append((Op(header.op).name, header.src_port, header.dst_port))
        conn = self.conns.get(key)
        if header.op == Op.REQUEST:
            service = self.listening.get(header.dst_port)
            if service is None or conn is not None:
                self._queue(header.dst_port, header.src_port, Op.RST)
                return
            conn = GuestConn(header.dst_port, header.src_port, service, established=True)
            self.conns[key] = conn
            self._credit(conn, header)
            self._queue_conn(conn, Op.RESPONSE)
            if service == "flood":
                conn.outbox += os.urandom(16) * (self.flood_size // 16)
                conn.closing = True
            return
        if conn is None:
            if header.op != Op.RST:
                self._queue(header.dst_port, header.src_port, Op.RST)
            return
        self._credit(conn, header)
        if header.op == Op.RESPONSE:
            conn.established = True
        elif header.op == Op.RW:
            conn.total_in += len(payload)
            if conn.service != "stall":  # a stalled reader never consumes: its credit runs out
                conn.fwd_cnt += len(payload)  # consumed at once
            if conn.service == "echo":
                conn.outbox += payload
            else:
                conn.received += payload
        elif header.op == Op.SHUTDOWN:
            conn.peer_shutdown |= header.flags
            if conn.peer_shutdown & SHUTDOWN_SEND:
                conn.closing = True
        elif header.op == Op.RST:
            del self.conns[key]
            conn.done.set()
        elif header.op == Op.CREDIT_REQUEST:
            self._queue_conn(conn, Op.CREDIT_UPDATE)

    def _credit(self, conn: GuestConn, header: Header) -> None:
        conn.peer_buf_alloc, conn.peer_fwd_cnt = header.buf_alloc, header.fwd_cnt

    def _transmit(self) -> None:
        for head, _ in self.tx.take_used():
            self.tx.recycle(head)
        sent = False
        for conn in list(self.conns.values()):
            while conn.outbox and conn.established and conn.credit() > 0 and self._tx_room():
                size = min(len(conn.outbox), conn.credit(), 4096)
                self._queue_conn(conn, Op.RW, payload=bytes(conn.outbox[:size]))
                del conn.outbox[:size]
                conn.tx_cnt += size
                sent = True
            if conn.closing and not conn.outbox and conn.established and self._tx_room():
                self._queue_conn(conn, Op.SHUTDOWN, flags=SHUTDOWN_BOTH)
                conn.established = False  # wait for the device's RST
                sent = True
        if sent or self._pending:
            self._flush_tx()

    def _tx_room(self) -> bool:
        return self.tx.free_descriptors > 4

    def _queue(
        self, local: int, peer: int, op: int, *, flags: int = 0, payload: bytes = b"", fwd: int = 0
    ) -> None:
        header = Header(self.cid, HOST_CID, local, peer, len(payload), 1, op, flags, self.buf_alloc, fwd)
        self._pending.append(header.encode() + payload)

    def _queue_conn(self, conn: GuestConn, op: int, *, flags: int = 0, payload: bytes = b"") -> None:
        self._queue(conn.local, conn.peer, op, flags=flags, payload=payload, fwd=conn.fwd_cnt)

    def _flush_tx(self) -> None:
        while self._pending and self._tx_room():
            packet = self._pending.pop(0)
            self.tx.add(
                [packet[:HEADER_SIZE], packet[HEADER_SIZE:]] if len(packet) > HEADER_SIZE else [packet]
            )
        self._kick(1)

    # ------------------------------------------------------------ test controls

    def connect_out(self, host_port: int) -> GuestConn:
        """The guest connects to host ``host_port`` (CID 2); returns the connection (echo service)."""
        with self._lock:
            local = self._next_port
            self._next_port += 1
            conn = GuestConn(local, host_port, "echo")
            self.conns[(local, host_port)] = conn
            self._queue(local, host_port, Op.REQUEST)
            self._flush_tx()
        return conn

    def run_locked(self, action: Callable[[], None]) -> None:
        with self._lock:
            action()
