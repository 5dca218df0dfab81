"""kuasarctl's pure helpers: exit code mapping, durations, escape keys, argument shapes."""

from __future__ import annotations

import argparse

import pytest

from kuasar.ctl.commands._common import format_age, positive_seconds
from kuasar.ctl.main import build_parser, exit_code_for
from kuasar.ctl.terminal import parse_escape
from kuasar.errors import (
    AmbiguousSandbox,
    CommandNotExecutable,
    CommandNotFound,
    ConnectError,
    DeadlineExceeded,
    Interrupted,
    UsageError,
)


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"exit_status": 0}, 0),
        ({"exit_status": 42}, 42),
        ({"exit_status": 300}, 300 & 0xFF),
        ({"signal_number": 9}, 137),
        ({"signal_number": 15, "exit_status": 0}, 143),
        ({"error": DeadlineExceeded("t")}, 124),
        ({"error": ConnectError("c")}, 125),
        ({"error": AmbiguousSandbox("a", matches=["x", "y"])}, 125),
        ({"error": CommandNotExecutable("x")}, 126),
        ({"error": CommandNotFound("x")}, 127),
        ({"error": Interrupted("x")}, 130),
        ({"error": KeyboardInterrupt()}, 130),
        ({"error": UsageError("x")}, 2),
        ({"error": RuntimeError("x")}, 125),
        ({}, 0),
    ],
)
def test_exit_code_for(kwargs: dict[str, object], code: int) -> None:
    assert exit_code_for(**kwargs) == code  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "seconds"), [("5", 5.0), ("0.5", 0.5), ("2s", 2.0), ("1m", 60.0), ("250ms", 0.25)]
)
def test_positive_seconds(text: str, seconds: float) -> None:
    assert positive_seconds(text) == seconds


@pytest.mark.parametrize("text", ["0", "-1", "abc", "", "nan", "inf", "5x"])
def test_positive_seconds_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        positive_seconds(text)


def test_format_age() -> None:
    assert [format_age(s) for s in (0, 59, 60, 3599, 3600, 86400 * 3)] == [
        "0s",
        "59s",
        "1m",
        "59m",
        "1h",
        "3d",
    ]


def test_parse_escape() -> None:
    assert parse_escape("^]") == 0x1D
    assert parse_escape("^p") == 0x10
    assert parse_escape("^P") == 0x10
    assert parse_escape("q") == ord("q")
    assert parse_escape("none") is None
    for bad in ("ab", "é", "^1", ""):
        with pytest.raises(UsageError):
            parse_escape(bad)


def test_exec_arguments_keep_command_flags() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["exec", "-t", "-p", "1026", "-d", "/d", "--timeout", "5", "pod", "ls", "-la", "/"]
    )
    assert (args.tty, args.interactive, args.port, args.socket_dir, args.timeout) == (
        True,
        False,
        1026,
        "/d",
        5.0,
    )
    assert (args.sandbox, args.command) == ("pod", ["ls", "-la", "/"])
    combined = parser.parse_args(["exec", "-it", "pod"])
    assert (combined.interactive, combined.tty, combined.command) == (True, True, [])
    separated = parser.parse_args(["exec", "pod", "--", "sh", "-c", "x"])
    assert separated.command == ["sh", "-c", "x"]
