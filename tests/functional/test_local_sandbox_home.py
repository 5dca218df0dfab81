"""A local sandbox's shells get a HOME of the sandbox's own (``ROOT/ID/home``, 0700), never the host
user's: a ``~/.bashrc`` that leaves a marker file is not read by ``kuasarctl exec -it`` (agent API or
console) nor by the debug console's interactive shell."""

from __future__ import annotations

import os
import re
import select
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.functional.cli_helpers import KUASARCTL, kuasarctl, short_tmpdir

GUARD = 30.0
NAME = "pod-home-1"


@dataclass(frozen=True)
class Sandbox:
    root: str
    marker: str  # created by the host user's start-up files, should any shell read them

    @property
    def home(self) -> str:
        return os.path.join(self.root, NAME, "home")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    """A local sandbox started by a user whose HOME has start-up files that leave a marker."""
    work, root = short_tmpdir("ksrhost"), short_tmpdir()
    host_home, marker = os.path.join(work, "home"), os.path.join(work, "startup-files-were-read")
    os.mkdir(host_home)
    for name in (".bashrc", ".bash_profile", ".profile"):
        with open(os.path.join(host_home, name), "w", encoding="utf-8") as file:
            file.write(f"touch {marker}\n")
    try:
        started = kuasarctl(
            "sandbox", "run", "-d", root, "--name", NAME, env={**os.environ, "HOME": host_home}
        )
        assert started.returncode == 0, started.stderr.decode()
        yield Sandbox(root, marker)
    finally:
        kuasarctl("sandbox", "stop", "-d", root, NAME)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def clean(sandbox: Sandbox) -> Sandbox:
    if os.path.exists(sandbox.marker):
        os.unlink(sandbox.marker)
    return sandbox


def on_a_terminal(*args: str) -> tuple[int, bytes]:
    """Run ``kuasarctl ARGS`` with a PTY as its terminal; its exit status and everything it wrote."""
    master, slave = os.openpty()
    try:
        process = subprocess.Popen(
            [*KUASARCTL, *args], stdin=slave, stdout=slave, stderr=slave, start_new_session=True
        )
        os.close(slave)
        slave = -1
        output = bytearray()
        deadline = time.monotonic() + GUARD
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], deadline - time.monotonic())
            if not ready:
                break
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: kuasarctl is gone and nothing else holds the terminal
                break
            if not chunk:
                break
            output += chunk
        return process.wait(timeout=GUARD), bytes(output)
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)


def homes_in(output: bytes) -> list[str]:
    return re.findall(r"home=(/\S+)", output.decode(errors="replace"))


def test_home_is_a_private_directory_of_the_sandbox(sandbox: Sandbox) -> None:
    info = os.stat(sandbox.home)
    assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o700
    assert info.st_uid == os.geteuid()


@pytest.mark.parametrize("path", [[], ["--console"]], ids=["api", "console"])
def test_exec_sees_the_sandbox_home(clean: Sandbox, path: list[str]) -> None:
    result = kuasarctl("exec", *path, "-d", clean.root, NAME, "sh", "-c", "echo home=$HOME")
    assert result.returncode == 0, result.stderr.decode()
    assert homes_in(result.stdout) == [clean.home]


@pytest.mark.parametrize("path", [[], ["--console"]], ids=["api", "console"])
def test_an_interactive_bash_does_not_read_the_host_users_bashrc(clean: Sandbox, path: list[str]) -> None:
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    status, output = on_a_terminal(
        "exec", "-it", *path, "-d", clean.root, NAME, "bash", "-ic", "echo home=$HOME"
    )
    assert status == 0, output
    assert homes_in(output) == [clean.home], output
    assert not os.path.exists(clean.marker)


def test_the_debug_consoles_interactive_shell_does_not_read_the_host_users_bashrc(clean: Sandbox) -> None:
    with socket.socket(socket.AF_UNIX) as console:
        console.settimeout(GUARD)
        console.connect(os.path.join(clean.root, NAME, "task.socket"))
        console.sendall(b"CONNECT 1025\n")
        reply = b""
        while not reply.endswith(b"\n"):
            reply += console.recv(1)
        assert reply.startswith(b"OK "), reply
        console.sendall(b"echo home=$HOME; exit\n")  # a plain session: the interactive shell
        output = b""
        while chunk := console.recv(65536):
            output += chunk
    assert homes_in(output) == [clean.home], output
    assert not os.path.exists(clean.marker)


def test_console_exec_sessions_keep_no_shell_history(clean: Sandbox) -> None:
    """Exec mode's bash neither reads nor rewrites ``~/.bash_history`` (its ``exec`` saved the
    history, so every session read and rewrote a file of up to 500 lines of wrapper lines)."""
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    history = os.path.join(clean.home, ".bash_history")
    if os.path.exists(history):
        os.unlink(history)
    for _ in range(2):
        result = kuasarctl("exec", "--console", "-d", clean.root, NAME, "true")
        assert result.returncode == 0, result.stderr.decode()
    assert not os.path.exists(history)
