"""QEMU 7.2 (TCG) with a stock Debian 6.1 kernel talks to our vhost-user-vsock device: the facts
file's criteria (driver probe, CONNECT/OK from 2^30, no-listener refusal, concurrent streams with
hashes, bulk both ways, half-close, guest-initiated, a vanishing client, QEMU dying), each with
its number printed."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import statistics
import threading
import time
from collections.abc import Iterator

import pytest

from .qemu_vm import VM

pytestmark = [pytest.mark.vm, pytest.mark.timeout(300)]

NUMBERS: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    yield
    print("\n--- vm numbers ---")
    for name, value in NUMBERS.items():
        print(f"{name}: {value}")


def recv_exact(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(min(1 << 16, size - len(data)))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def recv_to_eof(sock: socket.socket) -> bytes:
    data = bytearray()
    while chunk := sock.recv(1 << 16):
        data += chunk
    return bytes(data)


def echo(vm: VM, data: bytes) -> tuple[bytes, float]:
    """Send ``data`` to the guest's echo while reading it back; returns it and the seconds taken."""
    sock, line = vm.client(1024)
    with sock:
        assert line.startswith(b"OK "), line
        start = time.perf_counter()
        sender = threading.Thread(target=sock.sendall, args=(data,))
        sender.start()
        got = recv_exact(sock, len(data))
        sender.join()
        return got, time.perf_counter() - start


def test_boot_and_driver_probe(vm: VM) -> None:
    NUMBERS["launch to first echo"] = f"{vm.ready_after:.2f} s"
    sock, line = vm.client(1026)
    with sock:
        assert line.startswith(b"OK ")
        info = recv_to_eof(sock).decode()
    release, device_id, *rest = info.splitlines()
    assert release == vm.image.release and release != os.uname().release
    assert device_id == "0x0013"  # virtio-vsock, bound to vmw_vsock_virtio_transport
    assert any(line.startswith("virtio") for line in rest)
    assert "10, 124" in info  # /dev/vsock


def test_connect_ok_from_2_30_and_round_trips(vm: VM) -> None:
    sock, line = vm.client(1024)
    with sock:
        port = int(line.split()[1])
        assert line == b"OK %d\n" % port and port >= 1 << 30
        sock.sendall(b"hello")
        assert recv_exact(sock, 5) == b"hello"
        rtts = []
        for _ in range(200):
            start = time.perf_counter()
            sock.sendall(b"x" * 64)
            assert recv_exact(sock, 64) == b"x" * 64
            rtts.append(time.perf_counter() - start)
    rtts.sort()
    NUMBERS["echo RTT 64 B"] = f"p50 {rtts[100] * 1e3:.2f} ms, p99 {rtts[198] * 1e3:.2f} ms"
    handshakes = []
    for _ in range(20):
        start = time.perf_counter()
        sock, line = vm.client(1024)
        sock.close()
        assert line.startswith(b"OK ")
        handshakes.append(time.perf_counter() - start)
    NUMBERS["CONNECT -> OK"] = f"median {statistics.median(handshakes) * 1e3:.2f} ms"


def test_no_listener_closes_without_reply(vm: VM) -> None:
    start = time.perf_counter()
    sock, line = vm.client(1099)
    with sock:
        assert line == b""
        assert sock.recv(1) == b""
    NUMBERS["CONNECT to no listener -> EOF"] = f"{(time.perf_counter() - start) * 1e3:.2f} ms"


def test_four_concurrent_streams_keep_their_bytes(vm: VM) -> None:
    payloads = [os.urandom(2 << 20) for _ in range(4)]
    results: list[bytes] = [b""] * 4

    def run(i: int) -> None:
        results[i] = echo(vm, payloads[i])[0]

    start = time.perf_counter()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    NUMBERS["4 x 2 MiB concurrent echo"] = f"{time.perf_counter() - start:.2f} s"
    for sent, got in zip(payloads, results, strict=True):
        assert hashlib.sha256(got).digest() == hashlib.sha256(sent).digest()


def test_bulk_host_to_guest_to_host(vm: VM) -> None:
    data = os.urandom(20 << 20)
    cpu_before = vm.cpu()
    got, seconds = echo(vm, data)
    device_cpu, qemu_cpu = (after - before for after, before in zip(vm.cpu(), cpu_before, strict=True))
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    rate = len(data) / seconds / 1e6
    NUMBERS["20 MiB echo"] = f"{rate:.1f} MB/s each way; CPU device {device_cpu:.2f} s, QEMU {qemu_cpu:.2f} s"


def test_bulk_guest_to_host_then_eof(vm: VM) -> None:
    sock, line = vm.client(1025)
    with sock:
        assert line.startswith(b"OK ")
        start = time.perf_counter()
        got = recv_to_eof(sock)  # the guest closes after the last byte: EOF, not a hang
        seconds = time.perf_counter() - start
    assert got == bytes(20 << 20)
    NUMBERS["20 MiB guest -> host"] = f"{len(got) / seconds / 1e6:.1f} MB/s"


def test_host_half_close_gets_the_echo_then_eof(vm: VM) -> None:
    sock, line = vm.client(1024)
    with sock:
        assert line.startswith(b"OK ")
        sock.sendall(b"the last words")
        sock.shutdown(socket.SHUT_WR)
        assert recv_to_eof(sock) == b"the last words"


def test_guest_initiated_connection_reaches_task_socket_port(vm: VM) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with listener:
        listener.bind(vm.uds + "_5000")
        listener.listen(1)
        listener.settimeout(30)
        start = time.perf_counter()
        accepted, _ = listener.accept()  # the guest retries every 0.5 s until this exists
        with accepted:
            accepted.settimeout(30)
            assert recv_to_eof(accepted) == b"hello from the guest\n"
        NUMBERS["guest -> host connect (incl. its retry wait)"] = f"{time.perf_counter() - start:.2f} s"


def test_a_client_vanishing_mid_transfer_leaves_the_device_serving(vm: VM) -> None:
    sock, line = vm.client(1024)
    assert line.startswith(b"OK ")
    with contextlib.suppress(OSError):
        sock.sendall(os.urandom(4 << 20)[: 1 << 20])
    sock.close()
    got, _ = echo(vm, b"still here")
    assert got == b"still here"
    assert vm.device is not None and vm.device.poll() is None


def test_qemu_dying_mid_transfer_ends_clients_and_the_device(vm: VM) -> None:
    """Last in the module: it kills this module's guest."""
    # Guest -> host (port 1025 streams 20 MiB): killed with most of it still to come. (An echo would
    # deadlock a sender that does not read once every buffer on the way is full.)
    sock, line = vm.client(1025)
    with sock:
        assert line.startswith(b"OK ")
        received = 0
        while received < 1 << 20:
            chunk = sock.recv(1 << 16)
            assert chunk, "the guest stopped sending before QEMU was killed"
            received += len(chunk)
        vm.kill_qemu()
        start = time.perf_counter()
        with contextlib.suppress(ConnectionResetError):
            recv_to_eof(sock)
        NUMBERS["QEMU killed -> client EOF/reset"] = f"{(time.perf_counter() - start) * 1e3:.1f} ms"
    assert vm.device is not None
    assert vm.device.wait(15) == 0  # the device exits by itself, cleanly
    assert not os.path.exists(vm.uds) and not os.path.exists(vm.vhost)
