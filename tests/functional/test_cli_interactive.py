"""``kuasarctl exec -it`` in a real terminal: tmux runs it, we type, we read the screen."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator

import pytest

from tests.functional.cli_helpers import LocalSandbox, local_sandbox, short_tmpdir
from tests.functional.tmux_helpers import Tmux, shows_prompt, wait_for

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[LocalSandbox]:
    with local_sandbox("pod-tty-1") as running:
        yield running


def written(path: str) -> bool:
    """The shell's redirect has created ``path`` and the command has written its line (the file
    exists as soon as the redirect opens it, before anything is in it)."""
    try:
        with open(path) as file:
            return file.read().endswith("\n")
    except FileNotFoundError:
        return False


def test_interactive_shell_and_terminal_restored(sandbox: LocalSandbox, tmux: Tmux, tmp_path: object) -> None:
    work = short_tmpdir("ksrtty")
    before, after, done = (os.path.join(work, name) for name in ("before", "after", "done"))
    kuasarctl = f"{sys.executable} -m kuasar.ctl exec -it -d {sandbox.root} pod-tty"
    script = f"stty -g > {before}; {kuasarctl}; echo rc=$? > {done}; stty -g > {after}"
    assert (
        tmux("new-session", "-d", "-x", "120", "-y", "40", "sh", "-c", script + "; sleep 30").returncode == 0
    )

    def screen() -> str:
        return tmux("capture-pane", "-p").stdout

    try:
        assert wait_for(lambda: shows_prompt(tmux)), screen()
        tmux("send-keys", "echo $((6*7))", "Enter")
        assert wait_for(lambda: "42" in screen().replace("6*7", "")), screen()
        tmux("send-keys", "exit", "Enter")
        assert wait_for(lambda: written(done) and written(after)), screen()
        with open(done) as file:
            assert file.read().strip() == "rc=0"
        with open(before) as first, open(after) as second:
            assert first.read() == second.read()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_escape_key_detaches_and_restores_terminal(sandbox: LocalSandbox, tmux: Tmux) -> None:
    work = short_tmpdir("ksrtty")
    before, after = os.path.join(work, "before"), os.path.join(work, "after")
    kuasarctl = f"{sys.executable} -m kuasar.ctl exec -it -d {sandbox.root} pod-tty"
    script = f"stty -g > {before}; {kuasarctl} sh; stty -g > {after}"
    tmux("new-session", "-d", "-x", "100", "-y", "30", "sh", "-c", script + "; sleep 30")
    try:
        assert wait_for(lambda: shows_prompt(tmux)), tmux("capture-pane", "-p").stdout
        tmux("send-keys", "C-]")
        assert wait_for(lambda: written(after)), tmux("capture-pane", "-p").stdout
        with open(before) as first, open(after) as second:
            assert first.read() == second.read()
        assert "[detached]" in tmux("capture-pane", "-p").stdout
    finally:
        shutil.rmtree(work, ignore_errors=True)
