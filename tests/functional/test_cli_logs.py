"""``kuasarctl logs`` against a local sandbox running real runc containers."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.functional.bundle import container_sandbox, make_bundle
from tests.functional.cli_helpers import KUASARCTL, LocalSandbox, kuasarctl


@pytest.fixture(scope="module")
def sandbox() -> Iterator[LocalSandbox]:
    with container_sandbox("pod-cli-logs") as sandbox:
        yield sandbox


def run_container(sandbox: LocalSandbox, tmp: str, container_id: str, script: str) -> str:
    bundle = make_bundle(os.path.join(tmp, container_id), ["sh", "-c", script])
    created = kuasarctl(
        "container", "create", "--start", "-d", sandbox.root, sandbox.id, container_id, bundle
    )
    assert created.returncode == 0, created.stderr.decode()
    return bundle


def wait_stopped(sandbox: LocalSandbox, container_id: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        listed = kuasarctl("containers", "-d", sandbox.root, "-q", sandbox.id)
        if container_id.encode() not in listed.stdout.split():
            return
        time.sleep(0.1)
    raise AssertionError(f"{container_id} did not stop")


def logs(sandbox: LocalSandbox, *flags: str, container: str) -> subprocess.CompletedProcess[bytes]:
    return kuasarctl("logs", "-d", sandbox.root, *flags, sandbox.id, container)


def test_streams_stay_apart_and_filters_apply(sandbox: LocalSandbox, tmp_path: object) -> None:
    run_container(sandbox, str(tmp_path), "apart", "echo o1; echo e1 >&2; echo o2; printf 'no-newline'")
    wait_stopped(sandbox, "apart")
    every = logs(sandbox, container="apart")
    assert every.returncode == 0
    assert every.stdout == b"o1\no2\nno-newline"
    assert every.stderr == b"e1\n"
    assert logs(sandbox, "--tail", "1", "--stdout", container="apart").stdout == b"no-newline"
    only_err = logs(sandbox, "--stderr", container="apart")
    assert (only_err.stdout, only_err.stderr) == (b"", b"e1\n")
    stamped = logs(sandbox, "-t", "--stdout", "--tail", "2", container="apart").stdout.decode()
    assert re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z o2\n)(\S+Z no-newline)", stamped), stamped
    assert logs(sandbox, "--since", "2099-01-01T00:00:00Z", container="apart").stdout == b""
    assert logs(sandbox, "--until", "1", container="apart").stdout == b""


def test_unknown_container_is_not_found(sandbox: LocalSandbox) -> None:
    result = logs(sandbox, container="ghost")
    assert result.returncode == 125 and result.stderr.startswith(b"Error: the agent refused: ")
    assert b"ghost" in result.stderr and b"NOT_FOUND" not in result.stderr


def test_follow_sees_new_lines_and_exits_0_when_the_container_stops(
    sandbox: LocalSandbox, tmp_path: object
) -> None:
    script = "echo first; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo second; echo third >&2"
    bundle = run_container(sandbox, str(tmp_path), "follow", script)
    process = subprocess.Popen(
        [*KUASARCTL, "logs", "-f", "-d", sandbox.root, sandbox.id, "follow"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == b"first\n"
        open(os.path.join(bundle, "rootfs", "tmp", "go"), "w").close()
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert (process.returncode, out, err) == (0, b"second\n", b"third\n")


def test_follow_ends_on_ctrl_c_with_130_and_no_traceback(sandbox: LocalSandbox, tmp_path: object) -> None:
    run_container(sandbox, str(tmp_path), "forever", "echo up; sleep 300")
    process = subprocess.Popen(
        [*KUASARCTL, "logs", "-f", "-d", sandbox.root, sandbox.id, "forever"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == b"up\n"
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130
    assert b"Traceback" not in err
    kuasarctl("container", "rm", "-f", "-d", sandbox.root, sandbox.id, "forever")
