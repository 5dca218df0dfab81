"""``kuasarctl exec -u`` against a local sandbox: an out-of-range id never runs the command as root."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.functional.cli_helpers import LocalSandbox, kuasarctl, local_sandbox, short_tmpdir

BAD_USERS = ["4294967295", "99999999999", "0:99999999999", "-1", "root:"]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[LocalSandbox]:
    with local_sandbox("pod-cli-user") as sandbox:
        yield sandbox


@pytest.mark.parametrize("user", BAD_USERS)
def test_out_of_range_user_is_refused_not_run_as_root(sandbox: LocalSandbox, user: str) -> None:
    result = sandbox.exec("id", "-u", flags=["-u", user])
    assert result.returncode in (2, 125), result
    assert result.stdout == b""  # never "0": (uid_t)-1 would have kept the agent's root
    lines = result.stderr.decode().strip().splitlines()
    assert "out of range" in lines[0] or "is empty" in lines[0], lines
    assert "Traceback" not in result.stderr.decode() and "UNKNOWN" not in result.stderr.decode()


@pytest.mark.parametrize("user", BAD_USERS)
def test_bad_user_is_a_usage_error_before_connecting(user: str) -> None:
    empty_root = short_tmpdir()
    try:
        # No sandbox exists: exit 2 (not 125 "No pods found") shows -u was checked first.
        result = kuasarctl("exec", "-u", user, "-d", empty_root, "pod-nowhere", "id", "-u")
    finally:
        os.rmdir(empty_root)
    assert result.returncode == 2, result
    assert len(result.stderr.decode().strip().splitlines()) == 1, result.stderr
