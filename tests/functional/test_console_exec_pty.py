"""The console exec line and piped stdin through a real shell on a real PTY, as a stock guest has it.

The stand-in here is written from the wire facts of Kuasar's vmm-task, independent of our agent: a
PTY in canonical mode with echo off, an interactive shell in a new session that owns it (bash reads
its line with readline, dash in canonical mode), ``PS1=""``. Whatever bytes an argument, an
environment value or stdin holds, the command must see exactly them, and nothing may run but it.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import shutil
import subprocess
import termios
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kuasar.console import ConsoleExec, StdinMode

GUARD = 20.0
SHELLS = [shell for shell in ("/bin/sh", "/bin/bash") if os.path.exists(shell)]
#: Arguments: any bytes but NUL (which no argv can carry).
ARG = st.binary(max_size=48).map(lambda b: b.replace(b"\0", b"\x01"))


@contextmanager
def stock_console(shell: str) -> Iterator[int]:
    """A shell on a PTY like vmm-task's exec mode; yields the master fd."""
    master, slave = pty.openpty()
    attrs = termios.tcgetattr(slave)
    attrs[3] &= ~termios.ECHO
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    argv = [shell, "--norc", "--noprofile", "-i"] if shell.endswith("bash") else [shell, "-i"]

    def controlling_tty() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    child = subprocess.Popen(
        argv,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=controlling_tty,
        env={"PATH": os.environ["PATH"], "TERM": "xterm", "PS1": "", "HOME": "/"},
        close_fds=True,
    )
    os.close(slave)
    try:
        yield master
    finally:
        child.kill()
        child.wait()
        os.close(master)


def exchange(master: int, core: ConsoleExec, stdin: bytes | None = None) -> bytes:
    """Drive ``core`` over the PTY master until its exit marker arrives (bounded)."""
    os.write(master, core.initiate().split(b"\n", 1)[1])  # the stand-in has no KSR_MODE parser
    if stdin is not None:
        core.send_input(stdin)
        core.send_eof()
    out = bytearray()
    deadline = time.monotonic() + GUARD
    pending = b""
    while not core.finished:
        pending += core.data_to_send()
        wanted_write = [master] if pending else []
        readable, writable, _ = select.select([master], wanted_write, [], deadline - time.monotonic())
        assert readable or writable, f"no exit marker within {GUARD} s; got {bytes(out)!r}"
        if writable:
            pending = pending[os.write(master, pending[:4096]) :]
        if readable:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the shell is gone
                data = b""
            out += core.receive_data(data) if data else core.receive_eof()
    return bytes(out)


@pytest.mark.parametrize("shell", SHELLS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=st.lists(ARG, min_size=1, max_size=4), value=ARG)
def test_any_argument_and_env_value_reach_the_command_exactly(
    shell: str, args: Sequence[bytes], value: bytes
) -> None:
    core = ConsoleExec(["printf", "%s\\0", *args, "$V"], env={"V": value})
    script = ConsoleExec(["sh", "-c", 'printf "%s\\0" "$@" "$V"', "sh", *args], env={"V": value})
    with stock_console(shell) as master:
        assert exchange(master, core) == b"".join(arg + b"\0" for arg in args) + b"$V\0"
    with stock_console(shell) as master:
        assert exchange(master, script) == b"".join(arg + b"\0" for arg in [*args, value])
    assert core.exit_status == script.exit_status == 0


@pytest.mark.parametrize("shell", SHELLS)
@settings(max_examples=25, deadline=None)
@given(data=st.binary(max_size=3000))
def test_any_stdin_reaches_the_command_exactly(shell: str, data: bytes) -> None:
    core = ConsoleExec(["od", "-An", "-v", "-tx1"], stdin=StdinMode.DATA)
    with stock_console(shell) as master:
        out = exchange(master, core, stdin=data)
    assert bytes.fromhex(out.decode()) == data
    assert core.exit_status == 0


@pytest.mark.parametrize("shell", SHELLS)
def test_line_editor_keys_in_arguments_run_nothing(shell: str, tmp_path: object) -> None:
    victim = os.path.join(str(tmp_path), "pwned")
    hostile = [f"\x15touch {victim} #", f"\x03\ntouch {victim}\n", f"\x1b\x7f\x17\x16\x12x;touch {victim}"]
    for argument in hostile:
        core = ConsoleExec(["printf", "%s", argument])
        with stock_console(shell) as master:
            assert exchange(master, core) == argument.encode()
    assert not os.path.exists(victim)


@pytest.mark.parametrize("shell", SHELLS)
def test_stdin_lines_longer_than_the_terminal_line_arrive_whole(shell: str) -> None:
    data = b"x" * 5000 + b"\n" + b"\x15\x04\x7f\x03" * 2000 + b"no newline"
    core = ConsoleExec(["wc", "-c"], stdin=StdinMode.DATA)
    with stock_console(shell) as master:
        assert exchange(master, core, stdin=data).strip() == str(len(data)).encode()


@pytest.mark.parametrize("shell", SHELLS)
def test_workdir_and_env_names(shell: str, tmp_path: object) -> None:
    core = ConsoleExec(["sh", "-c", 'pwd; printf "%s" "$A_1"'], cwd=str(tmp_path), env={"A_1": "é\tx"})
    with stock_console(shell) as master:
        assert exchange(master, core) == f"{tmp_path}\né\tx".encode()
    missing = ConsoleExec(["pwd"], cwd=os.path.join(str(tmp_path), "missing"))
    with stock_console(shell) as master:
        assert b"missing" in exchange(master, missing)
    assert missing.exit_status == 125


def test_a_command_that_ignores_stdin_ends_without_waiting_for_it() -> None:
    core = ConsoleExec(["true"], stdin=StdinMode.DATA)
    with stock_console(shutil.which("sh") or "/bin/sh") as master:
        os.write(master, core.initiate().split(b"\n", 1)[1])
        out = bytearray()
        deadline = time.monotonic() + GUARD
        while not core.finished and time.monotonic() < deadline:  # stdin never ends
            if select.select([master], [], [], 1.0)[0]:
                out += core.receive_data(os.read(master, 65536))
    assert core.exit_status == 0
