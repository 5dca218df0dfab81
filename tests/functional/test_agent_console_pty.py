"""agent/pty and the one spawner (agent/process): real PTY pairs, modes, window size, session leaders
with a controlling terminal, and the one kill policy (the whole session, on PTYs and pipes alike)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import termios
from pathlib import Path

import pytest

from kuasar.agent.process import ExitStatus, Process, is_spawned, session_members
from kuasar.agent.pty import PtyMode, get_window_size, open_pty, set_window_size
from kuasar.errors import RPCError
from kuasar.ttrpc.codes import Code

GUARD = 20.0


def stat_fields(pid: int) -> list[bytes]:
    """``/proc/PID/stat`` from the state field on: state ppid pgrp session tty_nr ..."""
    with open(f"/proc/{pid}/stat", "rb") as file:
        stat = file.read()
    return stat[stat.rfind(b")") + 2 :].split()


@pytest.mark.parametrize(
    ("mode", "echo", "opost"),
    [(PtyMode(), True, True), (PtyMode(echo=False, opost=False, raw_input=True), False, False)],
)
def test_open_pty_applies_mode_and_size(mode: PtyMode, echo: bool, opost: bool) -> None:
    master, slave = open_pty(mode, rows=33, cols=99)
    try:
        iflag, oflag, _, lflag = termios.tcgetattr(slave)[:4]
        assert bool(lflag & termios.ECHO) is echo
        assert bool(oflag & termios.OPOST) is opost
        assert bool(iflag & termios.ICRNL) is not mode.raw_input
        assert bool(lflag & termios.ISIG) is not mode.raw_input
        assert get_window_size(slave) == (33, 99)
        set_window_size(master, 50, 132)
        assert get_window_size(slave) == (50, 132)
        assert not os.get_inheritable(master) and not os.get_inheritable(slave)
    finally:
        os.close(master)
        os.close(slave)


async def collect(process: Process) -> bytes:
    out = bytearray()

    async def sink(_stream: int, data: bytes) -> None:
        out.extend(data)

    await process.pump_output(sink)
    return bytes(out)


@pytest.mark.asyncio
async def test_spawned_process_leads_a_session_on_its_controlling_pty() -> None:
    mode = PtyMode(echo=False, opost=False)
    script = "read go; stty size; echo $go >/dev/tty; exit 5"
    async with await Process.start(["sh", "-c", script], tty=True, rows=40, cols=100, mode=mode) as process:
        fields = stat_fields(process.pid)
        assert int(fields[2]) == int(fields[3]) == process.pid  # pgrp == session == pid
        assert int(fields[4]) != 0  # tty_nr: it has a controlling terminal
        await process.write_stdin(b"ok\n")
        async with asyncio.timeout(GUARD):
            out = await collect(process)
            assert await process.wait() == ExitStatus(5)
        assert out == b"40 100\nok\n"


@pytest.mark.asyncio
@pytest.mark.parametrize("tty", [True, False], ids=["pty", "pipes"])
async def test_spawn_errors_are_raised_in_the_parent(tmp_path: Path, tty: bool) -> None:
    not_executable = tmp_path / "script"
    not_executable.write_text("#!/bin/sh\n")
    not_executable.chmod(0o644)
    with pytest.raises(RPCError) as missing:
        await Process.start(["/nonexistent/shell"], tty=tty)
    assert missing.value.code == Code.NOT_FOUND
    with pytest.raises(RPCError) as denied:
        await Process.start([str(not_executable)], tty=tty)
    assert denied.value.code == Code.PERMISSION_DENIED


JOB = "import os, sys; os.setpgid(0, 0); os.execvp('sleep', ['sleep', sys.argv[1]])"


async def own_group_job(pid_file: Path) -> int:
    """The PID the script wrote, once that process leads a process group of its own."""
    async with asyncio.timeout(GUARD):
        while not pid_file.exists() or not pid_file.read_text().endswith("\n"):
            await asyncio.sleep(0.01)
        job = int(pid_file.read_text())
        while int(stat_fields(job)[2]) != job:
            await asyncio.sleep(0.01)
    return job


@pytest.mark.asyncio
@pytest.mark.parametrize("tty", [True, False], ids=["pty", "pipes"])
async def test_close_kills_other_process_groups_of_the_session(tmp_path: Path, tty: bool) -> None:
    """One kill policy on both spawn paths: a job in its own process group dies with the session."""
    marker = "765401.5" if tty else "765402.5"
    pid_file = tmp_path / "job.pid"
    script = f'{sys.executable} -c "{JOB}" {marker} & echo $! >{pid_file}; wait'
    process = await Process.start(["sh", "-c", script], tty=tty)
    try:
        job = await own_group_job(pid_file)
        assert session_members(process.pid) >= {process.pid, job}  # another group, the same session
    finally:
        await process.close()
    assert process.status is not None and process.status.signal == signal.SIGKILL
    async with asyncio.timeout(GUARD):
        while session_members(process.pid):
            await asyncio.sleep(0.01)
    assert not is_spawned(process.pid)
