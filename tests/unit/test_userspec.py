"""The shared user-spec check (``kuasarctl exec -u`` and the agent's ``ExecStart.user``)."""

from __future__ import annotations

import pytest

from kuasar.ctl.commands._common import check_user_spec
from kuasar.errors import UsageError
from kuasar.userspec import MAX_ID, InvalidUserSpec, UserSpec, parse_user_spec


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("", None),
        ("0", UserSpec(0)),
        ("root", UserSpec("root")),
        ("www-data", UserSpec("www-data")),
        ("_apt", UserSpec("_apt")),
        ("host$", UserSpec("host$")),
        ("4294967294", UserSpec(MAX_ID)),
        ("0:0", UserSpec(0, 0)),
        ("nobody:nogroup", UserSpec("nobody", "nogroup")),
        ("65534:4294967294", UserSpec(65534, MAX_ID)),
        ("007", UserSpec(7)),
    ],
)
def test_valid_specs(spec: str, parsed: UserSpec | None) -> None:
    assert parse_user_spec(spec) == parsed
    assert check_user_spec(spec) == spec


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("4294967295", "uid 4294967295 is out of range (0 to 4294967294)"),  # (uid_t)-1: "unchanged"
        ("99999999999", "uid 99999999999 is out of range"),
        ("0:99999999999", "gid 99999999999 is out of range"),
        ("0:4294967295", "gid 4294967295 is out of range"),
        ("-1", "uid -1 is out of range"),
        ("+5", "uid +5 is out of range"),
        (":0", "is empty"),
        ("root:", "is empty"),
        ("0:0:0", "one ':'"),
        ("a b", "invalid user name 'a b'"),
        ("-rf", "invalid user name '-rf'"),
        ("x\n", "invalid user name 'x\\n'"),
        ("\x1b[2J", "invalid user name '\\x1b[2J'"),
        ("a/b", "invalid user name"),
        ("\u0661", "invalid user name"),  # a non-ASCII digit is neither a number nor a name
        ("root:a,b", "invalid group name 'a,b'"),
        ("x" * 300, "invalid user name"),
    ],
)
def test_invalid_specs_are_one_clear_line(spec: str, words: str) -> None:
    with pytest.raises(InvalidUserSpec) as caught:
        parse_user_spec(spec)
    assert words in str(caught.value)
    assert "\n" not in str(caught.value) and "\x1b" not in str(caught.value)
    with pytest.raises(UsageError) as usage:
        check_user_spec(spec)
    assert usage.value.exit_code == 2 and str(usage.value) == str(caught.value)
