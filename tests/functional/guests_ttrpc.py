"""A minimal ttrpc server of the tests' own, for stand-ins of guests we cannot run here.

Written from the wire facts (shared/protocol-facts.md §0, shared/ttrpc-peers/SPEC.md §1-§6) and the
public Rust ttrpc source, independent of ``kuasar.ttrpc``: it must not share a bug with the code
under test. Only the protobuf envelope (``kuasar.proto.ttrpc_pb2``) is reused: it is a wire definition.

Behaviour, as a Rust ttrpc async server (``src/asynchronous/server.rs``):

- frames: 10-byte header (``u32 BE length``, ``u32 BE stream id``, ``u8 type``, ``u8 flags``) + data;
- data over 4 MiB: Rust 0.7.1 (Kuasar's fork ``v0.7.1-kuasar``, ``proto.rs::GenMessage::read_from``)
  returns an error from the reader without reading the body, and the server's reader loop ends: the
  connection is dropped without a reply. Rust 0.9 (Kata's version) discards the body and answers
  INVALID_ARGUMENT ``message length N exceed maximum message size of 4194304`` on that stream;
- an even stream id: INVALID_ARGUMENT ``stream id must be odd``;
- a Data frame (no stream is ever open here): INVALID_ARGUMENT ``Stream is no longer active``;
  unknown frame types are ignored;
- unknown service: INVALID_ARGUMENT ``<svc> service does not exist``; unknown method:
  UNIMPLEMENTED ``<m> method``;
- ``timeout_nano`` > 0: the handler runs under that timeout, DEADLINE_EXCEEDED ``timeout`` after it;
- success: ``Response{status: {}, payload}`` (Rust sends an empty ``status``, ``0a 00``);
- requests on one connection run concurrently; a connection's end cancels its pending handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import struct
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from kuasar.proto import ttrpc_pb2

HEADER = struct.Struct(">IIBB")
MAX_DATA = 4 << 20
TYPE_REQUEST = 1
TYPE_RESPONSE = 2
TYPE_DATA = 3
FLAG_REMOTE_CLOSED = 0x01
_DISCARD_CHUNK = 4 << 10


class Code(enum.IntEnum):
    """The gRPC status codes this server sends (google.rpc.Code)."""

    OK = 0
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    UNIMPLEMENTED = 12


class Dialect(enum.Enum):
    """Which Rust ttrpc the stand-in imitates where versions differ."""

    RUST_071 = "rust-0.7.1"  # Kuasar vmm-task (ttrpc-rust v0.7.1-kuasar)
    RUST_09 = "rust-0.9"  # Kata agent (ttrpc 0.9.0 in the kata-containers workspace)


class RpcStatus(Exception):
    """Raised by a handler: the call ends with this status (Rust ``Error::RpcStatus``)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Call:
    """One decoded Request, as received."""

    stream_id: int
    flags: int
    service: str
    method: str
    payload: bytes
    timeout_nano: int
    metadata: tuple[tuple[str, str], ...]


#: A method handler: the request payload (and the whole call) in, the response payload out.
Handler = Callable[[Call], Awaitable[bytes]]
#: Called with every decoded Request before it is dispatched.
Recorder = Callable[[Call], None]


def frame(stream_id: int, frame_type: int, data: bytes, flags: int = 0) -> bytes:
    """One ttrpc frame: header + data."""
    return HEADER.pack(len(data), stream_id, frame_type, flags) + data


def response(code: int = Code.OK, message: str = "", payload: bytes = b"") -> bytes:
    """A ``ttrpc.Response`` as Rust ttrpc encodes it (``status`` always present)."""
    resp = ttrpc_pb2.Response(payload=payload)
    resp.status.SetInParent()
    resp.status.code = code
    resp.status.message = message
    return resp.SerializeToString()


