"""``kuasarctl agent -i`` in a real terminal (tmux): the prompt, readline completion of methods and
fields, history (kept in a file), a bad line that leaves the session alive, ``quit``, Ctrl-D, and
Ctrl-C with the terminal's settings restored."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator

import pytest

from tests.functional.cli_helpers import LocalSandbox, local_sandbox
from tests.functional.tmux_helpers import Tmux, wait_for

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
PROMPT = "agent> "


@pytest.fixture(scope="module")
def sandbox() -> Iterator[LocalSandbox]:
    with local_sandbox("pod-agent-i") as running:
        yield running


def start(tmux: Tmux, sandbox: LocalSandbox, directory: str, *flags: str) -> Callable[[], str]:
    """``kuasarctl agent -i`` in a 150x50 window; its exit code and ``stty -a`` land in ``directory``."""
    history = os.path.join(directory, "history")
    kuasar = f"{sys.executable} -m kuasar.ctl agent -i {' '.join(flags)} -d {sandbox.root} {sandbox.id}"
    # the trap keeps the script alive through a Ctrl-C (it goes to the whole foreground group)
    script = (
        f"trap true INT; KUASARCTL_AGENT_HISTORY={history} {kuasar}; echo $? > {directory}/rc;"
        f" stty -a > {directory}/stty; echo END; sleep 60"
    )
    assert tmux("new-session", "-d", "-x", "150", "-y", "50", "sh", "-c", script).returncode == 0
    screen = lambda: tmux("capture-pane", "-p", "-S", "-200").stdout  # noqa: E731
    assert wait_for(lambda: screen().rstrip().endswith(PROMPT.rstrip())), screen()
    return screen


def prompts(screen: Callable[[], str]) -> int:
    return sum(line.startswith(PROMPT.rstrip()) for line in screen().splitlines())


def type_line(tmux: Tmux, screen: Callable[[], str], *keys: str) -> None:
    """Type ``keys`` and wait until the next prompt shows (the line has been run)."""
    before = prompts(screen)
    tmux("send-keys", *keys)
    assert wait_for(lambda: prompts(screen) > before and screen().rstrip().endswith(PROMPT.rstrip())), (
        screen()
    )


def exit_code(directory: str) -> int:
    path = os.path.join(directory, "rc")
    assert wait_for(lambda: os.path.exists(path) and os.path.getsize(path) > 0)
    with open(path) as file:
        return int(file.read())


def test_completion_history_and_quit(sandbox: LocalSandbox, tmux: Tmux, tmp_path: object) -> None:
    directory = str(tmp_path)
    screen = start(tmux, sandbox, directory)
    assert "connected to pod-agent-i" in screen() and "(kuasar-agent)" in screen()
    type_line(tmux, screen, "Ping message=one", "Enter")
    assert '"message": "pong: one"' in screen()
    # a method name completes...
    type_line(tmux, screen, "GetSys", "Tab", "Enter")
    assert "kuasar.agent.v1.Agent/GetSystemInfo: OK" in screen()
    # ... and so do the request's fields, nested ones too
    type_line(tmux, screen, "Ping mess", "Tab", "two", "Enter")
    assert "agent> Ping message=two" in screen() and '"message": "pong: two"' in screen()
    type_line(tmux, screen, "ExecVMProcess comm", "Tab", "'echo via-i'", "Enter")
    assert '"out": "via-i\\n"' in screen()
    # a bad line is reported; the session goes on
    type_line(tmux, screen, "Nope", "Enter")
    assert "Error: unknown method 'Nope'" in screen()
    # history: Up twice is the ExecVMProcess line again
    type_line(tmux, screen, "Up", "Up", "Enter")
    assert screen().count('"out": "via-i\\n"') == 2
    tmux("send-keys", "quit", "Enter")
    assert exit_code(directory) == 0
    with open(os.path.join(directory, "history")) as file:
        history = file.read().splitlines()
    assert "Ping message=two" in history and "Nope" in history


def test_a_failed_call_keeps_the_session_and_sets_the_exit_code(
    sandbox: LocalSandbox, tmux: Tmux, tmp_path: object
) -> None:
    directory = str(tmp_path)
    screen = start(tmux, sandbox, directory, "--json")
    type_line(tmux, screen, "StartContainer id=missing", "Enter")
    assert '"status": "NOT_FOUND"' in screen()
    type_line(tmux, screen, "Ping", "Enter")
    assert '"message": "pong"' in screen()
    tmux("send-keys", "C-d")
    assert exit_code(directory) == 1


def test_ctrl_c_leaves_with_130_and_restores_the_terminal(
    sandbox: LocalSandbox, tmux: Tmux, tmp_path: object
) -> None:
    directory = str(tmp_path)
    screen = start(tmux, sandbox, directory)
    tmux("send-keys", "Ping mess")  # readline holds a half-typed line in raw mode
    assert wait_for(lambda: screen().rstrip().endswith("agent> Ping mess"))  # read, not still queued
    tmux("send-keys", "C-c")
    assert exit_code(directory) == 130
    assert wait_for(lambda: "\nEND" in screen())
    assert "agent> Ping mess\n" in screen()  # the prompt's line was ended before leaving
    stty_path = os.path.join(directory, "stty")
    assert wait_for(lambda: os.path.exists(stty_path) and os.path.getsize(stty_path) > 0)
    with open(stty_path) as file:
        settings = file.read().split()
    assert "echo" in settings and "icanon" in settings
