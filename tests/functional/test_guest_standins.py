"""The guest stand-ins (tests/functional/guests.py) answer as the real peers do, byte for byte.

Raw sockets only: nothing of kuasar's client side is used, so these tests pin the stand-ins to the
wire facts before kuasarctl is tested against them.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import subprocess
import sys
import time

import pytest

from kuasar.proto import health_pb2, sandbox_pb2, ttrpc_pb2
from tests.functional.guests import (
    Guest,
    as_nobody,
    booting_guest,
    crashed_vmm,
    denied_guest,
    guest_vm,
    hung_vmm,
    kata_guest,
    missing_root,
    mute_guest,
    run_guest,
    vmm_task_guest,
)
from tests.functional.guests_peers import exec_failure
from tests.functional.guests_raw import (
    call,
    hvsock,
    recv_frame,
    request,
    send_frame,
    status,
)
from tests.functional.guests_rustfmt import lossy, rust_debug_str

__all__ = ["booting_guest", "crashed_vmm", "denied_guest", "hung_vmm", "kata_guest", "missing_root"]
__all__ += ["mute_guest", "vmm_task_guest"]

SANDBOX = "grpc.SandboxService"
INVALID_ARGUMENT, UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED = 3, 2, 4, 12


def exec_vm(
    sock: socket.socket, stream_id: int, command: str, stdin: bytes = b"", **kw: int
) -> tuple[int, str, str]:
    payload = sandbox_pb2.ExecVMProcessRequest(command=command, stdin=stdin).SerializeToString()
    resp = call(sock, stream_id, SANDBOX, "ExecVMProcess", payload, **kw)
    out = sandbox_pb2.ExecVMProcessResponse.FromString(resp.payload).out
    return resp.status.code, resp.status.message, out


# --- Rust formatting -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "debug"),
    [
        ("plain text, 'quotes' kept", "\"plain text, 'quotes' kept\""),
        ('a"b\\c', '"a\\"b\\\\c"'),
        ("\n\t\r\0", '"\\n\\t\\r\\0"'),
        ("\x1b[0m\x7f\x01", '"\\u{1b}[0m\\u{7f}\\u{1}"'),
        ("é日本\U0001f600", '"é日本\U0001f600"'),  # printable non-ASCII is written as is
        ("e\u0301", '"e\\u{301}"'),  # a combining mark (Grapheme_Extend) is escaped
        ("\u00a0\u200b\u2028\ufeff", '"\\u{a0}\\u{200b}\\u{2028}\\u{feff}"'),
        ("\ufffd", '"\ufffd"'),  # the replacement char from a lossy decode stays
        ("\u0378", '"\\u{378}"'),  # unassigned
    ],
)
def test_rust_debug_str(text: str, debug: str) -> None:
    assert rust_debug_str(text) == debug


def test_lossy_matches_from_utf8_lossy() -> None:
    # Rust's documented example, and one U+FFFD per maximal ill-formed subsequence.
    assert lossy(b"Hello \xf0\x90\x80World") == "Hello \ufffdWorld"
    assert lossy(b"\xff\xfe") == "\ufffd\ufffd"
    assert lossy(b"\xed\xa0\x80") == "\ufffd" * 3  # an encoded surrogate


# --- vmm-task: ttrpc ---------------------------------------------------------------------------


def test_vmm_task_layout(vmm_task_guest: Guest) -> None:
    st = os.stat(vmm_task_guest.socket)
    assert vmm_task_guest.socket == os.path.join(vmm_task_guest.root, "vmm-task-1", "task.vsock")
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert sorted(os.listdir(vmm_task_guest.directory)) == ["task.vsock"]
    assert vmm_task_guest.console_port is None


def test_vmm_task_health_and_check(vmm_task_guest: Guest) -> None:
    with hvsock(vmm_task_guest.socket, 1024) as sock:
        resp = call(sock, 1, "grpc.Health", "Check", health_pb2.CheckRequest().SerializeToString())
        assert status(resp) == (INVALID_ARGUMENT, "grpc.Health service does not exist")
        resp = call(sock, 3, "kuasar.agent.v1.Agent", "Ping")
        assert status(resp) == (INVALID_ARGUMENT, "kuasar.agent.v1.Agent service does not exist")
        resp = call(sock, 5, SANDBOX, "NoSuchMethod")
        assert status(resp) == (UNIMPLEMENTED, "NoSuchMethod method")
        send_frame(sock, 7, 1, request(SANDBOX, "Check"))
        assert recv_frame(sock) == (7, 2, 0, b"\x0a\x00")  # Rust: an empty status, present; no payload


def test_vmm_task_frame_rules(vmm_task_guest: Guest) -> None:
    with hvsock(vmm_task_guest.socket, 1024) as sock:
        resp = call(sock, 2, SANDBOX, "Check")
        assert status(resp) == (INVALID_ARGUMENT, "stream id must be odd")
        send_frame(sock, 9, 3, b"")
        _, _, _, data = recv_frame(sock)
        assert b"Stream is no longer active" in data
        send_frame(sock, 11, 9, b"junk")  # unknown type: ignored
        assert status(call(sock, 13, SANDBOX, "Check")) == (0, "")


def test_vmm_task_oversize_frame_drops_the_connection(vmm_task_guest: Guest) -> None:
    with hvsock(vmm_task_guest.socket, 1024) as sock:
        sock.sendall(b"\x00\x40\x00\x01" + b"\x00\x00\x00\x01\x01\x00")  # 4 MiB + 1, no body yet
        assert sock.recv(1) == b""  # Rust 0.7.1: the reader errors out, no reply


def test_exec_vm_process_success_stdin_and_journal(vmm_task_guest: Guest) -> None:
    mark = vmm_task_guest.mark()
    with hvsock(vmm_task_guest.socket, 1024) as sock:
        assert exec_vm(sock, 1, "printf 'a b\\n'; echo $0") == (0, "", "a b\n/bin/bash\n")
        assert exec_vm(sock, 3, "cat; echo", b"in\x00put") == (0, "", "in\x00put\n")
        assert exec_vm(sock, 5, "cat | wc -c") == (0, "", "0\n")  # no stdin: empty
        assert exec_vm(sock, 7, "pwd; echo $PATH") == (0, "", "/\n/bin:/sbin/:/usr/bin/:/usr/sbin/\n")
        assert exec_vm(sock, 9, "printf 'x\\377y'") == (0, "", "x\ufffdy")
        assert exec_vm(sock, 11, "[[ -n $BASH_VERSION ]] && echo bash") == (0, "", "bash\n")
        assert exec_vm(sock, 13, "echo out; echo err >&2") == (0, "", "out\n")  # stderr dropped on 0
    calls = vmm_task_guest.exec_calls(mark)
    assert [c.command for c in calls][:2] == ["printf 'a b\\n'; echo $0", "cat; echo"]
    assert calls[1].stdin == b"in\x00put" and calls[0].stdin == b""
    assert {(c.port, c.service) for c in vmm_task_guest.calls(mark)} == {(1024, SANDBOX)}


def test_exec_vm_process_failure_text(vmm_task_guest: Guest) -> None:
    with hvsock(vmm_task_guest.socket, 1024) as sock:
        code, message, out = exec_vm(sock, 1, "echo out; exit 3")
        assert (code, out) == (UNKNOWN, "")  # stdout is lost when the exit code is not 0
        assert message == 'Others("Other: cmd echo out; exit 3 failed with exit code 3 and error message ")'
        command = "printf 'e\"\\\\\\t\\r\\033\\377\\n' >&2; false"
        code, message, _ = exec_vm(sock, 3, command)
        # Rust's {:?}: the command and stderr both sit inside the escaped string.
        expected = (
            "Others(\"Other: cmd printf 'e\\\"\\\\\\\\\\\\t\\\\r\\\\033\\\\377\\\\n' >&2; false failed with "
            'exit code 1 and error message e\\"\\\\\\t\\r\\u{1b}\ufffd\\n")'
        )
        assert (code, message) == (UNKNOWN, expected)
        assert message == exec_failure(command, 1, b'e"\\\t\r\x1b\xff\n')


@pytest.mark.parametrize(
    ("command", "code"), [("kill -KILL $$", 137), ("kill -TERM $$", 143), ("exit 255", 255)]
)
def test_exec_vm_process_exit_codes(vmm_task_guest: Guest, command: str, code: int) -> None:
    with hvsock(vmm_task_guest.socket, 1024) as sock:
        assert exec_vm(sock, 1, command)[:2] == (UNKNOWN, exec_failure(command, code, b""))


def test_exec_vm_process_timeout(vmm_task_guest: Guest) -> None:
    mark = vmm_task_guest.mark()
    with hvsock(vmm_task_guest.socket, 1024) as sock:
        started = time.monotonic()
        assert exec_vm(sock, 1, "sleep 30", timeout_nano=300_000_000)[:2] == (DEADLINE_EXCEEDED, "timeout")
        assert time.monotonic() - started < 5
        assert status(call(sock, 3, SANDBOX, "Check")) == (0, "")  # the connection is still usable
    assert vmm_task_guest.calls(mark)[0].timeout_nano == 300_000_000


def test_exec_vm_process_stdin_not_read(vmm_task_guest: Guest) -> None:
    with hvsock(vmm_task_guest.socket, 1024) as sock:
        code, message, _ = exec_vm(sock, 1, "exit 0", b"x" * (1 << 20))
        assert (code, message) == (
            UNKNOWN,
            'Others("failed to write stdin error: Broken pipe (os error 32)")',
        )


def test_exec_vm_process_writes_all_stdin_before_reading_output(vmm_task_guest: Guest) -> None:
    # spawn_and_wait writes (and closes) the whole stdin before it reads stdout: a command that
    # echoes a large stdin back fills its stdout pipe and the call never completes.
    with hvsock(vmm_task_guest.socket, 1024) as sock:
        code, message, _ = exec_vm(sock, 1, "cat", b"y" * (3 << 20), timeout_nano=1_000_000_000)
        assert (code, message) == (DEADLINE_EXCEEDED, "timeout")
        assert exec_vm(sock, 3, "cat", b"y" * 1000) == (0, "", "y" * 1000)  # small is fine


def test_vmm_task_has_no_console(vmm_task_guest: Guest) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(vmm_task_guest.socket)
        sock.sendall(b"CONNECT 1025\n")
        assert sock.recv(64) == b""  # the VMM closes a CONNECT to a port nothing listens on


# --- Kata agent: ttrpc ---------------------------------------------------------------------------


def test_kata_health_and_version(kata_guest: Guest) -> None:
    mark = kata_guest.mark()
    with hvsock(kata_guest.socket, 1024) as sock:
        resp = call(sock, 1, "grpc.Health", "Check", health_pb2.CheckRequest(service="x").SerializeToString())
        assert status(resp) == (0, "")
        assert health_pb2.HealthCheckResponse.FromString(resp.payload).status == 1  # SERVING
        resp = call(sock, 3, "grpc.Health", "Version", health_pb2.CheckRequest().SerializeToString())
        version = health_pb2.VersionCheckResponse.FromString(resp.payload)
        assert (version.agent_version, version.grpc_version) == ("4.1.0", "0.0.1")
        assert status(call(sock, 5, "grpc.Health", "Watch")) == (UNIMPLEMENTED, "Watch method")
        for service in ("kuasar.agent.v1.Agent", SANDBOX, "containerd.task.v2.Task"):
            resp = call(sock, 7, service, "Check")
            assert status(resp) == (INVALID_ARGUMENT, f"{service} service does not exist")
    assert [c.method for c in kata_guest.calls(mark)][:2] == ["Check", "Version"]


def test_kata_oversize_frame_is_answered(kata_guest: Guest) -> None:
    with hvsock(kata_guest.socket, 1024) as sock:
        send_frame(sock, 1, 1, b"\x00" * ((4 << 20) + 1))
        stream_id, _, _, data = recv_frame(sock)
        assert stream_id == 1 and b"message length 4194305 exceed maximum message size of 4194304" in data
        assert status(call(sock, 3, "grpc.Health", "Check")) == (0, "")  # Rust 0.9: still usable


# --- failure shapes ------------------------------------------------------------------------------


def test_crashed_vmm_refuses(crashed_vmm: Guest) -> None:
    assert stat.S_ISSOCK(os.stat(crashed_vmm.socket).st_mode)
    with socket.socket(socket.AF_UNIX) as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(crashed_vmm.socket)


def test_booting_guest_closes_every_connect(booting_guest: Guest) -> None:
    for port in (1024, 1025, 1026):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(booting_guest.socket)
            sock.sendall(b"CONNECT %d\n" % port)
            assert sock.recv(64) == b""


def test_hung_vmm_never_answers(hung_vmm: Guest) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(1.0)
        sock.connect(hung_vmm.socket)
        sock.sendall(b"CONNECT 1024\n")
        with pytest.raises(TimeoutError):
            sock.recv(64)


def test_mute_guest_says_ok_then_nothing(mute_guest: Guest) -> None:
    with hvsock(mute_guest.socket, 1024, timeout=1.0) as sock:
        send_frame(sock, 1, 1, request("grpc.Health", "Check"))
        with pytest.raises(TimeoutError):
            sock.recv(64)


def test_missing_root(missing_root: Guest) -> None:
    assert not os.path.exists(missing_root.root)
    assert os.path.isdir(os.path.dirname(missing_root.root))
    with socket.socket(socket.AF_UNIX) as sock, pytest.raises(FileNotFoundError):
        sock.connect(missing_root.socket)


def test_denied_socket_for_nobody(denied_guest: Guest) -> None:
    probe = "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])"
    argv = as_nobody([sys.executable, "-I", "-c", probe, denied_guest.socket])
    done = subprocess.run(argv, capture_output=True, timeout=30, check=False)
    assert done.returncode == 1 and b"PermissionError" in done.stderr, done.stderr
    assert os.stat(denied_guest.socket).st_uid == 0
    os.stat(denied_guest.directory)  # the directories are open to all: only the socket is not
    assert stat.S_IMODE(os.stat(denied_guest.directory).st_mode) == 0o755
    with hvsock(denied_guest.socket, 1024) as sock:  # root still gets in
        assert status(call(sock, 1, SANDBOX, "Check")) == (0, "")


def test_kuasarctl_layout_name() -> None:
    with run_guest("vmm-task", layout="kuasarctl", sandbox_id="pod-x") as guest:
        assert guest.socket.endswith("/pod-x/task.socket")
        with hvsock(guest.socket, 1024) as sock:
            assert status(call(sock, 1, SANDBOX, "Check")) == (0, "")
        pid = guest.pid
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # stopped and reaped
    assert not os.path.exists(guest.root)


def test_boot_delay_guest_listens_later() -> None:
    with run_guest("vmm-task", boot_delay=1.0) as guest:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(guest.socket)  # the VMM is up
            sock.sendall(b"CONNECT 1024\n")
            assert sock.recv(64) == b""  # the guest is not
        time.sleep(1.5)
        with hvsock(guest.socket, 1024) as sock:
            assert status(call(sock, 1, SANDBOX, "Check")) == (0, "")


@pytest.mark.asyncio
async def test_in_process_guest_from_async_code() -> None:
    async with guest_vm("kata-agent", console=False) as guest:
        reader, writer = await asyncio.open_unix_connection(guest.socket)
        writer.write(b"CONNECT 1024\n")
        assert (await reader.readline()).startswith(b"OK ")
        data = request("grpc.Health", "Check")
        writer.write(len(data).to_bytes(4, "big") + b"\x00\x00\x00\x01\x01\x00" + data)
        header = await reader.readexactly(10)
        body = await reader.readexactly(int.from_bytes(header[:4], "big"))
        resp = ttrpc_pb2.Response.FromString(body)
        assert header[4:] == b"\x00\x00\x00\x01\x02\x00"
        assert health_pb2.HealthCheckResponse.FromString(resp.payload).status == 1
        writer.close()
        await writer.wait_closed()
        assert guest.calls()[0].path == "/grpc.Health/Check"
    assert not os.path.exists(guest.root)
