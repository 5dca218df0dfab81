#!/usr/bin/env python3
"""Fuzz the ttrpc receive paths: ``FrameDecoder.feed`` and a real ``Server.handle_connection``.

Layer contract: a test tool; uses the public ``kuasar.ttrpc`` API over real socketpairs and never
patches library code. Engines: ``atheris`` (coverage-guided, if importable) or ``random`` (seeded,
structure-aware; the default when atheris is absent, and what CI's smoke test uses).

Targets and oracles:
- decoder: the same bytes fed whole and fed in arbitrary splits give the same frames (or both
  raise ``ProtocolError``); nothing else is raised; no frame exceeds the limit; the buffer never
  holds more than one header + ``max_message``; re-encoding a frame gives its bytes back.
- server: the bytes (split into arbitrary writes, then EOF) go to a real ``Server`` over a
  socketpair. ``handle_connection`` must return (not raise) within a bound, and everything the
  server wrote must decode as Response/Data frames whose Responses parse as ``ttrpc.Response``.

Usage: ``python tests/fuzz/fuzz_ttrpc.py --runs N [--server-runs M] [--engine random|atheris]``.
Prints the inputs run and the crashes found; exits 1 on a crash.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``kuasar`` (src/) importable from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from google.protobuf import wrappers_pb2
from google.protobuf.message import DecodeError

from kuasar import ttrpc
from kuasar.config import TEST_LIMITS
from kuasar.errors import ProtocolError
from kuasar.proto import ttrpc_pb2
from kuasar.ttrpc.framing import HEADER_SIZE, Frame, FrameDecoder, FrameType, OversizedFrame, encode_frame

Str = wrappers_pb2.StringValue
SERVICE = "fuzz.v1.S"
DECODER_LIMIT = 1024  # small, so the oversize path is hit often
PER_INPUT_BOUND = 5.0  # seconds; longer is a hang
SETTLE_TURNS = 8  # event-loop turns between the last write and EOF
LIMITS = TEST_LIMITS.replace(shutdown_grace=0.5)


class FuzzFailure(AssertionError):
    """An oracle failed: a crash."""


# -- inputs ------------------------------------------------------------------------------------


def _frame(stream_id: int, ftype: int, flags: int, data: bytes) -> bytes:
    return encode_frame(Frame(stream_id & 0xFFFFFFFF, ftype & 0xFF, flags & 0xFF, data))


def structured_input(rng: random.Random) -> bytes:
    """A plausible ttrpc byte stream: requests, data, oversize and unknown frames, garbage, mutations."""
    methods = ["Unary", "Slow", "ServerStream", "ClientStream", "Bidi", "Boom", "Nope"]
    next_id = 1
    parts: list[bytes] = []
    for _ in range(rng.randint(1, 8)):
        kind = rng.random()
        roll = rng.random()
        sid = next_id if roll < 0.75 else max(1, next_id - 2) if roll < 0.85 else rng.randrange(1 << 32)
        if kind < 0.4:
            request = ttrpc_pb2.Request(
                service=rng.choice([SERVICE] * 6 + ["fuzz.v1.Nope", ""]),
                method=rng.choice(methods),
                payload=Str(value="x" * rng.randrange(4)).SerializeToString()
                if rng.random() < 0.85
                else rng.randbytes(rng.randrange(8)),
                timeout_nano=rng.choice([0, 0, rng.randrange(1, 10**9), -1]),
            )
            for _ in range(rng.randrange(3)):
                request.metadata.add(key=rng.choice(["a", "A", ""]), value=rng.choice(["1", "ü"]))
            parts.append(
                _frame(
                    sid,
                    FrameType.REQUEST,
                    rng.choice([0, 0, 1, 2, 6, rng.randrange(256)]),
                    request.SerializeToString(),
                )
            )
            next_id += 2
        elif kind < 0.7:
            data = rng.choice([Str(value="d").SerializeToString(), b"", rng.randbytes(rng.randrange(6))])
            parts.append(
                _frame(
                    sid if rng.random() < 0.3 else next_id - 2,
                    FrameType.DATA,
                    rng.choice([0, 0, 1, 5, 4, rng.randrange(256)]),
                    data,
                )
            )
        elif kind < 0.8:
            parts.append(rng.randbytes(rng.randrange(1, 24)))
        elif kind < 0.87:  # oversized frame of a known type, with part of its body
            length = rng.choice([LIMITS.max_message + 1, (4 << 20) + 1, rng.randrange(1 << 32)])
            header = length.to_bytes(4, "big") + sid.to_bytes(4, "big") + bytes([rng.choice([1, 2, 3]), 0])
            parts.append(header + rng.randbytes(rng.randrange(64)))
        elif kind < 0.93:
            parts.append(
                _frame(sid, rng.choice([0, 4, 9, 255]), rng.randrange(256), rng.randbytes(rng.randrange(8)))
            )
        else:
            parts.append(_frame(sid, FrameType.RESPONSE, 0, rng.randbytes(rng.randrange(8))))
    data = bytearray(b"".join(parts))
    if data and rng.random() < 0.3:
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    if data and rng.random() < 0.1:
        del data[rng.randrange(len(data)) :]
    return bytes(data)


def random_splits(rng: random.Random, data: bytes) -> list[bytes]:
    """``data`` cut at random points (including empty pieces)."""
    cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randrange(6)))
    pieces, start = [], 0
    for cut in [*cuts, len(data)]:
        pieces.append(data[start:cut])
        start = cut
    return pieces


# -- target: decoder ---------------------------------------------------------------------------


def _feed_all(pieces: list[bytes], limit: int) -> tuple[list[Frame], bool]:
    decoder = FrameDecoder(limit)
    frames: list[Frame] = []
    try:
        for piece in pieces:
            frames.extend(decoder.feed(piece))
            if decoder.buffered > HEADER_SIZE + limit:
                raise FuzzFailure(f"decoder buffers {decoder.buffered} bytes (limit {limit})")
        decoder.check()  # as the connection readers do after dispatching each batch
    except ProtocolError:
        return frames, True
    return frames, False


def check_decoder(data: bytes, pieces: list[bytes], limit: int = DECODER_LIMIT) -> None:
    """Run the decoder oracles on ``data`` and on its split ``pieces``."""
    whole, whole_failed = _feed_all([data], limit)
    split, split_failed = _feed_all(pieces, limit)
    if whole_failed != split_failed:
        raise FuzzFailure(f"ProtocolError depends on the split: whole={whole_failed} split={split_failed}")
    if not whole_failed and whole != split:
        raise FuzzFailure(f"frames depend on the split:\n{whole}\n{split}")
    for frame in split:
        if isinstance(frame, OversizedFrame):
            if not (frame.length > limit and frame.data == b""):
                raise FuzzFailure(f"bad oversized frame {frame}")
        elif len(frame.data) > limit:
            raise FuzzFailure(f"frame over the limit: {len(frame.data)}")
        else:
            again, _ = _feed_all([encode_frame(frame)], limit)
            if again != [frame]:
                raise FuzzFailure(f"re-encoding changed {frame} into {again}")


# -- target: server ----------------------------------------------------------------------------


def fuzz_handlers() -> dict[tuple[str, str], ttrpc.Handler]:
    async def unary(req: Str, ctx: ttrpc.CallContext) -> Str:
        return Str(value=req.value + "!")

    async def slow(req: Str, ctx: ttrpc.CallContext) -> Str:
        await asyncio.sleep(30)  # cut short by timeout_nano, or cancelled at EOF
        return Str()

    async def boom(req: Str, ctx: ttrpc.CallContext) -> Str:
        raise ValueError("handler bug")

    async def server_stream(req: Str, stream: ttrpc.ServerStream, ctx: ttrpc.CallContext) -> None:
        for i in range(len(req.value) % 4):
            await stream.send(Str(value=str(i)))

    async def client_stream(stream: ttrpc.ServerStream, ctx: ttrpc.CallContext) -> Str:
        return Str(value=",".join([m.value async for m in stream]))

    async def bidi(stream: ttrpc.ServerStream, ctx: ttrpc.CallContext) -> None:
        async for m in stream:
            await stream.send(m)

    card = ttrpc.Cardinality
    return {
        (SERVICE, "Unary"): ttrpc.Handler(unary, card.UNARY, Str, Str),
        (SERVICE, "Slow"): ttrpc.Handler(slow, card.UNARY, Str, Str),
        (SERVICE, "Boom"): ttrpc.Handler(boom, card.UNARY, Str, Str),
        (SERVICE, "ServerStream"): ttrpc.Handler(server_stream, card.SERVER_STREAMING, Str, Str),
        (SERVICE, "ClientStream"): ttrpc.Handler(client_stream, card.CLIENT_STREAMING, Str, Str),
        (SERVICE, "Bidi"): ttrpc.Handler(bidi, card.BIDI, Str, Str),
    }


def check_server_output(output: bytes) -> int:
    """Everything a server writes must be well-formed Response or Data frames; returns their count."""
    try:
        frames = FrameDecoder().feed(output)
    except ProtocolError as exc:
        raise FuzzFailure(f"server wrote an undecodable frame: {exc}") from exc
    if sum(HEADER_SIZE + len(f.data) for f in frames) != len(output):
        raise FuzzFailure("server output ends with a partial frame")
    for frame in frames:
        if frame.type == FrameType.RESPONSE:
            try:
                ttrpc_pb2.Response.FromString(frame.data)
            except DecodeError as exc:
                raise FuzzFailure(f"server wrote an undecodable Response: {exc}") from exc
        elif frame.type != FrameType.DATA:
            raise FuzzFailure(f"server wrote a frame of type {frame.type}")
    return len(frames)


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    while chunk := await reader.read(65536):
        chunks.append(chunk)
    return b"".join(chunks)


async def check_server(server: ttrpc.Server, pieces: list[bytes]) -> int:
    """Send ``pieces`` to ``server`` over a fresh socketpair, then EOF; run the server oracles.

    Returns:
        The number of frames the server wrote back.
    """
    loop = asyncio.get_running_loop()
    left, right = socket.socketpair()
    server_reader, server_writer = await asyncio.open_connection(sock=left)
    serving = loop.create_task(server.handle_connection(server_reader, server_writer))
    reader, writer = await asyncio.open_connection(sock=right)
    reading = loop.create_task(_read_all(reader))
    try:
        async with asyncio.timeout(PER_INPUT_BOUND):
            with contextlib.suppress(ConnectionError):
                for piece in pieces:
                    writer.write(piece)
                    await writer.drain()
                for _ in range(SETTLE_TURNS):  # let handlers answer before EOF cancels them
                    await asyncio.sleep(0)
                writer.write_eof()
            output = await reading
            await asyncio.wait({serving})
    except TimeoutError:
        raise FuzzFailure(f"server did not finish within {PER_INPUT_BOUND}s") from None
    finally:
        for task in (reading, serving):
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if serving.exception() is not None:
        raise FuzzFailure(f"handle_connection raised {serving.exception()!r}") from serving.exception()
    return check_server_output(output)


# -- engines -----------------------------------------------------------------------------------


@dataclass
class Stats:
    decoder_inputs: int = 0
    server_inputs: int = 0
    server_frames: int = 0  # frames the server wrote back (shows the inputs reach handlers)
    crashes: list[str] = field(default_factory=list)


class ServerRunner:
    """One event loop and one shared ``Server`` for many inputs (blocking facade)."""

    def __init__(self) -> None:
        self.runner = asyncio.Runner()
        self.server = self.runner.run(self._make())

    @staticmethod
    async def _make() -> ttrpc.Server:
        return ttrpc.Server(fuzz_handlers(), limits=LIMITS)

    def check(self, pieces: list[bytes]) -> int:
        return self.runner.run(check_server(self.server, pieces))

    def close(self) -> None:
        async def shutdown() -> None:
            self.server.close()
            await self.server.wait_closed()

        self.runner.run(shutdown())
        self.runner.close()


def _record(stats: Stats, target: str, data: bytes, exc: BaseException) -> None:
    stats.crashes.append(f"{target}: {exc!r} on input {data[:200].hex()}")
    print(f"CRASH ({target}) input={data.hex()}", file=sys.stderr)
    traceback.print_exception(exc, file=sys.stderr)


def run_random(runs: int, server_runs: int, seed: int, deadline: float | None = None) -> Stats:
    """The ``random`` engine: ``runs`` decoder inputs, ``server_runs`` server inputs (seeded)."""
    stats = Stats()
    rng = random.Random(seed)
    for _ in range(runs):
        if deadline is not None and time.monotonic() > deadline:
            break
        data = structured_input(rng) if rng.random() < 0.8 else rng.randbytes(rng.randrange(64))
        try:
            check_decoder(data, random_splits(rng, data))
        except Exception as exc:  # any exception is a finding
            _record(stats, "decoder", data, exc)
        stats.decoder_inputs += 1
    if server_runs:
        runner = ServerRunner()
        try:
            for _ in range(server_runs):
                if deadline is not None and time.monotonic() > deadline:
                    break
                data = structured_input(rng)
                try:
                    stats.server_frames += runner.check(random_splits(rng, data))
                except Exception as exc:
                    _record(stats, "server", data, exc)
                stats.server_inputs += 1
        finally:
            runner.close()
    return stats


def run_atheris(runs: int, server_every: int) -> None:  # pragma: no cover - needs atheris
    """The ``atheris`` engine: libFuzzer drives both targets; a crash aborts with its input."""
    import atheris

    atheris.instrument_all()  # kuasar is already imported: instrument the loaded code

    runner = ServerRunner()
    stats = Stats()

    def one_input(data: bytes) -> None:
        provider = atheris.FuzzedDataProvider(data)
        seed = provider.ConsumeInt(8)
        body = provider.ConsumeBytes(provider.remaining_bytes())
        rng = random.Random(seed)
        if seed & 1:
            body = structured_input(rng)
        pieces = random_splits(rng, body)
        check_decoder(body, pieces)
        stats.decoder_inputs += 1
        if stats.decoder_inputs % server_every == 0:
            stats.server_frames += runner.check(pieces)
            stats.server_inputs += 1
        if stats.decoder_inputs >= runs:
            print(
                f"engine=atheris decoder_inputs={stats.decoder_inputs} "
                f"server_inputs={stats.server_inputs} server_frames={stats.server_frames} crashes=0"
            )
            sys.stdout.flush()
            runner.close()
            import os

            os._exit(0)

    atheris.Setup([sys.argv[0], "-rss_limit_mb=4096", f"-runs={runs + 100}"], one_input)
    atheris.Fuzz()


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100_000, help="decoder inputs (default 100000)")
    parser.add_argument("--server-runs", type=int, default=None, help="server inputs (default runs/20)")
    parser.add_argument("--engine", choices=["auto", "random", "atheris"], default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=None, help="stop early after this long")
    args = parser.parse_args(argv)
    logging.disable(logging.CRITICAL)  # handler errors are expected and logged by the server
    server_runs = args.runs // 20 if args.server_runs is None else args.server_runs
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401

            engine = "atheris"
        except ImportError:
            engine = "random"
    if engine == "atheris":  # pragma: no cover - needs atheris
        run_atheris(args.runs, max(1, args.runs // max(1, server_runs)))
        return 0
    deadline = None if args.max_seconds is None else time.monotonic() + args.max_seconds
    started = time.monotonic()
    stats = run_random(args.runs, server_runs, args.seed, deadline)
    out(
        f"engine=random seed={args.seed} decoder_inputs={stats.decoder_inputs} "
        f"server_inputs={stats.server_inputs} server_frames={stats.server_frames} "
        f"crashes={len(stats.crashes)} "
        f"seconds={time.monotonic() - started:.1f}"
    )
    for crash in stats.crashes[:20]:
        out(f"  {crash}")
    return 1 if stats.crashes else 0


if __name__ == "__main__":
    sys.exit(main())
