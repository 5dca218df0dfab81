"""Ending a host-side asyncio child process within bounds: wait, TERM, KILL.

Layer contract: leaf (stdlib asyncio only, nothing from kuasar). The sandbox supervisor ends its
agent with it and :mod:`kuasar.vmm.qemu_guest` ends QEMU and the vsock device; callers log what
the result means to them. (The guest agent has its own spawner and kill policy for process groups.)
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

__all__ = ["exit_within", "kill", "terminate"]

Process = asyncio.subprocess.Process


async def exit_within(process: Process, grace: float) -> int | None:
    """The exit status once ``process`` exits within ``grace`` seconds, else ``None``."""
    try:
        async with asyncio.timeout(grace):
            return await process.wait()
    except TimeoutError:
        return None


async def kill(process: Process, kill_timeout: float) -> bool:
    """SIGKILL (unless it already exited), then wait ``kill_timeout``; False if it still runs."""
    if process.returncode is not None:
        return True
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    return await exit_within(process, kill_timeout) is not None


async def terminate(process: Process, grace: float, kill_timeout: float) -> bool:
    """SIGTERM, ``grace`` seconds to exit, then :func:`kill`; False if it still runs."""
    if process.returncode is not None:
        return True
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    if await exit_within(process, grace) is not None:
        return True
    return await kill(process, kill_timeout)
