"""``kuasarctl exec``'s quick parser against argparse: whenever it reads a command line, it reads it
as argparse does (the same namespace); whenever argparse refuses one, it gives up (``None``)."""

from __future__ import annotations

import argparse
import contextlib
import io
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kuasar.ctl.commands import exec_cmd
from kuasar.ctl.main import build_parser, quick_parse
from kuasar.ctl.quickparse import FLAG, Option, parse

SPELLINGS = sorted(flag for option in exec_cmd.OPTIONS for flag in option.flags)
WORDS = [
    *SPELLINGS,
    *("-v", "--verbose", "-it", "-ti", "-itt", "-iP", "-h", "--help", "--", "-", "--cons", "--env=A=b"),
    *("-p1025", "-x", "--nope", "", "x", "5", "1m", "0", "-1", "A=b", "json", "text", "^P", "none"),
    *("pod-1", "sh", "-c", "echo hi", "ls -la"),
]


def argparse_namespace(words: list[str]) -> dict[str, object] | None:
    """What argparse makes of ``words`` (``None``: it refused them or printed help)."""
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            return vars(build_parser(words).parse_args(words))
        except SystemExit:
            return None


def check(words: list[str]) -> SimpleNamespace | None:
    quick = quick_parse(words)
    expected = argparse_namespace(words)
    if quick is not None:
        assert expected is not None, f"argparse refuses {words}, the quick parser read it"
        assert vars(quick) == expected
    return quick


@pytest.mark.parametrize(
    "words",
    [
        ["exec", "-t", "pod-1", "true"],
        ["exec", "--console", "-t", "-d", "/tmp/sbx", "pod-1", "true"],
        ["exec", "-it", "-e", "A=b", "-e", "C=d", "-w", "/tmp", "-u", "nobody", "pod-1"],
        ["exec", "-i", "--agent", "--timeout", "2s", "pod-1", "sh", "-c", "cat; echo err >&2"],
        ["exec", "-v", "-v", "pod-1", "--", "sh", "-c", "exit 3"],
        ["exec", "--all", "-o", "json", "-P", "4", "--prefix", "p", "--no-prefix", "true"],
        ["exec", "pod-1", "-t", "--console", "ls"],  # after the operand everything is the command's
        ["exec", "-p", "1026", "--connect-timeout", "0.5", "--escape", "none", "pod-1", "true"],
    ],
)
def test_plain_command_lines_are_read_as_argparse_reads_them(words: list[str]) -> None:
    assert check(words) is not None


@pytest.mark.parametrize(
    "words",
    [
        ["-v", "exec", "pod-1", "true"],  # a root option first
        ["exec", "--help"],
        ["exec", "-h", "pod-1"],
        ["exec", "--cons", "pod-1", "true"],  # an abbreviation
        ["exec", "--env=A=b", "pod-1", "true"],
        ["exec", "-p1025", "pod-1", "true"],
        ["exec", "-e", "-x", "pod-1"],  # a value that looks like an option
        ["exec", "--timeout", "-1", "pod-1", "true"],
        ["exec", "--timeout", "soon", "pod-1", "true"],  # the type refuses it
        ["exec", "-d", "", "pod-1", "true"],
        ["exec", "-o", "yaml", "--all", "true"],  # not a choice
        ["exec", "--console", "--agent", "pod-1", "true"],  # mutually exclusive
        ["exec", "-t"],  # no SANDBOX
        ["exec", "--", "pod-1", "true"],
        ["ps"],
        [],
    ],
)
def test_anything_else_is_left_to_argparse(words: list[str]) -> None:
    assert check(words) is None


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(WORDS), max_size=8))
def test_the_quick_parser_agrees_with_argparse(words: list[str]) -> None:
    check(["exec", *words])


def test_every_exec_option_is_a_row_of_the_table() -> None:
    """argparse's exec parser has exactly the table's options (plus -h, -v and the operands)."""
    commands = next(a for a in build_parser(["exec"])._actions if isinstance(a, argparse._SubParsersAction))
    registered = {
        flag
        for action in commands.choices["exec"]._actions
        for flag in action.option_strings
        if flag not in ("-h", "--help", "-v", "--verbose")
    }
    assert registered == set(SPELLINGS)


def test_a_list_default_is_not_shared_between_parses() -> None:
    options = [Option("-e", dest="env", action="append", default=[]), Option("-f", dest="f", action=FLAG)]
    first = parse(["x", "-e", "a", "op"], "x", options, positional="op", rest="rest")
    second = parse(["x", "op"], "x", options, positional="op", rest="rest")
    assert first is not None and second is not None
    assert (first.env, second.env, options[0].default) == (["a"], [], [])
