"""The kernel command line's ``task.*`` parameters, parsed as Kuasar's vmm-task reads them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from kuasar.agent.cmdline import DEFAULT_DEBUG_SHELL, TaskCmdline, parse_cmdline, read_cmdline


def test_task_parameters_are_read_and_others_ignored() -> None:
    parsed = parse_cmdline(
        "console=ttyS0 root=/dev/vda1 task.debug task.debug_shell=/bin/sh task.log_level=debug quiet\n"
    )
    assert parsed == TaskCmdline(debug=True, debug_shell="/bin/sh", log_level="debug")


def test_defaults_without_task_parameters() -> None:
    assert parse_cmdline("") == TaskCmdline()
    assert parse_cmdline("console=hvc0 debug quiet") == TaskCmdline()
    defaults = TaskCmdline()
    assert (defaults.debug, defaults.debug_shell, defaults.log_level, defaults.sharefs_type) == (
        False,
        DEFAULT_DEBUG_SHELL,
        "info",
        "9p",
    )


def test_bare_flags_only_count_without_a_value() -> None:
    # vmm-task matches the whole word: the CLH sandboxer's task.enable_tracing=false never enables it.
    parsed = parse_cmdline("task.debug=1 task.enable_tracing=true")
    assert (parsed.debug, parsed.enable_tracing) == (False, False)
    assert parse_cmdline("task.enable_tracing").enable_tracing is True


def test_values_empty_repeated_and_unknown() -> None:
    parsed = parse_cmdline("task.debug_shell= task.sharefs_type=9p task.sharefs_type=virtiofs task.future=x")
    assert parsed.debug_shell == DEFAULT_DEBUG_SHELL  # an empty value keeps the default
    assert parsed.sharefs_type == "virtiofs"  # the last one wins
    assert parse_cmdline("task.log_level=warn=x").log_level == "warn=x"  # split on the first '='


def test_whitespace_of_any_kind_separates_words() -> None:
    assert parse_cmdline("\ttask.debug\n  task.log_level=trace  ") == TaskCmdline(
        debug=True, log_level="trace"
    )


def test_result_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        TaskCmdline().debug = True  # type: ignore[misc]


def test_read_cmdline_from_a_file_or_defaults(tmp_path: Path) -> None:
    path = tmp_path / "cmdline"
    path.write_bytes(b"task.debug task.debug_shell=/bin/ash \xff\n")
    assert read_cmdline(str(path)) == TaskCmdline(debug=True, debug_shell="/bin/ash")
    assert read_cmdline(str(tmp_path / "missing")) == TaskCmdline()
    assert read_cmdline(str(tmp_path)) == TaskCmdline()  # a directory: unreadable, defaults
