"""The Python twin of the Go peer server: the same ``kuasar.interop.v1.Peer`` methods on
``kuasar.ttrpc.Server``, so the Go client can call either and the tests compare answers.

Layer contract: test/bench support; uses only the public ``kuasar.ttrpc`` API and protobuf
well-known types (no generated code). Differences from the Go twin are deliberate and named:
``Echo`` prefixes ``py:`` (Go: ``go:``) so a test knows who answered, and ``Metadata`` lists
pairs in wire order (Go's ``ttrpc.MD`` is a map, so Go sorts keys).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from google.protobuf import empty_pb2, wrappers_pb2

from kuasar import ttrpc
from kuasar.config import DEFAULT_LIMITS, Limits
from kuasar.proto import ttrpc_pb2
from tests.interop.gopeers import PEER_SERVICE

Str = wrappers_pb2.StringValue
Int = wrappers_pb2.Int64Value
Bytes = wrappers_pb2.BytesValue
Empty = empty_pb2.Empty


async def _echo(request: Str, ctx: ttrpc.CallContext) -> Str:
    return Str(value="py:" + request.value)


async def _raise(request: Str, ctx: ttrpc.CallContext) -> Str:
    code, _, message = request.value.partition(" ")
    raise ttrpc.RPCError(int(code), message)


async def _metadata(request: Empty, ctx: ttrpc.CallContext) -> Str:
    return Str(value="\n".join(f"{key}={value}" for key, value in ctx.metadata))


async def _sleep(request: Int, ctx: ttrpc.CallContext) -> Int:
    await asyncio.sleep(request.value / 1000)
    return Int(value=request.value)


async def _deadline(request: Empty, ctx: ttrpc.CallContext) -> Int:
    if ctx.deadline is None:
        return Int(value=-1)
    return Int(value=int((ctx.deadline - asyncio.get_running_loop().time()) * 1e9))


async def _size(request: Bytes, ctx: ttrpc.CallContext) -> Int:
    return Int(value=len(request.value))


def peer_handlers() -> dict[tuple[str, str], ttrpc.Handler]:
    """The handler map of ``kuasar.interop.v1.Peer`` (see ``go/src/kuasarpeer/server``)."""
    unary = ttrpc.Cardinality.UNARY
    return {
        (PEER_SERVICE, "Echo"): ttrpc.Handler(_echo, unary, Str, Str),
        (PEER_SERVICE, "Raise"): ttrpc.Handler(_raise, unary, Str, Str),
        (PEER_SERVICE, "Metadata"): ttrpc.Handler(_metadata, unary, Empty, Str),
        (PEER_SERVICE, "Sleep"): ttrpc.Handler(_sleep, unary, Int, Int),
        (PEER_SERVICE, "Deadline"): ttrpc.Handler(_deadline, unary, Empty, Int),
        (PEER_SERVICE, "Size"): ttrpc.Handler(_size, unary, Bytes, Int),
    }


@contextlib.asynccontextmanager
async def python_server(socket_path: Path, *, limits: Limits = DEFAULT_LIMITS) -> AsyncIterator[ttrpc.Server]:
    """Serve :func:`peer_handlers` on a UNIX socket in this event loop until the block ends."""
    server = ttrpc.Server(peer_handlers(), limits=limits)
    listener = await asyncio.start_unix_server(server.handle_connection, str(socket_path))
    try:
        yield server
    finally:
        listener.close()
        server.close()
        await server.wait_closed()
        await listener.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()


@contextlib.asynccontextmanager
async def python_client(
    socket_path: Path | str, *, limits: Limits = DEFAULT_LIMITS
) -> AsyncIterator[ttrpc.Client]:
    """A :class:`kuasar.ttrpc.Client` on a fresh connection to ``socket_path``."""
    reader, writer = await asyncio.open_unix_connection(str(socket_path))
    async with ttrpc.Client(reader, writer, limits=limits) as client:
        yield client


def request_frame_size(service: str, method: str, value_len: int) -> int:
    """Length of the Request frame data calling ``service/method`` with ``BytesValue(value_len bytes)``
    (no timeout, no metadata): what both the Python and the Go client put on the wire."""
    payload = Bytes(value=b"a" * value_len).SerializeToString()
    return len(ttrpc_pb2.Request(service=service, method=method, payload=payload).SerializeToString())


def value_len_for_frame(service: str, method: str, frame_size: int) -> int:
    """The ``BytesValue`` length whose Request frame data is exactly ``frame_size`` bytes.

    Raises:
        ValueError: no length hits it exactly (a varint boundary), which does not happen at 4 MiB.
    """
    guess = frame_size - (request_frame_size(service, method, 0) - 0)
    for candidate in range(max(0, guess - 16), guess + 1):
        if request_frame_size(service, method, candidate) == frame_size:
            return candidate
    raise ValueError(f"no BytesValue length gives a {frame_size}-byte Request")
