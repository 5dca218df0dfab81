"""Who an agent process runs as: a checked ``user`` spec resolved against the guest's passwd/group.

Layer contract: agent side; stdlib (os, pwd, grp), ``kuasar.userspec`` (the spec's syntax and id
ranges, shared with the host) and ``kuasar.errors`` / ``kuasar.codes`` for the statuses a bad
spec becomes. Used by :mod:`kuasar.agent.process` and, for the early check, by the Exec service and
``runc exec``.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
from dataclasses import dataclass

from kuasar.codes import Code
from kuasar.errors import RPCError
from kuasar.userspec import InvalidUserSpec, UserSpec, parse_user_spec


@dataclass(frozen=True, slots=True)
class Credentials:
    """Who the process runs as (``None``: the agent's own)."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str
    name: str


def parse_user(spec: str) -> UserSpec | None:
    """:func:`kuasar.userspec.parse_user_spec` with the agent's status for a bad spec.

    Raises:
        RPCError: ``INVALID_ARGUMENT`` for a malformed spec or an id outside 0 … 2^32-2.
    """
    try:
        return parse_user_spec(spec)
    except InvalidUserSpec as exc:
        raise RPCError(Code.INVALID_ARGUMENT, str(exc)) from None


def resolve_user(spec: str) -> Credentials | None:
    """``name``, ``uid``, ``name:group`` or ``uid:gid`` -> credentials; empty -> ``None``.

    A uid without a passwd entry runs with gid 0 and no supplementary groups, as docker does.

    Raises:
        RPCError: ``INVALID_ARGUMENT`` for a malformed spec, an out-of-range id, or an unknown
            user or group name; ``PERMISSION_DENIED`` when switching to another user without
            being root.
    """
    parsed = parse_user(spec)
    if parsed is None:
        return None
    entry: pwd.struct_passwd | None
    try:
        entry = pwd.getpwuid(parsed.user) if isinstance(parsed.user, int) else pwd.getpwnam(parsed.user)
    except KeyError:
        if isinstance(parsed.user, str):
            raise RPCError(Code.INVALID_ARGUMENT, f"unknown user {parsed.user!r}") from None
        entry = None
    uid = parsed.user if isinstance(parsed.user, int) else entry.pw_uid  # type: ignore[union-attr]
    if isinstance(parsed.group, int):
        gid = parsed.group
    elif parsed.group is not None:
        try:
            gid = grp.getgrnam(parsed.group).gr_gid
        except KeyError:
            raise RPCError(Code.INVALID_ARGUMENT, f"unknown group {parsed.group!r}") from None
    else:
        gid = entry.pw_gid if entry is not None else 0
    name = entry.pw_name if entry is not None else str(uid)
    groups: tuple[int, ...] = (gid,)
    if entry is not None and parsed.group is None:
        with contextlib.suppress(OSError):
            groups = tuple(os.getgrouplist(entry.pw_name, gid))
    if os.geteuid() != 0 and (uid, gid) != (os.geteuid(), os.getegid()):
        raise RPCError(Code.PERMISSION_DENIED, f"cannot run as {spec!r}: the agent is not root")
    home = entry.pw_dir if entry is not None else "/"
    return Credentials(uid, gid, groups, home, name)
