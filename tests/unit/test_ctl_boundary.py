"""kuasarctl's boundary and parser: one line for any failure, -v anywhere, help for terminals."""

from __future__ import annotations

import argparse
import os
import subprocess
from collections.abc import Iterator

import pytest

from kuasar.ctl.main import build_parser, dispatch
from kuasar.ctl.parser import CommandParser, plain
from kuasar.ctl.quickparse import verbosity
from kuasar.errors import SandboxNotFound
from tests.functional.cli_helpers import KUASARCTL, short_tmpdir


def raises(exc: BaseException) -> object:
    def command(args: argparse.Namespace) -> int:
        raise exc

    return command


async def raises_async(args: argparse.Namespace) -> int:
    raise KeyError("no such key")


def namespace(func: object, verbose: int = 0) -> argparse.Namespace:
    return argparse.Namespace(func=func, verbose=verbose)


def test_unexpected_exception_is_one_line_and_125(capsys: pytest.CaptureFixture[str]) -> None:
    assert dispatch(namespace(raises(RuntimeError("boom\n\x1b[2J")))) == 125
    err = capsys.readouterr().err
    assert err.splitlines()[0] == "Error: internal error: RuntimeError: boom\\n\\x1b[2J"
    assert "Traceback" not in err and len(err.splitlines()) == 2


def test_unexpected_exception_in_a_coroutine_too(capsys: pytest.CaptureFixture[str]) -> None:
    assert dispatch(namespace(raises_async)) == 125
    assert capsys.readouterr().err.startswith("Error: internal error: KeyError: 'no such key'\n")


def test_traceback_only_with_vv(capsys: pytest.CaptureFixture[str]) -> None:
    assert dispatch(namespace(raises(ValueError("bad")), verbose=1)) == 125
    assert "Traceback" not in capsys.readouterr().err
    args = namespace(raises(ValueError("bad")), verbose=1)
    vars(args)["verbose:kuasarctl ps"] = 1  # -v after the subcommand counts as well
    assert dispatch(args) == 125
    err = capsys.readouterr().err
    assert err.startswith("Error: internal error: ValueError: bad\n")
    assert "Traceback (most recent call last)" in err and "raise exc" in err


def test_a_kuasar_error_inside_an_exception_group_is_reported_as_itself(
    capsys: pytest.CaptureFixture[str],
) -> None:
    group = ExceptionGroup("tasks", [SandboxNotFound("No pods found in /x.")])
    assert dispatch(namespace(raises(group))) == 125
    assert capsys.readouterr().err == "Error: No pods found in /x.\n"


def test_output_that_cannot_be_written_is_one_line() -> None:
    root = short_tmpdir()
    try:
        with open("/dev/full", "wb") as full:
            result = subprocess.run(
                [*KUASARCTL, "ps", "-d", root], stdout=full, stderr=subprocess.PIPE, timeout=60, check=False
            )
    finally:
        os.rmdir(root)
    assert result.returncode == 125
    assert result.stderr.decode() == "Error: cannot write to standard output: No space left on device\n"


@pytest.mark.parametrize(
    ("argv", "count"),
    [
        (["ps"], 0),
        (["-v", "ps"], 1),
        (["ps", "-v"], 1),
        (["-v", "ps", "-vv"], 3),
        (["sandbox", "-v", "stop", "-v", "x"], 2),
        (["exec", "-v", "pod", "ls", "-v"], 1),  # after SANDBOX, -v belongs to the command
    ],
)
def test_verbose_counts_before_and_after_the_subcommand(argv: list[str], count: int) -> None:
    assert verbosity(build_parser().parse_args(argv)) == count


def test_exec_command_keeps_its_own_v() -> None:
    args = build_parser().parse_args(["exec", "-v", "pod", "ls", "-v"])
    assert args.command == ["ls", "-v"]


def parsers(
    parser: argparse.ArgumentParser, name: str = "kuasarctl"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                if sub_name in {"ls", "rm", "remove"}:  # aliases
                    continue
                yield from parsers(sub, f"{name} {sub_name}")


ALL_PARSERS = dict(parsers(build_parser()))


@pytest.mark.parametrize("name", sorted(ALL_PARSERS))
def test_help_is_plain_text(name: str) -> None:
    text = ALL_PARSERS[name].format_help()
    for markup in ("``", ":class:", ":func:", ":mod:", "::\n"):
        assert markup not in text, f"{name} --help shows {markup!r}"
    assert "-v, --verbose" in text


@pytest.mark.parametrize("name", sorted(ALL_PARSERS))
def test_every_positional_has_help(name: str) -> None:
    missing = [
        action.metavar or action.dest
        for action in ALL_PARSERS[name]._actions
        if not action.option_strings and not action.help
    ]
    assert not missing, f"{name}: {missing}"


def test_defaults_are_shown() -> None:
    text = ALL_PARSERS["kuasarctl ps"].format_help()
    assert "(default: 0.5)" in text and "(default: table)" in text
    assert "(default: False)" not in text and "(default: 0)" not in text
    run = ALL_PARSERS["kuasarctl sandbox run"].format_help()
    assert "(default: info)" in run and "(default: True)" in run


def test_plain_removes_docstring_markup() -> None:
    assert plain("use ``kuasarctl ps`` or :class:`~kuasar.guest.Guest`::") == "use kuasarctl ps or Guest:"


def test_indented_blocks_are_kept_and_prose_is_wrapped() -> None:
    parser = CommandParser(
        prog="x", description="one\ntwo ``three``\n\nexamples::\n\n    x -a   first\n    x -b   second"
    )
    text = parser.format_help()
    assert "one two three\n\nexamples:\n\n    x -a   first\n    x -b   second\n" in text


def test_usage_errors_are_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["ps", "\x1b[2J\x07"])
    assert info.value.code == 2
    assert "unrecognized arguments: \\x1b[2J\\x07" in capsys.readouterr().err
