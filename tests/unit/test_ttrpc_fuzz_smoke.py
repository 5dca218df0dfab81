"""CI's slice of the ttrpc fuzzer (``tests/fuzz/fuzz_ttrpc.py``): ~2000 decoder inputs and a few
hundred server inputs with the seeded ``random`` engine, plus checks that its oracles can fail."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kuasar.ttrpc.framing import Frame, FrameType, encode_frame
from tests.fuzz.fuzz_ttrpc import FuzzFailure, check_decoder, check_server_output, run_random

SCRIPT = Path(__file__).resolve().parents[1] / "fuzz" / "fuzz_ttrpc.py"


def test_fuzz_decoder_and_server_find_no_crash() -> None:
    stats = run_random(runs=2000, server_runs=200, seed=20261122)
    assert stats.crashes == []
    assert (stats.decoder_inputs, stats.server_inputs) == (2000, 200)
    assert stats.server_frames > 100  # the inputs do reach the server's answer paths


def test_server_oracle_rejects_malformed_output() -> None:
    good = encode_frame(Frame(1, FrameType.RESPONSE, 0, b""))
    assert check_server_output(good + encode_frame(Frame(1, FrameType.DATA, 5, b""))) == 2
    with pytest.raises(FuzzFailure, match="type 1"):
        check_server_output(encode_frame(Frame(1, FrameType.REQUEST, 0, b"")))
    with pytest.raises(FuzzFailure, match="partial"):
        check_server_output(good + good[:5])
    with pytest.raises(FuzzFailure, match="undecodable Response"):
        check_server_output(encode_frame(Frame(1, FrameType.RESPONSE, 0, b"\xff")))


def test_decoder_oracle_accepts_valid_splits() -> None:
    data = encode_frame(Frame(1, FrameType.REQUEST, 0, b"abc")) + encode_frame(
        Frame(3, FrameType.DATA, 5, b"")
    )
    check_decoder(data, [data[:3], data[3:14], b"", data[14:]])
    check_decoder(data + b"\xff" * 10, [data, b"\xff" * 10])  # garbage header: both ways ProtocolError


def test_cli_prints_counts_and_exits_zero() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--runs", "300", "--server-runs", "20", "--engine", "random"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "decoder_inputs=300 server_inputs=20" in result.stdout
    assert "crashes=0" in result.stdout
