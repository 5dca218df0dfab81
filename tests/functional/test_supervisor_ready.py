"""The local sandbox supervisor's wait for its agent's ``ready`` line is bounded whatever the agent
does: a real process stands in for the agent and writes to the real ready pipe."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from kuasar.config import TEST_LIMITS
from kuasar.errors import SandboxError
from kuasar.sandbox.supervisor import wait_agent_ready

LIMITS = TEST_LIMITS.replace(agent_ready_timeout=2.0, agent_stop_grace=0.3)
#: Each case must be decided well within this (the bounds above add up to far less).
GUARD = 10.0


class StandIn:
    """An agent stand-in: ``python -c CODE FD`` with the write end of a ready pipe as ``FD``."""

    def __init__(self) -> None:
        self.processes: list[asyncio.subprocess.Process] = []

    async def start(self, code: str) -> tuple[int, asyncio.subprocess.Process]:
        read_fd, write_fd = os.pipe()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                f"import os, sys, time\nfd = int(sys.argv[1])\n{code}",
                str(write_fd),
                pass_fds=(write_fd,),
            )
        finally:
            os.close(write_fd)
        self.processes.append(process)
        return read_fd, process

    async def decide(self, code: str) -> tuple[str | None, asyncio.subprocess.Process]:
        """What ``wait_agent_ready`` says about a stand-in running ``code`` (None: ready)."""
        read_fd, process = await self.start(code)
        try:
            async with asyncio.timeout(GUARD):
                await wait_agent_ready(read_fd, process, LIMITS)
        except SandboxError as exc:
            return str(exc), process
        return None, process


@pytest_asyncio.fixture
async def stand_in() -> AsyncIterator[StandIn]:
    helper = StandIn()
    yield helper
    for process in helper.processes:
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
        await asyncio.wait_for(process.wait(), GUARD)


@pytest.mark.asyncio
async def test_ready_is_accepted(stand_in: StandIn) -> None:
    said, process = await stand_in.decide("os.write(fd, b'ready\\n'); time.sleep(1000)")
    assert said is None and process.returncode is None


@pytest.mark.asyncio
async def test_a_bad_ready_line_from_an_agent_that_keeps_running_is_an_error_in_bounded_time(
    stand_in: StandIn,
) -> None:
    said, process = await stand_in.decide("os.write(fd, b'bogus\\x1b[2J\\n'); time.sleep(1000)")
    assert said is not None and "reported 'bogus\\\\x1b[2J' instead of ready" in said, said
    assert process.returncode is None  # still running: stopping it is the caller's job


OUTCOMES = [
    ("os.write(fd, b'bogus\\n'); sys.exit(3)", "the agent exited during start-up (exit status 3)"),
    (
        "os.write(fd, b'x' * 5000); time.sleep(1000)",
        "the agent reported 'a line over 1024 bytes' instead of ready",
    ),
    ("os.close(fd); time.sleep(1000)", "the agent reported 'nothing' instead of ready"),
    ("time.sleep(1000)", "the agent did not become ready within 2 s"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("code", "message"), OUTCOMES, ids=["bad-line-then-exit", "oversize-line", "closed-pipe", "silent"]
)
async def test_every_other_start_up_is_an_error_in_bounded_time(
    stand_in: StandIn, code: str, message: str
) -> None:
    said, _ = await stand_in.decide(code)
    assert said == message
