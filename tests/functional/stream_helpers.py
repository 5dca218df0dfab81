"""Connection handlers shared by the transport and hybrid-vsock server tests."""

from __future__ import annotations

import asyncio
import contextlib


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send back every byte until EOF (a reset ends it quietly), then close."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        await close(writer)
