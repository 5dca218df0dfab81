"""``python -m kuasar.agent`` as a real process: it runs, and it removes the socket files it bound
when it stops (SIGTERM, SIGINT, or a failed start), but never a file that replaced one of them."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from kuasar import __version__

GUARD = 20.0
AGENT = [sys.executable, "-m", "kuasar.agent", "--cmdline", os.devnull]


@pytest.fixture
def directory() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="ksrstop", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def is_socket(path: str) -> bool:
    return os.path.exists(path) and stat.S_ISSOCK(os.lstat(path).st_mode)


@contextmanager
def running_agent(*flags: str) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m kuasar.agent FLAGS``, once it has written ``ready`` on ``--ready-fd``."""
    read_fd, write_fd = os.pipe()
    process = subprocess.Popen(
        [*AGENT, "--ready-fd", str(write_fd), *flags], pass_fds=(write_fd,), stderr=subprocess.PIPE
    )
    os.close(write_fd)
    try:
        with os.fdopen(read_fd, "rb") as ready:
            assert ready.readline() == b"ready\n", process.communicate(timeout=GUARD)[1]
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=GUARD)


def test_python_m_kuasar_agent_is_the_agent() -> None:
    result = subprocess.run([*AGENT, "--version"], capture_output=True, timeout=GUARD, check=False)
    assert (result.returncode, result.stdout.decode().strip()) == (0, f"kuasar-agent {__version__}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stopping_removes_the_socket_files_it_bound(directory: str, signum: int) -> None:
    api, console = os.path.join(directory, "api.sock"), os.path.join(directory, "1025.sock")
    flags = ("--api", f"unix://{api}", "--console", f"unix://{console}", "--debug-console")
    with running_agent(*flags) as agent:
        assert is_socket(api) and is_socket(console)
        with socket.socket(socket.AF_UNIX) as probe:
            probe.connect(api)  # it serves there
        agent.send_signal(signum)
        _, err = agent.communicate(timeout=GUARD)
        assert agent.returncode == 0, err
    assert not os.path.lexists(api) and not os.path.lexists(console)
    assert b"Traceback" not in err


def test_a_socket_that_replaced_one_of_ours_is_left_alone(directory: str) -> None:
    api, console = os.path.join(directory, "api.sock"), os.path.join(directory, "1025.sock")
    flags = ("--api", f"unix://{api}", "--console", f"unix://{console}", "--debug-console")
    with running_agent(*flags) as agent, socket.socket(socket.AF_UNIX) as successor:
        os.unlink(console)
        successor.bind(console)  # someone else's socket at the same path now
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=GUARD) == 0
        assert is_socket(console)
    assert not os.path.lexists(api)


def test_a_failed_start_removes_the_sockets_already_bound(directory: str) -> None:
    api, blocker = os.path.join(directory, "api.sock"), os.path.join(directory, "not-a-socket")
    with open(blocker, "w", encoding="utf-8") as file:
        file.write("in the way\n")
    argv = [*AGENT, "--api", f"unix://{api}", "--console", f"unix://{blocker}", "--debug-console"]
    result = subprocess.run(argv, capture_output=True, timeout=GUARD, check=False)
    assert result.returncode == 1
    assert b"is not a socket" in result.stderr and b"Traceback" not in result.stderr
    assert not os.path.lexists(api)
    assert os.path.isfile(blocker)
