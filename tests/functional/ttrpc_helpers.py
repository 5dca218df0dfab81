"""Shared pieces for the ttrpc functional tests: a test service, a UNIX-socket server, a raw peer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import wrappers_pb2

from kuasar import ttrpc
from kuasar.config import DEFAULT_LIMITS, Limits
from kuasar.proto import ttrpc_pb2
from kuasar.ttrpc.framing import Frame, FrameDecoder, FrameType, encode_frame

Str = wrappers_pb2.StringValue
SERVICE = "test.Echo"
HANG_GUARD = 10.0


@dataclass
class Probe:
    """What the handlers observed, for assertions."""

    contexts: list[ttrpc.CallContext] = field(default_factory=list)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    sent: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    input_ended: asyncio.Event = field(default_factory=asyncio.Event)


def echo_handlers(probe: Probe) -> dict[tuple[str, str], ttrpc.Handler]:
    async def echo(req: Str, ctx: ttrpc.CallContext) -> Str:
        probe.contexts.append(ctx)
        return Str(value=req.value)

    async def metadata(req: Str, ctx: ttrpc.CallContext) -> Str:
        return Str(value=";".join(f"{k}={v}" for k, v in ctx.metadata))

    async def sleep(req: Str, ctx: ttrpc.CallContext) -> Str:
        probe.contexts.append(ctx)
        probe.started.set()
        try:
            await asyncio.sleep(float(req.value))
        except asyncio.CancelledError:
            probe.cancelled.set()
            raise
        return Str(value="slept")

    async def wait_release(req: Str, ctx: ttrpc.CallContext) -> Str:
        probe.started.set()
        await probe.release.wait()
        return Str(value="released")

    async def fail(req: Str, ctx: ttrpc.CallContext) -> Str:
        raise ttrpc.RPCError(ttrpc.Code.NOT_FOUND, f"no such thing: {req.value}")

    async def boom(req: Str, ctx: ttrpc.CallContext) -> Str:
        raise ValueError("secret internal detail")

    async def count(req: Str, stream: ttrpc.ServerStream, ctx: ttrpc.CallContext) -> None:
        for i in range(int(req.value or 0)):
            await stream.send(Str(value=str(i)))
            probe.sent = i + 1
            if probe.sent == 20:
                probe.started.set()

    async def count_then_fail(req: Str, stream: ttrpc.ServerStream, ctx: ttrpc.CallContext) -> None:
        await stream.send(Str(value="first"))
        raise ttrpc.RPCError(ttrpc.Code.ABORTED, "stopped")

    async def join(stream: ttrpc.ServerStream, ctx: ttrpc.CallContext) -> Str:
        joined = ",".join([m.value async for m in stream])
        probe.input_ended.set()
        return Str(value=joined)

    async def upper(stream: ttrpc.ServerStream, ctx: ttrpc.CallContext) -> None:
        async for m in stream:
            await stream.send(Str(value=m.value.upper()))

    unary, ss = ttrpc.Cardinality.UNARY, ttrpc.Cardinality.SERVER_STREAMING
    return {
        (SERVICE, "Echo"): ttrpc.Handler(echo, unary, Str, Str),
        (SERVICE, "Metadata"): ttrpc.Handler(metadata, unary, Str, Str),
        (SERVICE, "Sleep"): ttrpc.Handler(sleep, unary, Str, Str),
        (SERVICE, "WaitRelease"): ttrpc.Handler(wait_release, unary, Str, Str),
        (SERVICE, "Fail"): ttrpc.Handler(fail, unary, Str, Str),
        (SERVICE, "Boom"): ttrpc.Handler(boom, unary, Str, Str),
        (SERVICE, "Count"): ttrpc.Handler(count, ss, Str, Str),
        (SERVICE, "CountThenFail"): ttrpc.Handler(count_then_fail, ss, Str, Str),
        (SERVICE, "Join"): ttrpc.Handler(join, ttrpc.Cardinality.CLIENT_STREAMING, Str, Str),
        (SERVICE, "Upper"): ttrpc.Handler(upper, ttrpc.Cardinality.BIDI, Str, Str),
    }


@contextlib.asynccontextmanager
async def unix_server(
    tmp_path: Path, handlers: ttrpc.service.HandlerMap, limits: Limits = DEFAULT_LIMITS
) -> AsyncIterator[tuple[str, ttrpc.Server]]:
    """A ttrpc server on a UNIX socket in ``tmp_path``; yields (path, server)."""
    path = str(tmp_path / "ttrpc.sock")
    server = ttrpc.Server(handlers, limits=limits)
    listener = await asyncio.start_unix_server(server.handle_connection, path)
    try:
        yield path, server
    finally:
        listener.close()
        server.close()
        await server.wait_closed()
        await listener.wait_closed()


@contextlib.asynccontextmanager
async def unix_client(path: str, limits: Limits = DEFAULT_LIMITS) -> AsyncIterator[ttrpc.Client]:
    reader, writer = await asyncio.open_unix_connection(path)
    async with ttrpc.Client(reader, writer, limits=limits) as client:
        yield client


class RawPeer:
    """A raw ttrpc peer: writes frames byte for byte, reads frames back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = FrameDecoder()
        self.pending: list[Frame] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, path: str) -> AsyncIterator[RawPeer]:
        reader, writer = await asyncio.open_unix_connection(path)
        try:
            yield cls(reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, frame: Frame) -> None:
        await self.send_raw(encode_frame(frame))

    async def request(
        self,
        stream_id: int,
        service: str,
        method: str,
        payload: bytes = b"",
        flags: int = 0,
        **fields: object,
    ) -> None:
        req = ttrpc_pb2.Request(service=service, method=method, payload=payload, **fields)  # type: ignore[arg-type]
        await self.send(Frame(stream_id, FrameType.REQUEST, flags, req.SerializeToString()))

    async def recv(self) -> Frame | None:
        """The next frame, or None at EOF."""
        async with asyncio.timeout(HANG_GUARD):
            while not self.pending:
                chunk = await self.reader.read(65536)
                if not chunk:
                    return None
                self.pending.extend(self.decoder.feed(chunk))
        return self.pending.pop(0)

    async def recv_response(self) -> tuple[int, ttrpc_pb2.Response]:
        frame = await self.recv()
        assert frame is not None, "connection closed"
        assert frame.type == FrameType.RESPONSE, frame
        return frame.stream_id, ttrpc_pb2.Response.FromString(frame.data)
