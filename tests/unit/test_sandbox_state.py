"""The local sandbox state record and the health ``ps`` derives from it (no sockets involved)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from kuasar.sandbox.state import STATE_FILE, SandboxState, exit_text, read_state, sandbox_status, write_state

RECORD = {
    "id": "pod-1",
    "kind": "local",
    "supervisor_pid": os.getpid(),
    "agent_pid": 4242,
    "created": 1.5,
    "debug_console": True,
    "agent_api": True,
    "namespaces": False,
}


def test_records_survive_upgrades_both_ways(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text(json.dumps({**RECORD, "added_later": 1}))
    state = read_state(str(tmp_path))
    assert state is not None and state.agent_pid == 4242
    assert (state.agent_exit_status, state.agent_exit_signal, state.agent_exited) == (None, None, None)
    (tmp_path / STATE_FILE).write_text("[1, 2]")
    assert read_state(str(tmp_path)) is None


def test_write_then_read_round_trips(tmp_path: Path) -> None:
    state = SandboxState(**RECORD, agent_exit_status=3, agent_exited=2.0)  # type: ignore[arg-type]
    write_state(str(tmp_path), state)
    assert read_state(str(tmp_path)) == state
    assert sorted(os.listdir(tmp_path)) == [STATE_FILE]


def test_exit_text() -> None:
    assert exit_text(137, None) == "agent exited with status 137"
    assert exit_text(None, 9) == "agent exited with status 137 (killed by SIGKILL)"
    assert exit_text(0, None) == "agent exited with status 0"


def test_status_without_a_record_follows_the_probe(tmp_path: Path) -> None:
    running = sandbox_status(str(tmp_path), "kuasar-vmm", "yes")
    assert (running.kind, running.state, running.reason, running.agent_pid) == (
        "kuasar-vmm",
        "running",
        "",
        None,
    )
    assert running.created == os.stat(tmp_path).st_mtime
    assert sandbox_status(str(tmp_path), "kuasar-vmm", "vmm").state == "unresponsive"
    dead = sandbox_status(str(tmp_path), "kuasar-vmm", "no")
    assert (dead.state, dead.reason) == ("dead", "the sandbox socket refuses connections")


def test_status_from_the_record(tmp_path: Path) -> None:
    # This test process is no supervisor: its PID in the record reads as a supervisor that is gone.
    write_state(str(tmp_path), SandboxState(**RECORD))  # type: ignore[arg-type]
    gone = sandbox_status(str(tmp_path), "kuasarctl", "yes")
    assert (gone.kind, gone.state) == ("local", "dead")
    assert gone.reason == f"the sandbox supervisor (PID {os.getpid()}) is not running"
    assert (gone.supervisor_pid, gone.agent_pid, gone.created) == (os.getpid(), 4242, 1.5)
