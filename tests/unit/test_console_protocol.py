"""The console exec protocol, sans-IO: the exec line, and the marker stripper fed every split."""

from __future__ import annotations

import re
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kuasar import console
from kuasar.commandline import command_argv
from kuasar.console import (
    MAX_EXEC_LINE,
    MarkerStripper,
    StdinMode,
    build_exec_line,
    new_token,
    shell_quote,
)
from kuasar.errors import UsageError

TOKEN = "123-456"
START = b"__KSR_START__:123-456\n"


def exit_line(rc: int, crlf: bool = False) -> bytes:
    return f"__KSR_EXIT__:{TOKEN}:{rc}".encode() + (b"\r\n" if crlf else b"\n")


def run_split(stream: bytes, cuts: list[int]) -> tuple[bytes, int | None]:
    stripper = MarkerStripper(TOKEN)
    out = bytearray()
    previous = 0
    for cut in [*cuts, len(stream)]:
        out += stripper.feed(stream[previous:cut])
        previous = cut
    out += stripper.finish()
    return bytes(out), stripper.exit_status


STREAMS = [
    (b"noise\x1b[?2004h" + START + b"hello\n" + exit_line(0), b"hello\n", 0),
    (START + b"no newline" + exit_line(3), b"no newline", 3),
    (START + b"\x00\xff\r\n__KSR_EXIT__:other:1\n" + exit_line(255, crlf=True) + b"after", None, 255),
    (START + b"__KSR_EXIT__:123-456:x\n__KSR_EXIT_" + exit_line(42), None, 42),
    (START + exit_line(0), b"", 0),
    (b"\r\n" + START.rstrip(b"\n") + b"\r\n" + b"x" + exit_line(7), b"x", 7),
]


@pytest.mark.parametrize(("stream", "expected", "status"), STREAMS)
def test_every_single_and_double_split(stream: bytes, expected: bytes | None, status: int) -> None:
    if expected is None:
        start = stream.index(START) + len(START)
        expected = stream[start : stream.rindex(exit_line(status, crlf=b"\r\n" in stream[-12:]))]
    for first in range(len(stream) + 1):
        assert run_split(stream, [first]) == (expected, status), first
    for first in range(0, len(stream) + 1, 3):
        for second in range(first, len(stream) + 1, 2):
            assert run_split(stream, [first, second]) == (expected, status), (first, second)


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=300),
    st.lists(st.integers(min_value=0, max_value=400), max_size=8),
    st.integers(0, 255),
)
def test_random_output_and_chunking(payload: bytes, cuts: list[int], rc: int) -> None:
    stream = b"prompt$ " + START + payload + exit_line(rc) + b"trailing"
    assert run_split(stream, sorted(min(c, len(stream)) for c in cuts)) == (payload, rc)


def test_missing_start_marker_shows_what_came() -> None:
    stripper = MarkerStripper(TOKEN)
    assert stripper.feed(b"sh: 1: exec: nope: not found\n") == b""
    assert stripper.finish() == b"sh: 1: exec: nope: not found\n"
    assert stripper.exit_status is None


def test_no_exit_marker_flushes_held_bytes_at_eof() -> None:
    stripper = MarkerStripper(TOKEN)
    assert stripper.feed(START + b"partial __KSR_EXIT__:123") == b"partial "
    assert stripper.finish() == b"__KSR_EXIT__:123"
    assert stripper.exit_status is None


def test_bytes_after_the_marker_are_dropped() -> None:
    stripper = MarkerStripper(TOKEN)
    assert stripper.feed(START + b"a" + exit_line(1) + b"junk") == b"a"
    assert stripper.feed(b"more") == b""
    assert stripper.exit_status == 1


def test_shell_quote_round_trips_through_sh() -> None:
    for value in ["plain", "it's", "a b", "$HOME", "'", "", "\\n", '"q"']:
        out = subprocess.run(["sh", "-c", f"printf %s {shell_quote(value)}"], capture_output=True, check=True)
        assert out.stdout.decode() == value


def test_exec_line_runs_argv_and_prints_markers() -> None:
    token = new_token()
    line = build_exec_line(
        ["printf", "%s|", "a b", "it's"],
        token,
    )
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    out = subprocess.run(["sh", "-c", line.decode()], capture_output=True, check=False)
    stripper = MarkerStripper(token)
    assert stripper.feed(out.stdout) == b"a b|it's|"
    assert stripper.exit_status == 0 == out.returncode


def test_exec_line_keeps_exit_status_and_stdin_choice() -> None:
    token = new_token()
    line = build_exec_line(["sh", "-c", "read x; echo got:$x; exit 9"], token, stdin=StdinMode.TERMINAL)
    out = subprocess.run(["sh", "-c", line.decode()], input=b"v\n", capture_output=True, check=False)
    stripper = MarkerStripper(token)
    assert stripper.feed(out.stdout) == b"got:v\n"
    assert stripper.exit_status == 9 == out.returncode
    no_stdin = build_exec_line(
        ["cat"],
        token,
    )
    out = subprocess.run(["sh", "-c", no_stdin.decode()], input=b"ignored", capture_output=True, check=False)
    assert MarkerStripper(token).feed(out.stdout) == b""


