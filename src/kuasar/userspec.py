"""The user an exec runs as: ``name``, ``uid``, ``name:group`` or ``uid:gid``, checked before use.

Layer contract: neutral bottom-layer module shared by the host CLI (``kuasar.ctl``, which refuses a
bad ``-u`` with a usage error before connecting) and the guest agent (``kuasar.agent``, which
answers one with ``INVALID_ARGUMENT``). Imports only the leaves ``_record`` and ``_text``. It checks the
syntax and the numeric range; looking names up in a passwd or group file is the agent's job.

Why the range stops at 2^32 - 2: ``uid_t`` is 32 bits and ``(uid_t) -1`` means "leave unchanged"
to ``setuid(2)`` and ``setgid(2)``, so ``-u 4294967295`` would silently keep the agent's own user
(root). Larger numbers do not fit at all. A number is decimal digits only (``-1``, ``+5``, ``0x10``
and non-ASCII digits are refused, not reinterpreted as names).
"""

from __future__ import annotations

from kuasar._record import Record
from kuasar._text import compiled

#: The largest uid or gid that names a user: ``(uid_t) -1`` (2^32 - 1) means "unchanged".
MAX_ID = 2**32 - 2
#: Longest user or group name accepted (glibc and shadow's useradd allow far less in practice).
MAX_NAME = 256

TYPE_CHECKING = False
if TYPE_CHECKING:
    import re


def _patterns() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """(a number, a name), compiled on first use: an empty spec (``kuasarctl exec`` without -u)
    needs no ``re``. A name is letters, digits, '_', '.', '-' (not first), and a trailing '$' for
    machine accounts."""
    return compiled(r"[+-]?[0-9]+"), compiled(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\$?")


class InvalidUserSpec(ValueError):
    """A user spec that is malformed or names an out-of-range id; ``str()`` is one line."""


class UserSpec(Record):
    """A checked user spec.

    Attributes:
        user: a uid (``int``) or a user name.
        group: a gid (``int``), a group name, or ``None`` when the spec names no group.
    """

    user: int | str
    group: int | str | None = None


def _part(text: str, kind: str, spec: str) -> int | str:
    id_name = "uid" if kind == "user" else "gid"
    if not text:
        where = "before" if kind == "user" else "after"
        raise InvalidUserSpec(f"invalid user {spec!r}: the {kind} {where} ':' is empty")
    number, name = _patterns()
    if number.fullmatch(text):
        if text[0] in "+-" or int(text) > MAX_ID:
            raise InvalidUserSpec(f"{id_name} {text} is out of range (0 to {MAX_ID})")
        return int(text)
    if len(text) > MAX_NAME or not name.fullmatch(text):
        raise InvalidUserSpec(
            f"invalid {kind} name {text!r} (use a name of letters, digits, '_', '.', '-', "
            f"or a {id_name} from 0 to {MAX_ID})"
        )
    return text


def parse_user_spec(spec: str) -> UserSpec | None:
    """Check ``name``, ``uid``, ``name:group`` or ``uid:gid``; an empty spec means "the default".

    Args:
        spec: the text of ``kuasarctl exec -u`` or of ``ExecStart.user``.

    Returns:
        The parsed spec, or ``None`` for ``""``.

    Raises:
        InvalidUserSpec: a bad character, an empty part, more than one ``:``, or an id outside
            0 … :data:`MAX_ID`.
    """
    if not spec:
        return None
    user, sep, group = spec.partition(":")
    if ":" in group:
        raise InvalidUserSpec(f"invalid user {spec!r}: use USER or USER:GROUP (one ':')")
    parsed_user = _part(user, "user", spec)
    if not sep:
        return UserSpec(parsed_user)
    return UserSpec(parsed_user, _part(group, "group", spec))


__all__ = ["MAX_ID", "InvalidUserSpec", "UserSpec", "parse_user_spec"]
