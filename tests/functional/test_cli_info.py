"""``kuasarctl info``: GetSystemInfo through the real CLI, hvsock server and agent handlers."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from tests.functional.cli_helpers import LocalSandbox, kuasarctl, local_sandbox
from tests.functional.test_cli_exec_api import exec_api_sandbox


@pytest.fixture(scope="module")
def sandbox() -> Iterator[LocalSandbox]:
    with exec_api_sandbox("pod-info-1") as running:
        yield running


def test_info_table(sandbox: LocalSandbox) -> None:
    result = kuasarctl("info", "-d", sandbox.root, "pod-info")
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(":", 1) for line in result.stdout.decode().splitlines())
    fields = {key: value.strip() for key, value in lines.items()}
    assert fields["Sandbox"] == sandbox.id
    assert fields["Kernel"] == os.uname().release
    assert int(fields["CPUs"]) >= 1
    assert "available of" in fields["Memory"]
    assert {"Hostname", "OS", "Arch", "Load", "Uptime", "Addresses", "Agent"} <= set(fields)


def test_info_json(sandbox: LocalSandbox) -> None:
    result = kuasarctl("info", "-o", "json", "-d", sandbox.root, sandbox.id)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["sandbox"] == sandbox.id
    assert data["kernel_version"] == os.uname().release
    assert data["cpu_count"] >= 1 and data["total_memory"] >= data["available_memory"] > 0
    assert len(data["load_average"]) == 3 and isinstance(data["ip_addresses"], list)
    assert data["agent_version"]


def test_info_unknown_sandbox_is_125(sandbox: LocalSandbox) -> None:
    result = kuasarctl("info", "-d", sandbox.root, "nope")
    assert result.returncode == 125
    assert result.stderr.decode().startswith('Error: No pod found with prefix "nope"')


def test_info_on_console_only_guest_is_a_clear_error() -> None:
    with local_sandbox("pod-info-con", "--no-agent-api") as console_only:
        result = kuasarctl("info", "-d", console_only.root, console_only.id)
    assert result.returncode == 125
    first = result.stderr.decode().splitlines()[0]
    assert "agent API" in first and "does not serve it" in first and "Traceback" not in result.stderr.decode()
