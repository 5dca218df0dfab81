"""``kuasarctl exec -it`` on both paths (agent API and debug console) in a real terminal (tmux):
exit codes of shells and interrupted commands, the client's window size and TERM, a full screen
reset on detach, and a guest that dies mid-session."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from collections.abc import Callable, Iterator

import pytest

from tests.functional.cli_helpers import LocalSandbox, kuasarctl, local_sandbox
from tests.functional.tmux_helpers import Tmux, wait_for

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
PATHS = {"api": "--agent", "console": "--console"}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[LocalSandbox]:
    with local_sandbox("pod-term-1") as running:
        yield running


def start(tmux: Tmux, sandbox: LocalSandbox, path: str, command: str, rc_file: str) -> Callable[[], str]:
    """Run ``kuasarctl exec -it`` in a 120x40 tmux window; the exit code lands in ``rc_file``."""
    kuasar = f"{sys.executable} -m kuasar.ctl exec -it {PATHS[path]} -d {sandbox.root} {sandbox.id}"
    script = f"{kuasar} {command}; echo $? > {rc_file}; sleep 60"
    assert tmux("new-session", "-d", "-x", "120", "-y", "40", "sh", "-c", script).returncode == 0
    return lambda: tmux("capture-pane", "-p").stdout


def exit_code(rc_file: str) -> int:
    assert wait_for(lambda: os.path.exists(rc_file) and os.path.getsize(rc_file) > 0)
    with open(rc_file) as file:
        return int(file.read())


@pytest.mark.parametrize("path", PATHS)
def test_shell_exit_status_size_and_term(
    path: str, sandbox: LocalSandbox, tmux: Tmux, tmp_path: object
) -> None:
    rc_file = os.path.join(str(tmp_path), "rc")
    screen = start(tmux, sandbox, path, "", rc_file)
    term = tmux("display", "-p", "#{default-terminal}").stdout.strip() or "screen"
    tmux("send-keys", 'echo "size=$(stty size) term=$TERM"', "Enter")
    assert wait_for(lambda: "size=40 120" in screen()), screen()
    assert f"term={term}" in screen() or "term=tmux" in screen(), screen()
    tmux("send-keys", "exit 5", "Enter")
    assert exit_code(rc_file) == 5


@pytest.mark.parametrize("path", PATHS)
def test_ctrl_c_is_130(path: str, sandbox: LocalSandbox, tmux: Tmux, tmp_path: object) -> None:
    rc_file = os.path.join(str(tmp_path), "rc")
    screen = start(tmux, sandbox, path, "sh -c 'echo READY; exec sleep 100'", rc_file)
    assert wait_for(lambda: "READY" in screen()), screen()
    tmux("send-keys", "C-c")
    assert exit_code(rc_file) == 130


@pytest.mark.parametrize("path", PATHS)
def test_detach_resets_the_screen(path: str, sandbox: LocalSandbox, tmux: Tmux, tmp_path: object) -> None:
    rc_file = os.path.join(str(tmp_path), "rc")
    program = "sh -c 'printf \"\\033[?1049h\\033[?25l\\033[?1h\\033[31mREADY\"; exec sleep 100'"
    screen = start(tmux, sandbox, path, program, rc_file)
    assert wait_for(lambda: "READY" in screen()), screen()

    def flags() -> list[str]:
        return tmux("display", "-p", "#{alternate_on} #{cursor_flag} #{keypad_cursor_flag}").stdout.split()

    assert flags() == ["1", "0", "1"]
    tmux("send-keys", "C-]")
    assert exit_code(rc_file) == 0
    assert flags() == ["0", "1", "0"]
    assert "[detached]" in screen()


@pytest.mark.parametrize("path", PATHS)
def test_guest_dying_mid_session_is_125_with_a_message(path: str, tmux: Tmux, tmp_path: object) -> None:
    rc_file = os.path.join(str(tmp_path), "rc")
    with local_sandbox(f"pod-die-{path}") as doomed:
        screen = start(tmux, doomed, path, "sh -c 'echo READY; exec sleep 100'", rc_file)
        assert wait_for(lambda: "READY" in screen()), screen()
        listing = json.loads(kuasarctl("ps", "-o", "json", "-d", doomed.root).stdout)
        os.kill(listing[0]["supervisor_pid"], signal.SIGKILL)
        assert exit_code(rc_file) == 125
        assert "Error:" in screen(), screen()
