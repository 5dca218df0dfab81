"""Helpers for tests that talk to the agent's debug console directly."""

from __future__ import annotations

import asyncio

GUARD = 20.0


async def open_interactive(
    path: str, bound: float = GUARD
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to the console at ``path`` and send nothing until the shell's first prompt. The shell
    starts only once the 100 ms ``KSR_MODE`` sniff has decided, so a prompt means the sniff ended
    without a header: plain interactive mode, ready for input."""
    reader, writer = await asyncio.open_unix_connection(path)
    async with asyncio.timeout(bound):
        prompt = await reader.read(4096)
    assert prompt, "the console closed before the shell's first prompt"
    return reader, writer
