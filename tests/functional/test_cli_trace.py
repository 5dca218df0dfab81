"""``kuasarctl -v``: the real CLI against a real local sandbox traces each ttrpc call and stream on
stderr (``* ttrpc /service/Method stream N -> STATUS (totals)``) beside the handshake lines, and
prints none of them without ``-v``."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.functional.cli_helpers import LocalSandbox, kuasarctl, local_sandbox

TOTALS = r"\(\d+ B in, \d+ B out, \d+\.\d+ m?s\)"
STREAM_TOTALS = r"\((\d+) msgs?/(\d+) B in, (\d+) msgs?/(\d+) B out, \d+\.\d+ m?s\)"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[LocalSandbox]:
    with local_sandbox("pod-trace-1") as running:
        yield running


def trace_lines(stderr: bytes) -> list[str]:
    return [line for line in stderr.decode().splitlines() if line.startswith("* ttrpc ")]


def test_info_traces_its_calls(sandbox: LocalSandbox) -> None:
    result = kuasarctl("-v", "info", "-d", sandbox.root, sandbox.id)
    assert result.returncode == 0, result.stderr
    lines = trace_lines(result.stderr)
    assert re.fullmatch(r"\* ttrpc /grpc\.Health/Check stream \d+ -> OK \(2 B in, 0 B out, [^)]+\)", lines[0])
    assert re.fullmatch(
        rf"\* ttrpc /kuasar\.agent\.v1\.Agent/GetSystemInfo stream \d+ -> OK {TOTALS}", lines[-1]
    )
    assert re.search(r"^\* CONNECT 1024 -> OK", result.stderr.decode(), re.MULTILINE)  # the handshake too


def test_no_trace_lines_without_verbose(sandbox: LocalSandbox) -> None:
    result = kuasarctl("info", "-d", sandbox.root, sandbox.id)
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    result = kuasarctl("exec", "--agent", "-d", sandbox.root, sandbox.id, "sh", "-c", "exit 3")
    assert (result.returncode, result.stderr) == (3, b"")


def test_exec_stream_traced_open_and_close(sandbox: LocalSandbox) -> None:
    """-v after the command name; the Exec stream's totals count the output that came back."""
    command = ["sh", "-c", "head -c 100000 /dev/zero; exit 3"]
    result = kuasarctl("exec", "-v", "--agent", "-d", sandbox.root, sandbox.id, *command)
    assert result.returncode == 3, result.stderr
    assert result.stdout == b"\0" * 100000
    lines = trace_lines(result.stderr)
    [opened] = [line for line in lines if "/Exec " in line and line.endswith(" open (bidi)")]
    stream_id = re.fullmatch(r"\* ttrpc /kuasar\.agent\.v1\.Agent/Exec stream (\d+) open \(bidi\)", opened)
    assert stream_id is not None
    prefix = rf"\* ttrpc /kuasar\.agent\.v1\.Agent/Exec stream {stream_id[1]} -> OK "
    [closed] = [line for line in lines if re.match(prefix, line)]
    totals = re.fullmatch(prefix + STREAM_TOTALS, closed)
    assert totals is not None, closed
    messages_in, bytes_in, messages_out, _ = map(int, totals.groups())
    assert bytes_in >= 100000 and messages_in >= 3  # started, output, exit status
    assert messages_out >= 1  # the start message
    assert lines.index(opened) < lines.index(closed)


def test_a_failed_call_names_its_status(sandbox: LocalSandbox) -> None:
    result = kuasarctl("-v", "exec", "--agent", "-d", sandbox.root, sandbox.id, "no-such-command-ksr")
    assert result.returncode == 127
    [failed] = [line for line in trace_lines(result.stderr) if "/Exec " in line and "->" in line]
    assert re.fullmatch(
        r"\* ttrpc /kuasar\.agent\.v1\.Agent/Exec stream \d+ -> NOT_FOUND: .*no-such-command-ksr.* "
        + STREAM_TOTALS,
        failed,
    )