def test_one_string_with_shell_syntax_is_a_command_line() -> None:
    assert command_argv(["ls -la && ps"]) == ["sh", "-c", "ls -la && ps"]
    assert command_argv(["ls"]) == ["ls"]
    assert command_argv(["echo", "a b"]) == ["echo", "a b"]


def test_token_with_quote_is_refused() -> None:
    with pytest.raises(ValueError, match="single quote"):
        build_exec_line(
            ["true"],
            "bad'token",
        )


def test_exec_line_longer_than_a_terminal_line_is_refused() -> None:
    with pytest.raises(UsageError, match="too long for the debug console"):
        build_exec_line(["echo", "x" * MAX_EXEC_LINE], TOKEN)
    overhead = len(build_exec_line(["echo", ""], TOKEN))
    assert len(build_exec_line(["echo", "x" * (MAX_EXEC_LINE - overhead)], TOKEN)) == MAX_EXEC_LINE
    # Bytes outside printable ASCII travel as 4-byte octal escapes, counted as such.
    encoded_overhead = len(build_exec_line(["echo", "\t"], TOKEN)) - 4
    fits = build_exec_line(["echo", "é" * ((MAX_EXEC_LINE - encoded_overhead) // 8)], TOKEN)
    assert MAX_EXEC_LINE - 7 <= len(fits) <= MAX_EXEC_LINE


# ------------------------------------------------------------- the regex-free rules (start-up)

_SHELL_SYNTAX_RE = re.compile(r"[\s;&|<>()$`\\\"'*?\[\]#~=%{}!]")
_TEXT = st.text(st.characters(codec="utf-8") | st.sampled_from(list(" \t\n\x0b\x1c\x85\xa0\u2028;=_aZ09")))


@settings(max_examples=500, deadline=None)
@given(_TEXT)
def test_shell_syntax_is_what_the_regex_was(text: str) -> None:
    expected = ["sh", "-c", text] if _SHELL_SYNTAX_RE.search(text) else [text]
    assert command_argv([text]) == expected


@settings(max_examples=500, deadline=None)
@given(_TEXT)
def test_env_names_are_what_the_regex_was(key: str) -> None:
    assert console._is_env_name(key) == bool(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=12) | st.sampled_from([b"", b"~", b"\x7f", b" ", b"\x1f", b"\xc3\xa9"]))
def test_printable_ascii_and_digit_tails_are_what_the_regexes_were(data: bytes) -> None:
    assert console._is_printable_ascii(data) == bool(re.fullmatch(rb"[\x20-\x7e]*", data))
    for tail in (data, data[:3], data[:2] + b"\r", b"12" + data[:1], b"123\r"[: len(data) % 5]):
        assert console._digits_then_cr(tail) == bool(re.fullmatch(rb"\d{0,3}\r?", tail))


_PIECES = st.sampled_from(
    [b"__KSR_EXIT__:t:", b"__KSR_START__:t", b"1", b"23", b"4567", b"\r", b"\n", b"x", b":"]
)


@settings(max_examples=800, deadline=None)
@given(st.lists(_PIECES, max_size=10).map(b"".join))
def test_marker_lines_are_what_the_regexes_found(data: bytes) -> None:
    start = re.search(re.escape(b"__KSR_START__:t") + rb"\r?\n", data)
    found = console.marker_line(bytearray(data), b"__KSR_START__:t")
    assert found == (None if start is None else (start.start(), start.end(), None))
    end = re.search(re.escape(b"__KSR_EXIT__:t:") + rb"(\d{1,3})\r?\n", data)
    found = console.marker_line(bytearray(data), b"__KSR_EXIT__:t:", status=True)
    assert found == (None if end is None else (end.start(), end.end(), int(end.group(1))))


@settings(max_examples=500, deadline=None)
@given(st.lists(_PIECES, max_size=8).map(b"".join), st.sampled_from([b"__KSR_EXIT__:t:", b"ab", b"a"]))
def test_tail_marker_length_is_the_longest_proper_prefix_at_the_end(data: bytes, marker: bytes) -> None:
    expected = next(
        (n for n in range(min(len(marker) - 1, len(data)), 0, -1) if data.endswith(marker[:n])), 0
    )
    assert console._tail_marker_length(data, marker) == expected


@settings(max_examples=500, deadline=None)
@given(st.lists(st.lists(_PIECES, max_size=4).map(b"".join), max_size=6))
def test_stripping_in_chunks_is_stripping_the_whole(chunks: list[bytes]) -> None:
    whole = MarkerStripper("t")
    expected = whole.feed(b"__KSR_START__:t\n" + b"".join(chunks)) + whole.finish()
    split = MarkerStripper("t")
    out = split.feed(b"__KSR_START__:t\n") + b"".join(split.feed(chunk) for chunk in chunks) + split.finish()
    assert (out, split.exit_status) == (expected, whole.exit_status)
