"""``kuasarctl sandbox run --vmm qemu``: a real kernel, kuasar-agent as its PID 1, every host command.

One guest for the module (``qemu_sandbox``); the last test stops it and checks that nothing is left.
Everything goes through the installed CLI, as an operator would type it.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.functional.tmux_helpers import Tmux, shows_prompt, wait_for
from tests.vm.conftest import QemuSandbox, process_gone

pytestmark = [pytest.mark.vm, pytest.mark.timeout(300)]


def test_pid_1_is_kuasar_agent_on_the_guests_own_kernel(qemu_sandbox: QemuSandbox) -> None:
    cmdline = qemu_sandbox.sh("tr '\\0' ' ' < /proc/1/cmdline")
    assert "-m kuasar.agent" in cmdline, cmdline
    release = qemu_sandbox.sh("uname -r").strip()
    assert release != os.uname().release
    assert release.endswith("-amd64"), release
    # Real AF_VSOCK in the guest: the agent's API and console listen on vsock ports 1024 and 1025.
    listening = qemu_sandbox.sh("ss -H --vsock --listen")
    assert "*:1024" in listening and "*:1025" in listening, listening


def test_ps_info_and_agent_see_a_qemu_guest(qemu_sandbox: QemuSandbox) -> None:
    done = qemu_sandbox.ctl("ps", "-o", "json")
    (row,) = json.loads(done.stdout)
    assert row["kind"] in ("qemu (tcg)", "qemu (kvm)") and row["state"] == "running", row
    assert row["guest"] == "kuasar-agent"
    info = qemu_sandbox.ctl("info", "{id}")
    assert info.returncode == 0 and b"Kernel:" in info.stdout, info.stderr
    assert os.uname().release.encode() not in info.stdout
    check = qemu_sandbox.ctl("agent", "{id}", "-c", "Check")
    assert check.returncode == 0, check.stderr


def test_exit_codes_stderr_and_stdin_eof(qemu_sandbox: QemuSandbox) -> None:
    done = qemu_sandbox.ctl("exec", "-t", "{id}", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (done.returncode, done.stdout, done.stderr) == (7, b"out\n", b"err\n")
    assert qemu_sandbox.ctl("exec", "-t", "{id}", "no-such-command-ksr").returncode == 127
    assert qemu_sandbox.ctl("exec", "-t", "{id}", "sh", "-c", "kill -KILL $$").returncode == 137
    data = os.urandom(300_000)
    done = qemu_sandbox.ctl("exec", "-i", "{id}", "sha256sum", input=data)
    assert done.returncode == 0 and done.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()


def test_console_exec_strips_its_markers(qemu_sandbox: QemuSandbox) -> None:
    done = qemu_sandbox.ctl("exec", "-t", "--console", "{id}", "sh", "-c", "echo 'a b'; echo e >&2; exit 3")
    assert done.returncode == 3, done.stderr
    assert done.stdout.replace(b"\r\n", b"\n") == b"a b\ne\n" or b"a b\n" in done.stdout
    assert b"__KSR" not in done.stdout and b"KSR_MODE" not in done.stdout


def test_cp_20_mb_round_trip_is_byte_exact(qemu_sandbox: QemuSandbox, tmp_path: object) -> None:
    source = os.path.join(str(tmp_path), "blob")
    data = os.urandom(20 << 20)
    with open(source, "wb") as file:
        file.write(data)
    assert qemu_sandbox.ctl("cp", source, "{id}:/tmp/blob", timeout=300).returncode == 0
    assert qemu_sandbox.sh("sha256sum /tmp/blob").split()[0] == hashlib.sha256(data).hexdigest()
    back = os.path.join(str(tmp_path), "back")
    assert qemu_sandbox.ctl("cp", "{id}:/tmp/blob", back, timeout=300).returncode == 0
    with open(back, "rb") as file:
        assert file.read() == data
    qemu_sandbox.sh("rm /tmp/blob")


def _start_ticking_container(sandbox: QemuSandbox, tmp_path: object) -> None:
    """A runc container in the guest printing ``tick N`` each 0.2 s (its bundle copied in with cp)."""
    from tests.functional.bundle import make_bundle, runc_skip_reason

    reason = runc_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    script = "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"
    bundle = make_bundle(os.path.join(str(tmp_path), "bundle"), ["sh", "-c", script])
    assert sandbox.ctl("cp", bundle, "{id}:/tmp/ticker").returncode == 0
    done = sandbox.ctl("container", "create", "--start", "{id}", "ticker", "/tmp/ticker")
    assert done.returncode == 0, done.stderr


def test_logs_follow_beside_eight_connections_and_a_pty_shell(
    qemu_sandbox: QemuSandbox, tmux: Tmux, tmp_path: object
) -> None:
    """A container in the guest (runc on cgroup2), ``logs -f`` of it, an ``exec -it`` shell in tmux
    with a resize, and six one-shot commands at once: eight connections through the device."""
    _start_ticking_container(qemu_sandbox, tmp_path)
    env = {**os.environ, "KUASAR_SOCKET_DIR": qemu_sandbox.root}
    follow = subprocess.Popen(
        [sys.executable, "-m", "kuasar.ctl", "logs", "-f", qemu_sandbox.id, "ticker"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        shell = (
            f"KUASAR_SOCKET_DIR={qemu_sandbox.root} {sys.executable} -m kuasar.ctl exec -it {qemu_sandbox.id}"
        )
        assert (
            tmux("new-session", "-d", "-x", "100", "-y", "30", "sh", "-c", f"{shell}; sleep 60").returncode
            == 0
        )
        assert wait_for(lambda: shows_prompt(tmux), timeout=60), tmux("capture-pane", "-p").stdout
        oneshots = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "kuasar.ctl",
                    "exec",
                    "-t",
                    qemu_sandbox.id,
                    "sh",
                    "-c",
                    f"sleep 1; echo n{n}",
                ],
                stdout=subprocess.PIPE,
                env=env,
            )
            for n in range(6)
        ]
        tmux("send-keys", 'echo "size=$(stty size)"', "Enter")
        assert wait_for(lambda: "size=30 100" in tmux("capture-pane", "-p").stdout, timeout=60)
        tmux("resize-window", "-x", "90", "-y", "25")
        tmux("send-keys", 'clear; echo "size=$(stty size)"', "Enter")
        assert wait_for(lambda: "size=25 90" in tmux("capture-pane", "-p").stdout, timeout=60)
        for n, process in enumerate(oneshots):
            out, _ = process.communicate(timeout=120)
            assert (process.returncode, out) == (0, f"n{n}\n".encode())
        assert follow.poll() is None, "logs -f ended on its own"
    finally:
        follow.send_signal(signal.SIGINT)
        out, _ = follow.communicate(timeout=30)
    ticks = [line for line in out.decode().splitlines() if line.startswith("tick ")]
    assert len(ticks) >= 5 and ticks[:3] == ["tick 0", "tick 1", "tick 2"], out[-300:]
    assert qemu_sandbox.ctl("container", "rm", "--force", "{id}", "ticker").returncode == 0


def test_a_killed_client_leaves_no_orphan_in_the_guest(qemu_sandbox: QemuSandbox) -> None:
    env = {**os.environ, "KUASAR_SOCKET_DIR": qemu_sandbox.root}
    client = subprocess.Popen(
        [sys.executable, "-m", "kuasar.ctl", "exec", "-t", qemu_sandbox.id, "sleep", "4242"],
        stdout=subprocess.DEVNULL,
        env=env,
    )
    try:
        assert wait_for(lambda: "sleep 4242" in qemu_sandbox.sh("ps -eo args"), timeout=60)
    finally:
        client.kill()
        client.wait(30)
    assert wait_for(lambda: "sleep 4242" not in qemu_sandbox.sh("ps -eo args"), timeout=60)
    zombies = qemu_sandbox.sh("ps -eo stat= | grep -c '^Z' || true").strip()
    assert zombies == "0", zombies


def test_a_burst_of_connects_is_accepted_not_reset(qemu_sandbox: QemuSandbox) -> None:
    """300 CONNECTs at once, none read until all are sent: the agent's listen backlog holds them all
    (the facts: a guest whose accept queue is full answers RST, a close without reply here)."""
    clients = []
    try:
        for _ in range(300):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            clients.append(sock)
            sock.settimeout(60)
            sock.connect(os.path.join(qemu_sandbox.directory, "task.socket"))
            sock.sendall(b"CONNECT 1024\n")
        replies = [sock.recv(64) for sock in clients]
    finally:
        for sock in clients:
            sock.close()
    assert all(reply.startswith(b"OK ") for reply in replies), [
        r for r in replies if not r.startswith(b"OK ")
    ]


def test_sandbox_logs_prints_the_serial_console(qemu_sandbox: QemuSandbox) -> None:
    done = qemu_sandbox.ctl("sandbox", "logs", "{id}")
    assert done.returncode == 0
    assert b"KUASAR-INIT: kernel up" in done.stdout and b"agent API on vsock://-1:1024" in done.stdout
    supervisor = qemu_sandbox.ctl("sandbox", "logs", "--supervisor", "{id}")
    assert b"guest ready after" in supervisor.stdout


def test_stop_powers_the_guest_off_and_leaves_nothing(qemu_sandbox: QemuSandbox) -> None:
    """Last in the module: it stops the module's guest."""
    with open(os.path.join(qemu_sandbox.directory, "sandbox.json"), encoding="utf-8") as file:
        state = json.load(file)
    pids = [state["supervisor_pid"], state["agent_pid"], state["device_pid"]]
    assert all(pids), state
    start = time.monotonic()
    done = qemu_sandbox.ctl("sandbox", "stop", "{id}")
    took = time.monotonic() - start
    assert done.returncode == 0 and done.stdout == f"{qemu_sandbox.id}\n".encode(), done.stderr
    assert not os.path.exists(qemu_sandbox.directory)
    for pid in pids:
        assert process_gone(pid), f"PID {pid} is still running"
    assert took < 10, f"stop took {took:.1f} s: the guest did not power off by itself"
