"""``kuasarctl ps`` against real local sandboxes: STATE and REASON, PIDs in JSON, output options."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

from kuasar.sandbox.state import read_state
from tests.functional.cli_helpers import LocalSandbox, kuasarctl, local_sandbox


def ps_json(sandbox: LocalSandbox, *flags: str) -> Any:
    result = kuasarctl("ps", "-d", sandbox.root, "-o", "json", *flags)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_running_sandbox_row_options_and_pids() -> None:
    with local_sandbox("pod-ps-1") as sandbox:
        state = read_state(os.path.join(sandbox.root, sandbox.id))
        assert state is not None
        (row,) = ps_json(sandbox)
        assert (row["state"], row["reason"], row["reachable"]) == ("running", "", "yes")
        assert (row["supervisor_pid"], row["agent_pid"]) == (state.supervisor_pid, state.agent_pid)

        table = kuasarctl("ps", "-d", sandbox.root).stdout.decode().splitlines()
        assert table[0].split() == ["ID", "KIND", "GUEST", "REACHABLE", "AGE", "STATE", "REASON", "SOCKET"]
        assert table[1].split()[:4] == ["pod-ps-1", "local", "kuasar-agent", "yes"]
        assert table[1].split()[5:7] == ["running", "-"]

        bare = kuasarctl("ps", "-d", sandbox.root, "--no-headers").stdout.decode().splitlines()
        assert len(bare) == 1 and bare[0].split()[:2] == ["pod-ps-1", "local"]
        assert ps_json(sandbox, "-q") == ["pod-ps-1"]
        assert kuasarctl("ps", "-d", sandbox.root, "-q", "--no-headers").stdout == b"pod-ps-1\n"


def test_a_dead_agent_is_shown_with_its_exit_status() -> None:
    with local_sandbox("pod-ps-kill") as sandbox:
        state = read_state(os.path.join(sandbox.root, sandbox.id))
        assert state is not None
        os.kill(state.agent_pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        (row,) = ps_json(sandbox)
        while row["state"] != "agent-exited" and time.monotonic() < deadline:
            time.sleep(0.1)
            (row,) = ps_json(sandbox)
        assert row["state"] == "agent-exited", row
        # 137 = 128 + SIGKILL, whether the agent is our child or PID 1 behind its namespace wrapper.
        assert row["reason"].startswith("agent exited with status 137"), row
        assert row["reachable"] != "yes"
        assert (row["supervisor_pid"], row["agent_pid"]) == (state.supervisor_pid, state.agent_pid)
        (line,) = kuasarctl("ps", "-d", sandbox.root, "--no-headers").stdout.decode().splitlines()
        assert "agent-exited" in line and "agent exited with status 137" in line
