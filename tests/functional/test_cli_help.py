"""``kuasarctl --help``, ``-h``, ``--version`` and a bare ``kuasarctl`` in a real process: argparse's
bytes, stream and exit code, printed without importing argparse or the modules it loads (issue 12:
``--help`` within 10 ms of ``python -c pass``); on a terminal too narrow for that, argparse's own."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kuasar.ctl.main import build_parser
from tests.functional.cli_helpers import DUMP_MODULES

#: What the quick path must not load: argparse and what argparse itself imports.
HEAVY = {"argparse", "re", "shutil", "textwrap", "gettext", "enum", "functools", "collections", "contextlib"}
KUASARCTL_SCRIPT = Path(sys.executable).parent / "kuasarctl"


def argparse_answer(words: list[str], columns: str | None) -> tuple[object, bytes, bytes]:
    """argparse's answer in a process with ``$COLUMNS`` (``None``: unset) and stdout on a pipe."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COLUMNS", "80" if columns is None else columns)  # a pipe is no terminal: 80
        with (
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            pytest.raises(SystemExit) as exit,
        ):
            build_parser(words).parse_args(words)
    return exit.value.code, out.getvalue().encode(), err.getvalue().encode()


def environment(columns: str | None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("_ARGCOMPLETE", "COLUMNS")}
    if columns is not None:
        env["COLUMNS"] = columns
    return env


def run_dumping_modules(words: list[str], columns: str | None, dump: Path) -> tuple[object, bytes, bytes]:
    result = subprocess.run(
        [sys.executable, "-c", DUMP_MODULES, str(dump), *words],
        env=environment(columns),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
        check=False,
    )
    return result.returncode, result.stdout, result.stderr


@pytest.mark.parametrize("columns", [None, "21", "52", "137"])
@pytest.mark.parametrize("words", [["--help"], ["-h"], ["--version"], []])
def test_root_help_is_argparses_without_argparse(
    words: list[str], columns: str | None, tmp_path: Path
) -> None:
    dump = tmp_path / "modules.txt"
    assert run_dumping_modules(words, columns, dump) == argparse_answer(words, columns)
    loaded = set(dump.read_text().split())
    assert "kuasar.ctl.quickhelp" in loaded  # the quick path answered
    assert not HEAVY & loaded


def test_a_terminal_too_narrow_gets_argparses_help(tmp_path: Path) -> None:
    dump = tmp_path / "modules.txt"
    assert run_dumping_modules(["--help"], "20", dump) == argparse_answer(["--help"], "20")
    assert "argparse" in set(dump.read_text().split())


@pytest.mark.skipif(not KUASARCTL_SCRIPT.exists(), reason="the kuasarctl console script is not installed")
def test_the_console_script_prints_it_without_argparse() -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", str(KUASARCTL_SCRIPT), "--help"],
        env=environment(None),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
        check=False,
    )
    code, out, _ = argparse_answer(["--help"], None)
    assert (result.returncode, result.stdout) == (code, out)
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.decode().splitlines()}
    assert "kuasar.ctl.quickhelp" in imported
    assert not HEAVY & imported
