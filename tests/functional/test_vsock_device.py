"""The vhost-user-vsock device process (kuasar.vmm.vsock_server) over real sockets, eventfds and a
memfd, driven by a stand-in for QEMU and the guest's vsock driver (vsock_guest.FakeVM): the hybrid
socket's CONNECT/OK, refusals, echo with credit flow control, guest-initiated connections,
half-close, a client vanishing mid-transfer, a bad guest ring, and QEMU going away."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kuasar.config import TEST_LIMITS
from kuasar.vmm.vsock_server import VsockDevice

from .vsock_guest import FakeVM

pytestmark = pytest.mark.timeout(60)


class Running:
    def __init__(self, directory: Path) -> None:
        self.vhost = str(directory / "vu.sock")
        self.uds = str(directory / "task.socket")
        self.device = VsockDevice(self.vhost, self.uds, 3, limits=TEST_LIMITS)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="device", daemon=True)
        self.thread.start()
        until(lambda: os.path.exists(self.vhost) and os.path.exists(self.uds))
        self.vm = FakeVM(self.vhost)
        self.vm.start()
        until(lambda: self.device.muxer.online)  # SET_VRING_ENABLE has no reply to wait for

    def _run(self) -> None:
        try:
            self.device.run()
        except BaseException as exc:
            self.error = exc

    def client(self, port: int, extra: bytes = b"") -> tuple[socket.socket, bytes]:
        """CONNECT ``port``; returns the socket and the reply line (b"" when closed without one)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(self.uds)
        sock.sendall(b"CONNECT %d\n" % port + extra)
        line = b""
        while not line.endswith(b"\n"):
            byte = sock.recv(1)
            if not byte:
                break
            line += byte
        return sock, line


def until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def recv_all(sock: socket.socket, size: int | None = None) -> bytes:
    data = bytearray()
    while size is None or len(data) < size:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return bytes(data)


@pytest.fixture
def running(short_tmpdir: Path) -> Iterator[Running]:
    run = Running(short_tmpdir)
    yield run
    run.vm.close()
    run.thread.join(10)
    run.vm.release()
    assert not run.thread.is_alive(), "the device did not stop when its front-end went away"
    assert run.error is None, f"the device crashed: {run.error!r}"
    assert not os.path.exists(run.uds) and not os.path.exists(run.vhost)


@pytest.fixture
def short_tmpdir() -> Iterator[Path]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="kvu") as directory:
        yield Path(directory)


def test_connect_ok_and_echo(running: Running) -> None:
    assert running.vm.guest_cid == 3
    sock, line = running.client(1024)
    with sock:
        assert line == b"OK 1073741824\n"
        sock.sendall(b"hello")
        assert recv_all(sock, 5) == b"hello"
    second, line = running.client(1024)
    second.close()
    assert line == b"OK 1073741825\n"


def test_bytes_after_the_connect_line_reach_the_guest(running: Running) -> None:
    sock, line = running.client(1024, extra=b"early")
    with sock:
        assert line == b"OK 1073741824\n"
        assert recv_all(sock, 5) == b"early"


def test_no_listener_and_malformed_lines_close_without_reply(running: Running) -> None:
    sock, line = running.client(1099)
    with sock:
        assert line == b"" and sock.recv(1) == b""
    assert ("REQUEST", 1 << 30, 1099) in running.vm.events  # the guest saw it, and answered RST
    bad = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with bad:
        bad.settimeout(10)
        bad.connect(running.uds)
        bad.sendall(b"Connect 1024\n")
        assert bad.recv(64) == b""


def test_a_megabyte_each_way_with_credit(running: Running) -> None:
    """The fake guest advertises 64 KiB: the device must stop and wait for credit, many times."""
    data = os.urandom(1 << 20)
    sock, line = running.client(1024)
    with sock:
        assert line.startswith(b"OK ")
        sender = threading.Thread(target=sock.sendall, args=(data,))
        sender.start()
        echoed = recv_all(sock, len(data))
        sender.join()
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(data).digest()


def test_guest_to_host_flood_then_close(running: Running) -> None:
    running.vm.flood_size = 2 << 20
    sock, line = running.client(1025)
    with sock:
        assert line.startswith(b"OK ")
        received = recv_all(sock)  # the guest closes after its last byte: EOF here
    assert len(received) == 2 << 20


