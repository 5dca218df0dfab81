"""The ``task.*`` parameters of the kernel command line, as Kuasar's vmm-task reads them.

Layer contract: agent side, pure parsing (no I/O but ``read_cmdline``). Unknown words are ignored;
``task.debug`` and ``task.enable_tracing`` are bare flags (``task.debug=1`` does not count, as in
vmm-task).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_DEBUG_SHELL = "/bin/bash"


@dataclass(frozen=True, slots=True)
class TaskCmdline:
    debug: bool = False
    debug_shell: str = DEFAULT_DEBUG_SHELL
    log_level: str = "info"
    sharefs_type: str = "9p"
    enable_tracing: bool = False


def parse_cmdline(text: str) -> TaskCmdline:
    values: dict[str, str] = {}
    flags: set[str] = set()
    for word in text.split():
        key, sep, value = word.partition("=")
        if not key.startswith("task."):
            continue
        if sep:
            values[key] = value
        else:
            flags.add(key)
    return TaskCmdline(
        debug="task.debug" in flags,
        debug_shell=values.get("task.debug_shell") or DEFAULT_DEBUG_SHELL,
        log_level=values.get("task.log_level") or "info",
        sharefs_type=values.get("task.sharefs_type") or "9p",
        enable_tracing="task.enable_tracing" in flags,
    )


def read_cmdline(path: str = "/proc/cmdline") -> TaskCmdline:
    """Parse ``path``; a missing or unreadable file gives the defaults."""
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return parse_cmdline(file.read(64 * 1024))
    except OSError:
        return TaskCmdline()
