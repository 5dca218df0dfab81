"""A private tmux server per test, and a bounded poll: for tests that drive kuasarctl in a real terminal."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from tests.functional.cli_helpers import short_tmpdir

Tmux = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    """``tmux(*args)`` against a server of this test's own, killed afterwards."""
    socket_dir = short_tmpdir("ksrtmux")
    socket = os.path.join(socket_dir, "tmux.sock")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-S", socket, *args], capture_output=True, text=True, check=False, timeout=10
        )

    yield run
    run("kill-server")
    shutil.rmtree(socket_dir, ignore_errors=True)


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes (a terminal has no event to wait on)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def shows_prompt(tmux: Tmux) -> bool:
    """Whether the pane ends in a shell prompt (``#`` as root, ``$`` otherwise): the remote shell
    has started and reads its input, so keys sent now reach it (not a terminal still being set up)."""
    return tmux("capture-pane", "-p").stdout.rstrip().endswith(("#", "$"))
