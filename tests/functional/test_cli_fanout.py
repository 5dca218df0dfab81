"""``kuasarctl exec --all``: one command across many real local sandboxes (API and console-only),
whole prefixed lines, JSON records, the highest exit code, and a sandbox stopped mid-run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator

import pytest

from tests.functional.cli_helpers import KUASARCTL, kuasarctl, short_tmpdir

COUNT = 20


@pytest.fixture(scope="module")
def fleet() -> Iterator[str]:
    root = short_tmpdir("ksrfan")
    try:
        for index in range(COUNT):
            extra = ["--no-agent-api"] if index % 5 == 4 else []  # every fifth is console-only
            started = kuasarctl("sandbox", "run", "-d", root, "--name", f"fan-{index:02d}", *extra)
            assert started.returncode == 0, started.stderr
        yield root
    finally:
        for index in range(COUNT):
            kuasarctl("sandbox", "stop", "-d", root, f"fan-{index:02d}")
        shutil.rmtree(root, ignore_errors=True)


def test_every_sandbox_runs_it_with_whole_prefixed_lines(fleet: str) -> None:
    script = 'for i in 1 2 3; do printf "line-$i-%0200d\\n" 0; done; echo oops >&2; exit 3'
    result = kuasarctl("exec", "--all", "-P", "8", "-d", fleet, "--", "sh", "-c", script)
    assert result.returncode == 3, result.stderr
    lines = [line for line in result.stdout.decode().splitlines() if not line.endswith(": oops")]
    assert len(lines) == 3 * COUNT
    for index in range(COUNT):
        mine = [line for line in lines if line.startswith(f"fan-{index:02d}: ")]
        assert [line.split(": ", 1)[1][:6] for line in mine] == ["line-1", "line-2", "line-3"]
        assert all(len(line) == len(f"fan-{index:02d}: line-1-") + 200 for line in mine)
    # stderr stays apart over the agent API; the console merges it into stdout.
    errors = result.stderr.decode().splitlines()
    assert sorted(errors) == sorted(f"fan-{index:02d}: oops" for index in range(COUNT) if index % 5 != 4)
    merged = [line for line in result.stdout.decode().splitlines() if line.endswith(": oops")]
    assert sorted(merged) == sorted(f"fan-{index:02d}: oops" for index in range(COUNT) if index % 5 == 4)


def test_json_records_name_guest_and_path(fleet: str) -> None:
    result = kuasarctl("exec", "--all", "-o", "json", "--prefix", "fan-0", "-d", fleet, "--", "uname", "-n")
    assert result.returncode == 0, result.stderr
    records = {record["id"]: record for record in map(json.loads, result.stdout.decode().splitlines())}
    assert sorted(records) == [f"fan-{index:02d}" for index in range(10)]
    assert records["fan-00"]["guest"] == "kuasar-agent" and records["fan-00"]["path"] == "api"
    assert records["fan-04"]["guest"] == "none" and records["fan-04"]["path"] == "console"
    assert all(record["exit"] == 0 and record["stdout"] == record["id"] + "\n" for record in records.values())


def test_a_sandbox_dying_mid_run_is_reported_and_the_others_finish(tmp_path: object) -> None:
    root = short_tmpdir("ksrfan")
    try:
        for name in ("mid-a", "mid-b", "mid-c"):
            assert kuasarctl("sandbox", "run", "-d", root, "--name", name).returncode == 0
        script = "echo started; sleep 3; echo finished"  # the window in which mid-b is stopped
        process = subprocess.Popen(
            [*KUASARCTL, "exec", "--all", "-d", root, "--timeout", "20", "--", "sh", "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        assert process.stdout is not None
        started = {process.stdout.readline().decode().split(":")[0] for _ in range(3)}
        assert started == {"mid-a", "mid-b", "mid-c"}
        listing = json.loads(kuasarctl("ps", "-o", "json", "-d", root).stdout)
        os.kill(next(row["supervisor_pid"] for row in listing if row["id"] == "mid-b"), signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=30)
        assert b"mid-b: Error:" in stderr, stderr
        assert stdout.decode().count("finished") == 2
        assert process.returncode == 125
    finally:
        for name in ("mid-a", "mid-b", "mid-c"):
            kuasarctl("sandbox", "stop", "-d", root, name)
        shutil.rmtree(root, ignore_errors=True)


def test_bad_uses_are_usage_errors(fleet: str) -> None:
    assert kuasarctl("exec", "--all", "-d", fleet).returncode == 2
    assert kuasarctl("exec", "--all", "-it", "-d", fleet, "--", "sh").returncode == 2
    assert kuasarctl("exec", "--all", "-u", "0", "-d", fleet, "--", "true").returncode == 2
    missing = kuasarctl("exec", "--all", "--prefix", "zzz", "-d", fleet, "--", "true")
    assert missing.returncode == 125 and b"zzz" in missing.stderr


def test_ps_names_guests_and_console_only_sandboxes(fleet: str) -> None:
    rows = {row["id"]: row for row in json.loads(kuasarctl("ps", "-o", "json", "-d", fleet).stdout)}
    assert (rows["fan-00"]["guest"], rows["fan-00"]["state"]) == ("kuasar-agent", "running")
    console_only = rows["fan-04"]
    assert (console_only["guest"], console_only["reachable"], console_only["state"]) == (
        "-",
        "vmm",
        "running",
    )
    assert console_only["reason"] == "console only (started with --no-agent-api)"