class MiniTtrpcServer:
    """Serves ``services`` (``{service: {method: handler}}``) on asyncio stream connections.

    Use ``serve`` as the ``client_connected_cb`` of ``asyncio.start_unix_server``; ``close()``
    cancels every connection.
    """

    def __init__(
        self,
        services: Mapping[str, Mapping[str, Handler]],
        *,
        dialect: Dialect,
        record: Recorder | None = None,
    ) -> None:
        self._services = services
        self._dialect = dialect
        self._record = record
        self._connections: set[asyncio.Task[None]] = set()

    def close(self) -> None:
        for task in list(self._connections):
            task.cancel()

    async def wait_closed(self) -> None:
        while self._connections:
            await asyncio.gather(*list(self._connections), return_exceptions=True)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        lock = asyncio.Lock()
        pending: set[asyncio.Task[None]] = set()

        async def send(data: bytes) -> None:
            async with lock:
                writer.write(data)
                await writer.drain()

        try:
            while True:
                try:
                    header = await reader.readexactly(HEADER.size)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length, stream_id, frame_type, flags = HEADER.unpack(header)
                if length > MAX_DATA:
                    if self._dialect is Dialect.RUST_071:
                        return  # the reader errors out before the body: connection dropped
                    if not await _discard(reader, length):
                        return
                    text = f"message length {length} exceed maximum message size of {MAX_DATA}"
                    await send(frame(stream_id, TYPE_RESPONSE, response(Code.INVALID_ARGUMENT, text)))
                    continue
                try:
                    data = await reader.readexactly(length)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                job = self._dispatch(stream_id, frame_type, flags, data, send)
                if job is not None:
                    pending.add(job)
                    job.add_done_callback(pending.discard)
        except asyncio.CancelledError:
            pass
        finally:
            try:
                for job in list(pending):
                    job.cancel()
                if pending:
                    await asyncio.gather(*pending, return_exceptions=True)
                writer.close()
                with contextlib.suppress(ConnectionError, OSError):
                    await writer.wait_closed()
            finally:
                self._connections.discard(task)

    def _dispatch(
        self,
        stream_id: int,
        frame_type: int,
        flags: int,
        data: bytes,
        send: Callable[[bytes], Awaitable[None]],
    ) -> asyncio.Task[None] | None:
        async def reply(code: int, message: str) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                await send(frame(stream_id, TYPE_RESPONSE, response(code, message)))

        def status(code: int, message: str) -> asyncio.Task[None]:
            return asyncio.ensure_future(reply(code, message))

        if stream_id % 2 != 1:
            return status(Code.INVALID_ARGUMENT, "stream id must be odd")
        if frame_type == TYPE_DATA:
            if flags & FLAG_REMOTE_CLOSED and data:
                text = f"Stream id {stream_id}: data close message connot include data"  # sic, 0.7.1
                return status(Code.INVALID_ARGUMENT, text)
            return status(Code.INVALID_ARGUMENT, "Stream is no longer active")
        if frame_type != TYPE_REQUEST:
            return None  # unknown types are ignored, for forward compatibility
        try:
            req = ttrpc_pb2.Request.FromString(data)
        except DecodeError as exc:
            # Rust: INVALID_ARGUMENT with the codec error's text; protobuf's wording is not reproduced.
            return status(Code.INVALID_ARGUMENT, f"ttrpc err: {exc}")
        call = Call(
            stream_id=stream_id,
            flags=flags,
            service=req.service,
            method=req.method,
            payload=req.payload,
            timeout_nano=req.timeout_nano,
            metadata=tuple((kv.key, kv.value) for kv in req.metadata),
        )
        if self._record is not None:
            self._record(call)
        return asyncio.ensure_future(self._call(call, send))

    async def _call(self, call: Call, send: Callable[[bytes], Awaitable[None]]) -> None:
        methods = self._services.get(call.service)
        handler = None if methods is None else methods.get(call.method)
        if methods is None:
            reply = response(Code.INVALID_ARGUMENT, f"{call.service} service does not exist")
        elif handler is None:
            reply = response(Code.UNIMPLEMENTED, f"{call.method} method")
        else:
            try:
                if call.timeout_nano > 0:
                    async with asyncio.timeout(call.timeout_nano / 1e9):
                        payload = await handler(call)
                else:
                    payload = await handler(call)
            except TimeoutError:
                reply = response(Code.DEADLINE_EXCEEDED, "timeout")
            except RpcStatus as exc:
                reply = response(exc.code, exc.message)
            except Exception as exc:
                # An error a handler returns with ``?`` (a payload that does not decode, say): Rust
                # answers UNKNOWN with the error's Display, ``ttrpc err: …`` for ``Error::Others``.
                reply = response(Code.UNKNOWN, f"ttrpc err: {exc}")
            else:
                reply = response(payload=payload)
        with contextlib.suppress(ConnectionError, OSError):
            await send(frame(call.stream_id, TYPE_RESPONSE, reply))


async def _discard(reader: asyncio.StreamReader, length: int) -> bool:
    """Read and drop ``length`` bytes in pages (Rust 0.9 ``discard_message_body``); False on EOF."""
    while length > 0:
        try:
            chunk = await reader.readexactly(min(_DISCARD_CHUNK, length))
        except (asyncio.IncompleteReadError, ConnectionError):
            return False
        length -= len(chunk)
    return True
