"""``kuasarctl cp`` against a local sandbox: docker-cp addressing, byte-exact files, trees, escapes."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator

import pytest

from kuasar.ctl.commands.cp import Endpoint, parse_endpoint
from kuasar.errors import UsageError
from tests.functional.bundle import container_sandbox, make_bundle
from tests.functional.cli_helpers import LocalSandbox, kuasarctl


@pytest.fixture(scope="module")
def sandbox() -> Iterator[LocalSandbox]:
    with container_sandbox("pod-cli-cp") as sandbox:
        yield sandbox


def cp(sandbox: LocalSandbox, *args: str) -> tuple[int, bytes, bytes]:
    result = kuasarctl("cp", "-d", sandbox.root, *args, timeout=120)
    return result.returncode, result.stdout, result.stderr


def sha(path: str) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def test_endpoint_addressing_follows_docker_cp() -> None:
    assert parse_endpoint("pod:/etc/hosts") == Endpoint("pod", "/etc/hosts")
    assert parse_endpoint("./a:b") == Endpoint(None, "./a:b")
    assert parse_endpoint("/abs/x:y") == Endpoint(None, "/abs/x:y")
    assert parse_endpoint("plain") == Endpoint(None, "plain")
    with pytest.raises(UsageError):
        parse_endpoint("pod:")


def test_100_mib_file_round_trip_through_the_guest_filesystem(
    sandbox: LocalSandbox, tmp_path: object
) -> None:
    tmp = str(tmp_path)
    source = os.path.join(tmp, "big.bin")
    with open(source, "wb") as file:
        for _ in range(100):
            file.write(os.urandom(1 << 20))
    os.chmod(source, 0o604)
    os.utime(source, (1_650_000_000, 1_650_000_000))
    guest_dir = os.path.join(tmp, "guest")
    os.mkdir(guest_dir)
    code, out, err = cp(sandbox, source, f"{sandbox.id}:{guest_dir}/")
    assert (code, out, err) == (0, b"", b"")  # nothing on a pipe, not even a progress line
    back = os.path.join(tmp, "back.bin")
    assert cp(sandbox, f"{sandbox.id}:{guest_dir}/big.bin", back) == (0, b"", b"")
    assert sha(back) == sha(source) == sha(os.path.join(guest_dir, "big.bin"))
    info = os.stat(back)
    assert (stat.S_IMODE(info.st_mode), int(info.st_mtime)) == (0o604, 1_650_000_000)


def test_directory_round_trip_into_a_container(sandbox: LocalSandbox, tmp_path: object) -> None:
    tmp = str(tmp_path)
    bundle = make_bundle(os.path.join(tmp, "bundle"), ["sleep", "300"])
    created = kuasarctl("container", "create", "--start", "-d", sandbox.root, sandbox.id, "cpc", bundle)
    assert created.returncode == 0, created.stderr.decode()
    try:
        tree = os.path.join(tmp, "tree")
        os.makedirs(os.path.join(tree, "sub"))
        with open(os.path.join(tree, "sub", "tool"), "wb") as file:
            file.write(b"#!/bin/sh\necho hi\n")
        os.chmod(os.path.join(tree, "sub", "tool"), 0o750)
        os.utime(os.path.join(tree, "sub", "tool"), (1_600_000_000, 1_600_000_000))
        os.chmod(os.path.join(tree, "sub"), 0o711)
        os.utime(os.path.join(tree, "sub"), (1_500_000_000, 1_500_000_000))
        code, _, err = cp(sandbox, "--container", "cpc", tree, f"{sandbox.id}:/tmp")
        assert code == 0, err
        inside = os.path.join(bundle, "rootfs", "tmp", "tree", "sub", "tool")
        assert stat.S_IMODE(os.stat(inside).st_mode) == 0o750
        back = os.path.join(tmp, "back")
        code, _, err = cp(sandbox, "--container", "cpc", f"{sandbox.id}:/tmp/tree", back)
        assert code == 0, err
        tool = os.stat(os.path.join(back, "sub", "tool"))
        sub = os.stat(os.path.join(back, "sub"))
        assert (stat.S_IMODE(tool.st_mode), int(tool.st_mtime)) == (0o750, 1_600_000_000)
        assert (stat.S_IMODE(sub.st_mode), int(sub.st_mtime)) == (0o711, 1_500_000_000)
        with open(os.path.join(back, "sub", "tool"), "rb") as file:
            assert file.read() == b"#!/bin/sh\necho hi\n"
    finally:
        kuasarctl("container", "rm", "-f", "-d", sandbox.root, sandbox.id, "cpc")


def test_escapes_and_missing_paths_are_refused(sandbox: LocalSandbox, tmp_path: object) -> None:
    tmp = str(tmp_path)
    bundle = make_bundle(os.path.join(tmp, "bundle"), ["sleep", "300"])
    os.symlink("/etc/shadow", os.path.join(bundle, "rootfs", "abs-link"))
    assert (
        kuasarctl("container", "create", "--start", "-d", sandbox.root, sandbox.id, "esc", bundle).returncode
        == 0
    )
    try:
        code, _, err = cp(
            sandbox, "--container", "esc", f"{sandbox.id}:../../etc/passwd", os.path.join(tmp, "x")
        )
        assert code == 125 and b"the agent refused: " in err  # relative: refused before any resolution
        code, _, err = cp(
            sandbox, "--container", "esc", f"{sandbox.id}:/../../etc/passwd", os.path.join(tmp, "x")
        )
        assert code == 125 and b"the agent refused (permission denied)" in err
        code, _, err = cp(sandbox, "--container", "esc", f"{sandbox.id}:/abs-link", os.path.join(tmp, "x"))
        assert code == 125 and b"the agent refused: " in err  # the container's /etc/shadow: there is none
        assert not os.path.exists(os.path.join(tmp, "x"))
        code, _, err = cp(sandbox, os.path.join(tmp, "nope"), f"{sandbox.id}:/tmp/")
        assert code == 125 and b"local" in err
        code, _, err = cp(sandbox, "a", "b")
        assert code == 2 and b"exactly one" in err
    finally:
        kuasarctl("container", "rm", "-f", "-d", sandbox.root, sandbox.id, "esc")


def test_tree_with_a_symlink_out_of_it_is_refused_in_one_line(
    sandbox: LocalSandbox, tmp_path: object
) -> None:
    tmp = str(tmp_path)
    tree = os.path.join(tmp, "tree")
    os.makedirs(tree)
    os.symlink("../..", os.path.join(tree, "up"))  # would point above the destination's parent
    guest = os.path.join(tmp, "guest")
    os.mkdir(guest)
    code, out, err = cp(sandbox, tree, f"{sandbox.id}:{guest}/")
    assert (code, out) == (125, b""), err
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "unsafe tar member './up'" in lines[0], lines
    assert os.listdir(os.path.join(guest, "tree")) == []  # the link was not made
