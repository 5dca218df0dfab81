"""Diagnosis from the installed CLI: hostile IDs are escaped, a wrong or unreadable root is named.

Sandboxes here are directories holding a ``task.socket`` file: discovery is all these cases need.
Permission cases run kuasarctl as ``nobody`` through ``setpriv`` (the tests run as root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.functional.cli_helpers import KUASARCTL, kuasarctl, kuasarctl_as_nobody, short_tmpdir

RAW_CONTROLS = {chr(c) for c in range(0x20) if chr(c) != "\n"} | {"\x7f"}


@pytest.fixture
def root() -> Iterator[str]:
    path = short_tmpdir()
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def fake_sandbox(root: str, sandbox_id: str | bytes, mode: int = 0o755) -> str:
    directory = os.path.join(os.fsencode(root), os.fsencode(sandbox_id))
    os.mkdir(directory)
    open(os.path.join(directory, b"task.socket"), "wb").close()
    os.chmod(directory, mode)
    return os.fsdecode(directory)


def assert_no_raw_controls(text: str) -> None:
    assert not RAW_CONTROLS & set(text), repr(text)


def test_hostile_prefix_is_escaped_in_the_one_line_error(root: str) -> None:
    fake_sandbox(root, "pod-a")
    result = kuasarctl("exec", "-t", "-d", root, "\x1b[2J\x1b]0;pwned\x07\nx", "true")
    err = result.stderr.decode()
    assert result.returncode == 125
    assert_no_raw_controls(err)
    assert err.splitlines() == [
        'Error: No pod found with prefix "\\x1b[2J\\x1b]0;pwned\\x07\\nx". Available pods:',
        "  pod-a",
    ]


def test_hostile_directory_names_are_escaped_in_listings(root: str) -> None:
    fake_sandbox(root, "pod-\x1b]0;pwned\x07")
    fake_sandbox(root, b"pod-\xff\xfe")
    fake_sandbox(root, "pod-\u00e9t\u00e9")  # printable non-ASCII stays as it is
    result = kuasarctl("exec", "-d", root, "pod", "true")
    assert result.returncode == 125
    assert result.stderr.decode().splitlines() == [
        'Error: Pod prefix "pod" matches multiple pods:',
        "  pod-\\x1b]0;pwned\\x07",
        "  pod-\u00e9t\u00e9",
        "  pod-\\xff\\xfe",  # sorted as Python sorts the names (undecodable bytes last)
        "Please provide a more specific prefix.",
    ]
    for flags in ([], ["-q"], ["--no-headers"]):
        listing = kuasarctl("ps", "-d", root, "--probe-timeout", "0.2", *flags)
        assert listing.returncode == 0, listing.stderr
        text = listing.stdout.decode()
        assert_no_raw_controls(text)
        assert "pod-\\x1b]0;pwned\\x07" in text and "pod-\\xff\\xfe" in text and "pod-\u00e9t\u00e9" in text


def test_non_utf8_query_is_escaped(root: str) -> None:
    fake_sandbox(root, "pod-a")
    result = subprocess.run(
        [*map(os.fsencode, KUASARCTL), b"exec", b"-d", os.fsencode(root), b"q\xff\x9b", b"true"],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )
    assert result.returncode == 125
    assert result.stderr.splitlines()[0] == b'Error: No pod found with prefix "q\\xff\\x9b". Available pods:'


def test_usage_errors_are_escaped_too() -> None:
    result = kuasarctl("ps", "\x1b[2J")
    assert result.returncode == 2
    assert_no_raw_controls(result.stderr.decode())
    assert "unrecognized arguments: \\x1b[2J" in result.stderr.decode()


@pytest.mark.parametrize(
    ("command", "operands"),
    [
        (["ps"], []),
        (["exec"], ["pod", "true"]),
        (["sandbox", "stop"], ["pod"]),
        (["info"], ["pod"]),
        (["logs"], ["pod", "web"]),
        (["containers"], ["pod"]),
    ],
)
def test_a_missing_root_given_with_d_is_named(root: str, command: list[str], operands: list[str]) -> None:
    typo = os.path.join(root, "typo")
    result = kuasarctl(*command, "-d", typo, *operands)
    assert (result.returncode, result.stdout) == (125, b"")
    assert result.stderr.decode().splitlines()[0] == f"Error: no such directory: {typo}"


def test_a_missing_root_from_the_environment_is_named(root: str) -> None:
    typo = os.path.join(root, "typo")
    result = kuasarctl("ps", env={**os.environ, "KUASAR_SOCKET_DIR": typo})
    assert result.returncode == 125
    assert result.stderr.decode().startswith(f"Error: no such directory: {typo}\n")
    # A root that exists but holds no sandbox keeps the original tool's message, and ps its empty table.
    result = kuasarctl("exec", "pod", "true", env={**os.environ, "KUASAR_SOCKET_DIR": root})
    assert result.returncode == 125
    assert (
        result.stderr.decode() == f"Error: No pods found in {root}. Please check if any pods are running.\n"
    )
    listing = kuasarctl("ps", "-d", root)
    assert (listing.returncode, listing.stdout.decode().split()[:2]) == (0, ["ID", "KIND"])


def test_a_file_given_as_root_is_named(root: str) -> None:
    path = os.path.join(root, "file")
    open(path, "w").close()
    result = kuasarctl("exec", "-d", path, "pod", "true")
    assert result.returncode == 125
    assert result.stderr.decode().startswith(f"Error: not a directory: {path}\n")


def test_non_root_on_the_real_layout_is_told_to_use_root(root: str) -> None:
    directory = fake_sandbox(root, "pod-abc-123", mode=0o700)  # as Kuasar lays out /run/kuasar-vmm
    expected = f"Error: permission denied: cannot read {directory} (run as root / sudo)"
    for command in (["exec", "-d", root, "pod-abc", "true"], ["exec", "-d", root, "pod-abc-123", "true"]):
        result = kuasarctl_as_nobody(*command)
        assert (result.returncode, result.stderr.decode().splitlines()[0]) == (125, expected)
    listing = kuasarctl_as_nobody("ps", "-d", root)
    assert listing.returncode == 125
    assert listing.stderr.decode().splitlines()[0] == expected
    direct = kuasarctl_as_nobody("exec", "-d", root, directory, "true")
    assert (direct.returncode, direct.stderr.decode().splitlines()[0]) == (125, expected)


def test_an_unreadable_root_is_permission_denied(root: str) -> None:
    private = os.path.join(root, "private")
    os.mkdir(private, 0o700)
    fake_sandbox(private, "pod-1")
    expected = f"Error: permission denied: cannot read {private} (run as root / sudo)"
    for command in (["ps", "-d", private], ["exec", "-d", private, "pod-1", "true"]):
        result = kuasarctl_as_nobody(*command)
        assert (result.returncode, result.stderr.decode().splitlines()[0]) == (125, expected)
