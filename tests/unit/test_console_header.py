"""The guest console's sans-IO ``KSR_MODE`` sniffer: the same decision for every split of the input."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest

from kuasar.agent.console_header import HeaderDecision, HeaderSniffer

LIMIT = 32

CASES = [
    b"",
    b"KSR_MODE exec\n",
    b"KSR_MODE exec\r\n",
    b"KSR_MODE exec\r\r\n",
    b"KSR_MODE exec\nexec sh -c 'x' sh\n",
    b"KSR_MODE exec\r\necho hi\nmore",
    b"KSR_MODE exec",
    b"KSR_MODE exec\r",
    b"KSR_MODE exe\n",
    b"KSR_MODE execx\n",
    b"KSR_MODE exec \n",
    b"ksr_mode exec\n",
    b"xKSR_MODE exec\n",
    b"ls -l\nKSR_MODE exec\n",
    b"\nKSR_MODE exec\n",
    b"KSR",
    b"KSR_MODE exec" + b"\r" * LIMIT + b"\n",
    b"a" * (LIMIT + 5) + b"\n",
    b"\x03\x04",
]


def spec(data: bytes, limit: int = LIMIT) -> tuple[bool, bytes]:
    """The rule, stated on the whole input: what every split of it must give."""
    end = data.find(b"\n")
    if 0 <= end < limit and data[:end].rstrip(b"\r") == b"KSR_MODE exec":
        return True, data[end + 1 :]
    return False, data


def drive(chunks: Sequence[bytes], limit: int = LIMIT) -> tuple[bool, bytes]:
    """Feed chunks until a decision; then the stream is the replay plus every later chunk."""
    sniffer = HeaderSniffer(limit)
    for index, chunk in enumerate(chunks):
        decision = sniffer.feed(chunk)
        if decision is not None:
            return decision.exec_mode, decision.replay + b"".join(chunks[index + 1 :])
    decision = sniffer.finish()
    return decision.exec_mode, decision.replay


def splits(data: bytes, pieces: int) -> list[list[bytes]]:
    """Every way to cut ``data`` into ``pieces`` chunks (empty chunks included)."""
    result = []
    for cuts in itertools.combinations_with_replacement(range(len(data) + 1), pieces - 1):
        bounds = [0, *cuts, len(data)]
        result.append([data[a:b] for a, b in itertools.pairwise(bounds)])
    return result


@pytest.mark.parametrize("data", CASES, ids=repr)
def test_every_two_and_three_way_split_gives_the_same_decision(data: bytes) -> None:
    expected = spec(data)
    assert drive([data]) == expected
    for pieces in (2, 3):
        for chunks in splits(data, pieces):
            assert drive(chunks) == expected, chunks


@pytest.mark.parametrize("data", CASES, ids=repr)
def test_byte_by_byte_gives_the_same_decision(data: bytes) -> None:
    assert drive([data[i : i + 1] for i in range(len(data))]) == spec(data)


@pytest.mark.parametrize("data", CASES, ids=repr)
def test_a_driver_reading_wanted_bytes_never_reads_past_the_limit(data: bytes) -> None:
    sniffer, offset = HeaderSniffer(LIMIT), 0
    while sniffer.decision is None and offset < len(data):
        chunk = data[offset : offset + sniffer.wanted]
        offset += len(chunk)
        sniffer.feed(chunk)
    assert offset <= LIMIT
    decision = sniffer.finish()
    assert (decision.exec_mode, decision.replay + data[offset:]) == spec(data)


def test_the_header_fits_a_limit_of_exactly_its_length() -> None:
    assert drive([b"KSR_MODE exec\n"], limit=14) == (True, b"")
    assert drive([b"KSR_MODE exec\n"], limit=13) == (False, b"KSR_MODE exec\n")


def test_bytes_that_cannot_become_the_header_are_decided_at_once() -> None:
    sniffer = HeaderSniffer(LIMIT)
    assert sniffer.feed(b"K") is None
    assert sniffer.feed(b"SR_MODE exec") is None
    assert sniffer.feed(b"\r") is None
    assert HeaderSniffer(LIMIT).feed(b"l") == HeaderDecision(False, b"l")
    assert HeaderSniffer(LIMIT).feed(b"KSR_MODE exec\rx") == HeaderDecision(False, b"KSR_MODE exec\rx")


def test_end_of_input_before_the_newline_is_a_plain_session() -> None:
    sniffer = HeaderSniffer(LIMIT)
    assert sniffer.feed(b"KSR_MODE exec") is None
    assert sniffer.finish() == HeaderDecision(False, b"KSR_MODE exec")
    assert sniffer.decision == HeaderDecision(False, b"KSR_MODE exec")


def test_feeding_after_the_decision_is_refused() -> None:
    sniffer = HeaderSniffer(LIMIT)
    assert sniffer.feed(b"KSR_MODE exec\nrest") == HeaderDecision(True, b"rest")
    with pytest.raises(RuntimeError):
        sniffer.feed(b"more")
    assert sniffer.finish() == HeaderDecision(True, b"rest")


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        HeaderSniffer(0)
