"""``kuasarctl logs --since/--until`` time forms, docker's set."""

from __future__ import annotations

import pytest

from kuasar.ctl.commands.logs import parse_time
from kuasar.errors import UsageError

NOW = 1_800_000_000 * 10**9


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10m", NOW - 600 * 10**9),
        ("1h30m", NOW - 5400 * 10**9),
        ("2.5s", NOW - 2_500_000_000),
        ("1700000000", 1_700_000_000 * 10**9),
        ("1700000000.25", 1_700_000_000 * 10**9 + 250_000_000),
        ("2026-11-22T10:00:00Z", 1_795_341_600 * 10**9),
        ("2026-11-22T10:00:00.123456789Z", 1_795_341_600 * 10**9 + 123_456_789),
        ("2026-11-22T11:00:00+01:00", 1_795_341_600 * 10**9),
    ],
)
def test_time_forms(text: str, expected: int) -> None:
    assert parse_time(text, NOW) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "10x", "2026-13-45T00:00:00Z", "-5m"])
def test_bad_times_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_time(text, NOW)
