"""``make demo`` end to end on a real terminal (a PTY): the sandbox never outlives the demo."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.functional.cli_helpers import kuasarctl, pids_with_cmdline, short_tmpdir

REPO = Path(__file__).resolve().parents[2]


def _drive(process: subprocess.Popen[bytes], master: int, reply_after: bytes, reply: bytes) -> bytes:
    """Collect the terminal's output; once ``reply_after`` appeared, type ``reply`` every 0.5 s."""
    output = bytearray()
    deadline = time.monotonic() + 90
    next_reply = 0.0
    while process.poll() is None and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                output += os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal is gone
                break
        if reply_after in output and time.monotonic() >= next_reply:
            os.write(master, reply)
            next_reply = time.monotonic() + 0.5
    return bytes(output)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_demo_stops_its_sandbox_when_the_shell_ends_with_a_failure() -> None:
    root, sandbox_id = short_tmpdir(), "demo-pod-t1"
    master, slave = os.openpty()
    command = [
        "make",
        "-s",
        "-o",
        ".venv/.installed",  # never reinstall the venv from a test
        "demo",
        f"BIN={os.path.dirname(sys.executable)}",
        f"SANDBOX_ROOT={root}",
        f"DEMO_ID={sandbox_id}",
    ]
    try:
        with subprocess.Popen(
            command, cwd=REPO, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
        ) as process:
            os.close(slave)
            slave = -1
            output = _drive(process, master, reply_after=b"GNU/Linux", reply=b"exit 3\n")
            assert process.wait(timeout=30) == 0, output.decode(errors="replace")
        assert b"demo: sandbox demo-pod-t1 stopped" in output, output.decode(errors="replace")
        assert not os.path.exists(os.path.join(root, sandbox_id))
        assert pids_with_cmdline(os.path.join(root, sandbox_id)) == []
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
        kuasarctl("sandbox", "stop", "-d", root, sandbox_id)
        shutil.rmtree(root, ignore_errors=True)
