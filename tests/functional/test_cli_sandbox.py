"""``kuasarctl sandbox run|stop`` and ``ps`` against real local sandboxes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import pytest

from kuasar.sandbox.supervisor import read_state
from tests.functional.cli_helpers import (
    kuasarctl,
    local_sandbox,
    pids_with_cmdline,
    short_tmpdir,
)


def test_run_ps_exec_stop_lifecycle() -> None:
    with local_sandbox("pod-life-1") as sandbox:
        directory = os.path.join(sandbox.root, sandbox.id)
        assert os.stat(directory).st_mode & 0o777 == 0o700
        assert os.stat(os.path.join(directory, "task.socket")).st_mode & 0o777 == 0o600

        listing = kuasarctl("ps", "-d", sandbox.root, "-o", "json")
        assert listing.returncode == 0, listing.stderr
        (row,) = json.loads(listing.stdout)
        assert (row["id"], row["kind"], row["guest"], row["reachable"]) == (
            "pod-life-1",
            "local",
            "kuasar-agent",
            "yes",
        )

        table = kuasarctl("ps", "-d", sandbox.root).stdout.decode().splitlines()
        assert table[0].split()[:5] == ["ID", "KIND", "GUEST", "REACHABLE", "AGE"]
        assert table[1].split()[:4] == ["pod-life-1", "local", "kuasar-agent", "yes"]

        assert kuasarctl("ps", "-q", "-d", sandbox.root).stdout == b"pod-life-1\n"

        stopped = kuasarctl("sandbox", "stop", "-d", sandbox.root, "pod-life")
        assert (stopped.returncode, stopped.stdout) == (0, b"pod-life-1\n")
        assert not os.path.exists(directory)
        assert kuasarctl("ps", "-q", "-d", sandbox.root).stdout == b""


def test_sandbox_gets_its_own_namespaces_as_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("namespaces need root")
    with local_sandbox("pod-ns-1") as sandbox:
        hostname = sandbox.exec("hostname")
        assert hostname.stdout == b"pod-ns-1\n"
        init = sandbox.exec("cat", "/proc/1/cmdline")
        assert b"kuasar.agent.main" in init.stdout
        assert (
            os.readlink("/proc/self/ns/pid")
            != sandbox.exec("readlink", "/proc/self/ns/pid").stdout.decode().strip()
        )


def test_agent_as_pid_1_reaps_orphans() -> None:
    if os.geteuid() != 0:
        pytest.skip("namespaces need root")
    with local_sandbox("pod-reap-1") as sandbox:
        # setsid puts the sleep out of reach of exec's clean-up: it is re-parented to PID 1.
        assert sandbox.exec("sh", "-c", "setsid sleep 0.2 & echo started").stdout == b"started\n"
        deadline = time.monotonic() + 10
        states = b"Z"
        while b"Z" in states and time.monotonic() < deadline:
            time.sleep(0.3)
            states = sandbox.exec("ps", "-eo", "stat=").stdout
        assert b"Z" not in states


def test_generated_id_is_printed_and_usable() -> None:
    root = short_tmpdir()
    try:
        started = kuasarctl("sandbox", "run", "-d", root)
        assert started.returncode == 0, started.stderr
        sandbox_id = started.stdout.decode().strip()
        assert len(sandbox_id) == 64 and int(sandbox_id, 16) >= 0
        result = kuasarctl("exec", "-d", root, sandbox_id[:6], "echo", "ok")
        assert result.stdout == b"ok\n"
        assert kuasarctl("sandbox", "stop", "-d", root, sandbox_id[:6]).returncode == 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_duplicate_name_and_bad_names_are_refused() -> None:
    with local_sandbox("pod-dup") as sandbox:
        again = kuasarctl("sandbox", "run", "-d", sandbox.root, "--name", "pod-dup")
        assert again.returncode == 125
        assert again.stderr.decode().startswith("Error: sandbox pod-dup already exists")
    bad = kuasarctl("sandbox", "run", "-d", "/tmp", "--name", "../evil")
    assert bad.returncode == 2
    assert "invalid sandbox name" in bad.stderr.decode()


def test_crashed_sandbox_shows_unreachable_and_stop_cleans_it() -> None:
    with local_sandbox("pod-crash") as sandbox:
        directory = os.path.join(sandbox.root, sandbox.id)
        state = read_state(directory)
        assert state is not None
        guest = pids_with_cmdline(f"{directory}/vsock/1025.sock")
        assert state.agent_pid in guest
        os.killpg(state.supervisor_pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while os.path.exists(f"/proc/{state.supervisor_pid}") and time.monotonic() < deadline:
            time.sleep(0.02)
        while pids_with_cmdline(f"{directory}/vsock/1025.sock") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pids_with_cmdline(f"{directory}/vsock/1025.sock") == []  # the guest died with its VMM
        (row,) = json.loads(kuasarctl("ps", "-d", sandbox.root, "-o", "json").stdout)
        assert row["reachable"] == "no"
        assert row["state"] == "dead"
        assert row["reason"] == f"the sandbox supervisor (PID {state.supervisor_pid}) is not running"
        exec_result = sandbox.exec("true", flags=["--connect-timeout", "0.5"])
        assert exec_result.returncode == 125
        stopped = kuasarctl("sandbox", "stop", "-d", sandbox.root, sandbox.id)
        assert stopped.returncode == 0
        assert not os.path.exists(directory)


def test_console_disabled_sandbox_refuses_exec_with_hint() -> None:
    with local_sandbox("pod-nocon", "--no-debug-console") as sandbox:
        assert sandbox.exec("true").returncode == 0  # the agent API still serves exec
        result = sandbox.exec("true", flags=["--console", "--connect-timeout", "0.5"])
        assert result.returncode == 125
        assert "task.debug" in result.stderr.decode()


def test_stop_unknown_sandbox_is_an_error() -> None:
    root = short_tmpdir()
    try:
        result = kuasarctl("sandbox", "stop", "-d", root, "ghost")
        assert result.returncode == 125
        assert result.stderr.decode().startswith(f"Error: No pods found in {root}.")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _bad_root_cases(tmp: str) -> list[tuple[str, int, str]]:
    file = os.path.join(tmp, "file")
    long_root = os.path.join(tmp, "d" * (100 - len(tmp)))
    return [
        (
            "/proc/nope",
            125,
            "Error: cannot create /proc/nope: /proc (a proc filesystem) does not allow new directories",
        ),
        (
            "/proc/1",
            125,
            "Error: cannot create /proc/1/x: /proc/1 (a proc filesystem) does not allow new directories",
        ),
        (file, 125, f"Error: {file} already exists and is not a directory"),
        (
            f"{file}/sub",
            125,
            f"Error: cannot create {file}/sub: {file} already exists and is not a directory",
        ),
        (
            long_root,
            2,
            f"Error: sandbox directory {long_root}/x is too long for its UNIX sockets (at most 91 bytes)",
        ),
    ]


def test_run_with_a_bad_root_names_the_real_cause() -> None:
    tmp = short_tmpdir()
    try:
        open(os.path.join(tmp, "file"), "w").close()
        for root, code, first_line in _bad_root_cases(tmp):
            result = kuasarctl("sandbox", "run", "-d", root, "--name", "x")
            err = result.stderr.decode()
            assert (result.returncode, err.splitlines()[0]) == (code, first_line), err
            assert "Traceback" not in err
        assert sorted(os.listdir(tmp)) == ["file"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.parametrize("flags", [["-d", ""], ["--name", ""]])
def test_empty_root_or_name_is_a_usage_error(flags: list[str]) -> None:
    result = kuasarctl("sandbox", "run", *flags)
    assert result.returncode == 2
    assert "must not be empty" in result.stderr.decode()


def running(pid: int) -> bool:
    """``pid`` exists and has not exited (a zombie has)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as file:
            return file.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_stop_returns_once_the_supervisor_has_exited() -> None:
    with local_sandbox("pod-gone-1") as sandbox:
        state = read_state(os.path.join(sandbox.root, sandbox.id))
        assert state is not None and running(state.supervisor_pid)
        stopped = kuasarctl("sandbox", "stop", "-d", sandbox.root, sandbox.id)
        assert stopped.returncode == 0, stopped.stderr
        assert not running(state.supervisor_pid)


def test_a_supervisor_that_does_not_end_is_killed_after_the_timeout() -> None:
    from kuasar.sandbox.discovery import resolve_sandbox
    from kuasar.sandbox.local import stop_sandbox

    with local_sandbox("pod-stuck-1") as sandbox:
        state = read_state(os.path.join(sandbox.root, sandbox.id))
        assert state is not None
        os.kill(state.supervisor_pid, signal.SIGSTOP)  # SIGTERM stays pending: it never exits by itself
        started = time.monotonic()
        assert stop_sandbox(resolve_sandbox(sandbox.id, [sandbox.root]), timeout=0.5) is True
        assert 0.5 <= time.monotonic() - started < 5
        deadline = time.monotonic() + 5
        while running(state.supervisor_pid) and time.monotonic() < deadline:  # SIGKILL is asynchronous
            time.sleep(0.02)
        assert not running(state.supervisor_pid)
