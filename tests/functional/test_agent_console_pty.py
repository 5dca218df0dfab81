"""agent/pty: real PTY pairs, modes, window size, session leaders with a controlling terminal, and
killing a whole session."""

from __future__ import annotations

import asyncio
import os
import termios
from pathlib import Path

import pytest

from kuasar.agent.pty import (
    PtyMode,
    get_window_size,
    kill_session,
    open_pty,
    session_members,
    set_window_size,
    spawn_on_pty,
)

GUARD = 20.0


def stat_fields(pid: int) -> list[bytes]:
    """``/proc/PID/stat`` from the state field on: state ppid pgrp session tty_nr ..."""
    with open(f"/proc/{pid}/stat", "rb") as file:
        stat = file.read()
    return stat[stat.rfind(b")") + 2 :].split()


async def read_all(master: int) -> bytes:
    loop = asyncio.get_running_loop()
    out = bytearray()
    while True:
        try:
            chunk = await loop.run_in_executor(None, os.read, master, 65536)
        except OSError:  # EIO: every slave closed
            return bytes(out)
        if not chunk:
            return bytes(out)
        out += chunk


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


@pytest.mark.asyncio
async def test_spawned_process_leads_a_session_on_its_controlling_pty() -> None:
    master, slave = open_pty(PtyMode(echo=False, opost=False), rows=40, cols=100)
    try:
        process = await spawn_on_pty(["sh", "-c", "read go; stty size; echo $go >/dev/tty; exit 5"], slave)
    finally:
        os.close(slave)
    try:
        fields = stat_fields(process.pid)
        assert int(fields[2]) == int(fields[3]) == process.pid  # pgrp == session == pid
        assert int(fields[4]) != 0  # tty_nr: it has a controlling terminal
        os.write(master, b"ok\n")
        async with asyncio.timeout(GUARD):
            out = await read_all(master)
            assert await process.wait() == 5
        assert out == b"40 100\nok\n"
    finally:
        os.close(master)


@pytest.mark.asyncio
async def test_spawn_errors_are_raised_in_the_parent(tmp_path: Path) -> None:
    not_executable = tmp_path / "script"
    not_executable.write_text("#!/bin/sh\n")
    not_executable.chmod(0o644)
    master, slave = open_pty()
    try:
        with pytest.raises(FileNotFoundError):
            await spawn_on_pty(["/nonexistent/shell"], slave)
        with pytest.raises(PermissionError):
            await spawn_on_pty([str(not_executable)], slave)
    finally:
        os.close(master)
        os.close(slave)


@pytest.mark.asyncio
async def test_kill_session_reaches_other_process_groups_of_the_session() -> None:
    master, slave = open_pty()
    try:
        # set -m: job control, so the background job gets its own process group.
        process = await spawn_on_pty(["sh", "-c", "set -m; sleep 765401.5 & echo $!; wait"], slave)
    finally:
        os.close(slave)
    try:
        loop = asyncio.get_running_loop()
        line = await asyncio.wait_for(loop.run_in_executor(None, os.read, master, 64), GUARD)
        job = int(line.split()[0])
        assert int(stat_fields(job)[2]) != process.pid  # another process group ...
        assert session_members(process.pid) >= {process.pid, job}  # ... of the same session
        kill_session(process.pid)
        async with asyncio.timeout(GUARD):
            assert await process.wait() == -9
            while session_members(process.pid):
                await asyncio.sleep(0.01)
    finally:
        os.close(master)