def test_host_half_close_gets_the_answer_then_eof(running: Running) -> None:
    sock, line = running.client(1024)
    with sock:
        assert line.startswith(b"OK ")
        sock.sendall(b"question")
        sock.shutdown(socket.SHUT_WR)
        assert recv_all(sock) == b"question"


def test_guest_initiated_connection_to_task_socket_port(running: Running, short_tmpdir: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with listener:
        listener.bind(running.uds + "_5000")
        listener.listen(1)
        listener.settimeout(10)
        conn = running.vm.connect_out(5000)
        accepted, _ = listener.accept()
        with accepted:
            until(lambda: conn.established)
            accepted.sendall(b"ping")
            assert recv_all(accepted, 4) == b"ping"  # the guest side echoes


def test_guest_initiated_without_a_listener_is_reset(running: Running) -> None:
    conn = running.vm.connect_out(5999)
    assert conn.done.wait(10)
    assert not conn.established


def test_a_client_vanishing_mid_transfer_resets_only_its_stream(running: Running) -> None:
    sock, line = running.client(1024)
    assert line.startswith(b"OK ")
    sock.sendall(os.urandom(300_000))
    sock.close()  # gone, with echo data still coming back
    port = int(line.split()[1])
    until(lambda: ("RST", port, 1024) in running.vm.events and not running.vm.conns)
    again, line = running.client(1024)
    with again:
        again.sendall(b"still alive")
        assert recv_all(again, 11) == b"still alive"


def test_a_client_hanging_up_on_a_stalled_stream_resets_it(running: Running) -> None:
    """The guest never reads: no read interest, so only the hang-up check sees the close."""
    sock, line = running.client(1030)
    assert line.startswith(b"OK ")
    port = int(line.split()[1])
    sock.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        sock.send(os.urandom(1 << 20))  # far more than the guest's 64 KiB of credit
    until(
        lambda: (
            running.device.muxer.links
            and all(link.read_budget() == 0 for link in running.device.muxer.links.values())
        )
    )
    sock.close()
    until(lambda: ("RST", port, 1030) in running.vm.events, timeout=TEST_LIMITS.shutdown_grace + 5)
    assert not running.device.muxer.links


def test_a_bad_guest_ring_stops_the_queue_not_the_device(running: Running) -> None:
    vm = running.vm

    def hostile() -> None:  # a descriptor pointing outside guest memory, on the tx queue
        head = vm.tx._free.pop(0)
        vm.tx.write_desc(vm.tx.desc, head, 1 << 40, 64, 0, 0)
        vm.tx.publish(head)
        os.write(vm.kick[1], struct.pack("=Q", 1))

    vm.run_locked(hostile)
    until(lambda: _eventfd_count(vm.err[1]) > 0)
    assert running.thread.is_alive() and running.error is None
    # the front-end still gets answers
    vm.run_locked(lambda: None)
    assert os.path.exists(running.uds)


def _eventfd_count(fd: int) -> int:
    try:
        return struct.unpack("=Q", os.read(fd, 8))[0]
    except BlockingIOError:
        return 0


def test_a_device_reset_ends_streams_and_serves_again(running: Running) -> None:
    """A guest reboot: QEMU stops both rings (GET_VRING_BASE) and sets them up again."""
    sock, line = running.client(1024)
    with sock:
        assert line.startswith(b"OK ")
        sock.sendall(b"before")
        assert recv_all(sock, 6) == b"before"
        bases = running.vm.restart_rings()
        assert all(base > 0 for base in bases)  # where the device had got to on each ring
        with contextlib.suppress(ConnectionResetError):
            assert recv_all(sock) == b""  # the stream ended with the device
    until(lambda: running.device.muxer.online)
    again, line = running.client(1024)
    with again:
        assert line.startswith(b"OK ")
        again.sendall(b"after")
        assert recv_all(again, 5) == b"after"


def test_qemu_dying_mid_transfer_ends_every_client(short_tmpdir: Path) -> None:
    run = Running(short_tmpdir)
    sock, line = run.client(1024)
    with sock:
        assert line.startswith(b"OK ")
        sock.sendall(b"x" * 1000)
        run.vm.close()
        run.thread.join(10)
        assert not run.thread.is_alive() and run.error is None
        try:
            rest = recv_all(sock)
        except ConnectionResetError:
            rest = b""
        assert len(rest) <= 1000
    run.vm.release()
    assert not os.path.exists(run.uds)
