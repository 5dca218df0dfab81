"""``/proc/self/mounts``: which filesystem is mounted where.

Layer contract: neutral (host and guest share it): stdlib only, reads ``/proc`` and parses it. The
guest agent's early init asks what is already mounted; ``kuasarctl sandbox run`` names the
filesystem that refused a sandbox root.
"""

from __future__ import annotations

import os

__all__ = ["filesystem_of", "parse_mounts", "read_mounts"]

#: The kernel writes these bytes of a path as octal escapes (space, tab, newline, backslash).
_ESCAPES = ("040", "011", "012", "134")


def _unescape(field: str) -> str:
    for code in _ESCAPES:
        field = field.replace("\\" + code, chr(int(code, 8)))
    return field


def parse_mounts(text: str) -> dict[str, str]:
    """Target -> filesystem type of the topmost mount there, from ``/proc/self/mounts`` text
    (later lines are mounted on top of earlier ones at the same target)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            found[_unescape(fields[1])] = fields[2]
    return found


def read_mounts() -> dict[str, str]:
    """:func:`parse_mounts` of this process's ``/proc/self/mounts``; empty when it cannot be read."""
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="surrogateescape") as file:
            return parse_mounts(file.read())
    except OSError:
        return {}


def filesystem_of(path: str, mounts: dict[str, str] | None = None) -> str | None:
    """The type of the filesystem ``path`` (symlinks resolved) is on: the longest mount target
    that contains it; None when none does (or the mounts cannot be read)."""
    real, best, fstype = os.path.realpath(path), "", None
    for target, kind in (read_mounts() if mounts is None else mounts).items():
        inside = real == target or real.startswith(target.rstrip("/") + "/")
        if inside and len(target) >= len(best):
            best, fstype = target, kind
    return fstype
