"""``kuasarctl exec`` and ``ps`` against every guest in the field: a stock Kuasar vmm-task (with and
without its debug console), a Kata agent, and each way a VMM fails — stand-ins of the tests' own,
written from the wire facts (tests/functional/guests.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.functional.cli_helpers import KUASARCTL, kuasarctl
from tests.functional.guests import Guest, as_nobody
from tests.functional.guests_raw import wait_for


def exec_in(
    guest: Guest, *command: str, flags: tuple[str, ...] = (), input: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return kuasarctl("exec", *flags, "-d", guest.root, guest.id, *command, input=input, timeout=60)


def first_line(result: subprocess.CompletedProcess[bytes]) -> str:
    return result.stderr.decode().splitlines()[0]


# -- a stock vmm-task without a console: ExecVMProcess ---------------------------------------------


def test_vmm_task_without_console_runs_through_exec_vm_process(vmm_task_guest: Guest) -> None:
    since = vmm_task_guest.mark()
    result = exec_in(vmm_task_guest, "printf", "%s|", "a b", "it's", "\x15\t$HOME")
    assert (result.returncode, result.stdout) == (0, b"a b|it's|\x15\t$HOME|"), result.stderr
    calls = vmm_task_guest.exec_calls(since)
    assert len(calls) == 1 and calls[0].command.isascii() and calls[0].command.isprintable()


@pytest.mark.parametrize(("script", "code"), [("exit 3", 3), ("kill -9 $$", 137), ("no-such-cmd-ksr", 127)])
def test_vmm_task_exit_codes_and_stderr(vmm_task_guest: Guest, script: str, code: int) -> None:
    result = exec_in(vmm_task_guest, "sh", "-c", f'echo "out \\"q\\""; echo "err\\tline" >&2; {script}')
    assert result.returncode == code
    assert result.stdout == b""  # vmm-task returns stdout only on exit 0
    if code != 137:
        assert b"err\tline\n" in result.stderr  # un-escaped from Rust's Debug text


def test_vmm_task_stdin_and_timeout(vmm_task_guest: Guest) -> None:
    data = bytes(range(1, 128)) * 20
    since = vmm_task_guest.mark()
    result = exec_in(vmm_task_guest, "od", "-An", "-v", "-tx1", flags=("-i",), input=data)
    assert result.returncode == 0, result.stderr
    assert bytes.fromhex(result.stdout.decode()) == data
    assert vmm_task_guest.exec_calls(since)[0].stdin == data
    slow = exec_in(vmm_task_guest, "sleep", "30", flags=("--timeout", "1"))
    assert slow.returncode == 124 and "timed out" in first_line(slow)


def test_vmm_task_interactive_needs_the_console(vmm_task_guest: Guest) -> None:
    result = subprocess.run(
        [
            "script",
            "-qec",
            " ".join([*KUASARCTL, "exec", "-it", "-d", vmm_task_guest.root, vmm_task_guest.id]),
            "/dev/null",
        ],
        capture_output=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert b"an interactive shell needs the debug console: add task.debug" in result.stdout + result.stderr


def test_agent_only_flags_name_the_guest(vmm_task_guest: Guest) -> None:
    result = exec_in(vmm_task_guest, "true", flags=("-u", "0"))
    assert result.returncode == 125 and "vmm-task" in first_line(result)


# -- a stock vmm-task with its console: the console streams ---------------------------------------


def test_vmm_task_with_console_uses_it(vmm_task_console_guest: Guest) -> None:
    since = vmm_task_console_guest.mark()
    result = exec_in(vmm_task_console_guest, "sh", "-c", "echo out; echo err >&2; exit 4")
    assert (result.returncode, result.stdout) == (4, b"out\nerr\n"), result.stderr  # merged on the console
    assert vmm_task_console_guest.exec_calls(since) == []
    wait_for(lambda: vmm_task_console_guest.consoles(since))  # the stand-in logs the close after we leave
    assert [session.exec_mode for session in vmm_task_console_guest.consoles(since)] == [True]


# -- a Kata agent: its console is a plain shell on 1026 -----------------------------------------


def test_kata_console_on_1026_gives_exact_output_and_status(kata_guest: Guest) -> None:
    result = exec_in(kata_guest, "printf", "%s|", "a\tb", "é", flags=("-p", "1026"))
    assert (result.returncode, result.stdout) == (0, "a\tb|é|".encode()), result.stderr
    assert exec_in(kata_guest, "sh", "-c", "exit 9", flags=("-p", "1026")).returncode == 9


def test_kata_with_1025_closed_is_told_to_use_1026(kata_guest: Guest) -> None:
    result = exec_in(kata_guest, "true")
    assert result.returncode == 125
    assert "kata-agent" in first_line(result)
    assert "-p 1026" in result.stderr.decode() and "task.debug" not in result.stderr.decode()


# -- nothing answers: each shape its own message -------------------------------------------------


def test_crashed_vmm(crashed_vmm: Guest) -> None:
    result = exec_in(crashed_vmm, "true")
    assert result.returncode == 125
    assert "does not accept connections" in first_line(result) and "sandbox stop" in result.stderr.decode()


def test_booting_guest_has_no_listener(booting_guest: Guest) -> None:
    result = exec_in(booting_guest, "true", flags=("--connect-timeout", "0.5"))
    assert result.returncode == 125
    assert "nothing in the guest listens on vsock port 1024 or 1025" in first_line(result)


def test_hung_vmm(hung_vmm: Guest) -> None:
    result = exec_in(hung_vmm, "true", flags=("--connect-timeout", "0.5"))
    assert result.returncode == 125 and "never answers" in first_line(result)


def test_permission_denied(denied_guest: Guest) -> None:
    argv = as_nobody([*KUASARCTL, "exec", "-d", denied_guest.root, denied_guest.id, "true"])
    result = subprocess.run(argv, capture_output=True, timeout=60, check=False, stdin=subprocess.DEVNULL)
    assert result.returncode == 125
    assert "permission denied" in first_line(result) and "root" in result.stderr.decode()


def test_missing_root(missing_root: Guest) -> None:
    result = exec_in(missing_root, "true")
    assert result.returncode == 125 and "no such directory" in first_line(result)


def test_ps_names_each_guest(vmm_task_guest: Guest, kata_guest: Guest) -> None:
    for guest, kind in ((vmm_task_guest, "vmm-task"), (kata_guest, "kata-agent")):
        rows = json.loads(kuasarctl("ps", "-o", "json", "-d", guest.root).stdout)
        assert [(row["id"], row["guest"]) for row in rows] == [(guest.id, kind)]


def test_a_socket_path_too_long_is_named_as_such(tmp_path: Path) -> None:
    root = tmp_path / ("r" * 60)
    sandbox = root / ("pod-" + "x" * 60)
    sandbox.mkdir(parents=True)
    (sandbox / "task.socket").write_bytes(b"")
    for flags in ((), ("--console",)):
        result = kuasarctl("exec", *flags, "-d", str(root), "pod-", "true")
        assert result.returncode == 125
        assert "too long for a UNIX socket" in first_line(result), result.stderr
