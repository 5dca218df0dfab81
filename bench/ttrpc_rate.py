"""ttrpc unary call rate and streaming throughput: kuasar.ttrpc against Go's containerd/ttrpc.

Unary ``Echo`` calls per second on ONE connection with 1 and 64 calls in flight, for:
  Go client -> Go server          (the baseline every ratio is taken against)
  Py client -> Go server
  Go client -> Py server
  Py client -> Py server          (server in its own process, like the Go server)
  Go client -> kuasar-agent Health  (grpc.Health/Check on a real kuasar-agent on a UNIX socket)
and Python server-streaming / client-streaming throughput in MB/s with 64 KiB messages.
The Go peers are built from Debian packages by ``tests/interop/gopeers.py`` (rows skipped with
the reason when Go is absent). ``--uvloop`` runs the Python side on uvloop too and reports both.
Goal (issue 4): Py<->Py >= 0.5 x Go<->Go at 64 in flight. Every loop is bounded (~40-60 s total).

Usage: python bench/ttrpc_rate.py [--uvloop] [--seconds 2] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from google.protobuf import wrappers_pb2  # noqa: E402

from kuasar import ttrpc  # noqa: E402
from tests.interop.gopeers import (  # noqa: E402
    PEER_SERVICE,
    GoUnavailable,
    build_go_peers,
    go_server,
    run_go_bench,
)
from tests.interop.peer import peer_handlers, python_client  # noqa: E402

CHUNK = 64 * 1024
CONCURRENCY = (1, 64)
Str = wrappers_pb2.StringValue
Int = wrappers_pb2.Int64Value
Bytes = wrappers_pb2.BytesValue


# -- the Python server process ----------------------------------------------------------------


def bench_handlers() -> dict[tuple[str, str], ttrpc.Handler]:
    """Peer handlers plus two streaming methods for the throughput rows."""
    blob = Bytes(value=b"\xa5" * CHUNK)

    async def pour(req: Int, stream: ttrpc.ServerStream, ctx: ttrpc.CallContext) -> None:
        for _ in range(req.value):
            await stream.send(blob)

    async def drain(stream: ttrpc.ServerStream, ctx: ttrpc.CallContext) -> Int:
        total = 0
        async for message in stream:
            total += len(message.value)
        return Int(value=total)

    handlers = peer_handlers()
    handlers[(PEER_SERVICE, "Pour")] = ttrpc.Handler(pour, ttrpc.Cardinality.SERVER_STREAMING, Int, Bytes)
    handlers[(PEER_SERVICE, "Drain")] = ttrpc.Handler(drain, ttrpc.Cardinality.CLIENT_STREAMING, Bytes, Int)
    return handlers


async def serve(path: str) -> None:
    server = ttrpc.Server(bench_handlers())
    listener = await asyncio.start_unix_server(server.handle_connection, path)
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
    listener.close()
    server.close()
    await server.wait_closed()


@contextlib.contextmanager
def server_process(argv: list[str], ready: bytes, name: str) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` until the block ends, once it printed the line ``ready``; it is stopped by
    closing its stdin, then SIGTERM, then SIGKILL (10 s each at most)."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        if proc.stdout.readline().strip() != ready:
            raise RuntimeError(f"{name} did not start")
        yield proc
    finally:
        proc.stdin.close()
        for stop in (None, proc.terminate, proc.kill):
            if stop is not None:
                stop()
            try:
                proc.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue
        proc.stdout.close()


def python_server_process(path: Path, loop_name: str) -> contextlib.AbstractContextManager[object]:
    argv = [sys.executable, __file__, "--serve", str(path), "--loop", loop_name]
    return server_process(argv, b"READY", "Python bench server")


def agent_process(path: Path, home: Path) -> contextlib.AbstractContextManager[object]:
    """A real ``kuasar-agent`` serving its API on the UNIX socket ``path`` (no console, no root)."""
    argv = [
        *(sys.executable, "-m", "kuasar.agent", "--api", f"unix://{path}", "--no-debug-console"),
        *("--state-dir", str(home / "state"), "--home", str(home), "--log-level", "warning"),
        *("--ready-fd", "1"),
    ]
    return server_process(argv, b"ready", "kuasar-agent")


# -- measurements -------------------------------------------------------------------------------


async def py_call_rate(path: Path, concurrency: int, seconds: float) -> float:
    """Echo calls/s from one Python client connection with ``concurrency`` calls in flight."""
    async with python_client(path) as client:
        loop = asyncio.get_running_loop()
        request = Str(value="bench")

        async def worker(stop: float, counter: list[int]) -> None:
            while loop.time() < stop:
                await client.call(PEER_SERVICE, "Echo", request, Str)
                counter[0] += 1

        warm: list[int] = [0]
        await asyncio.gather(*(worker(loop.time() + min(0.3, seconds / 4), warm) for _ in range(concurrency)))
        done: list[int] = [0]
        started = time.perf_counter()
        await asyncio.gather(*(worker(loop.time() + seconds, done) for _ in range(concurrency)))
        return done[0] / (time.perf_counter() - started)


async def py_stream_rates(path: Path, seconds: float) -> tuple[float, float]:
    """(server-streaming, client-streaming) MB/s with 64 KiB messages on one connection."""
    async with python_client(path) as client:
        loop = asyncio.get_running_loop()
        received = 0
        started = time.perf_counter()
        stop = loop.time() + seconds
        while loop.time() < stop:
            async with client.stream(
                PEER_SERVICE, "Pour", Bytes, server_streaming=True, request=Int(value=256)
            ) as s:
                async for message in s:
                    received += len(message.value)
        down = received / (time.perf_counter() - started) / 1e6

        sent = 0
        blob = Bytes(value=b"\x5a" * CHUNK)
        started = time.perf_counter()
        stop = loop.time() + seconds
        while loop.time() < stop:
            async with client.stream(PEER_SERVICE, "Drain", Int, client_streaming=True) as s:
                for _ in range(256):
                    await s.send(blob)
                sent += (await s.response()).value
        up = sent / (time.perf_counter() - started) / 1e6
        return down, up


def go_bench_calls(concurrency: int, seconds: float, guess_rate: float) -> int:
    return max(1000, int(guess_rate * seconds))


def run_in_loop(loop_name: str, coro_fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    if loop_name == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro_fn())
    return asyncio.run(coro_fn())


Rows = dict[str, dict[str, float]]  # row -> {column: calls/s, or MB/s for a streaming row}


def measure_round(peers: Any, loops: list[str], secs: float, tmp: Path) -> Rows:
    """Every row once; the streaming rows' columns are ``down`` and ``up`` (MB/s)."""
    rows: Rows = {}
    gosock, pysock = tmp / "go.sock", tmp / "py.sock"
    if peers is not None:
        with go_server(peers.server, gosock):
            for c in CONCURRENCY:
                calls = go_bench_calls(c, secs, 15_000 if c == 1 else 100_000)
                rate = asyncio.run(run_go_bench(peers.client, gosock, calls, c))
                rows.setdefault("Go client -> Go server", {})[f"c{c}"] = rate
            for loop_name in loops:
                for c in CONCURRENCY:
                    rate = run_in_loop(loop_name, functools.partial(py_call_rate, gosock, c, secs))
                    rows.setdefault(f"Py client -> Go server ({loop_name})", {})[f"c{c}"] = rate
    for loop_name in loops:
        with python_server_process(pysock, loop_name):
            for c in CONCURRENCY:
                rate = run_in_loop(loop_name, functools.partial(py_call_rate, pysock, c, secs))
                rows.setdefault(f"Py client -> Py server ({loop_name})", {})[f"c{c}"] = rate
            if peers is not None:
                for c in CONCURRENCY:
                    # as many calls as the Python server answered in `secs` just before
                    calls = go_bench_calls(c, secs, rows[f"Py client -> Py server ({loop_name})"][f"c{c}"])
                    rate = asyncio.run(run_go_bench(peers.client, pysock, calls, c))
                    rows.setdefault(f"Go client -> Py server ({loop_name})", {})[f"c{c}"] = rate
            down, up = run_in_loop(loop_name, functools.partial(py_stream_rates, pysock, secs))
            rows[f"streaming ({loop_name})"] = {"down": down, "up": up}
    if peers is not None:
        agentsock = tmp / "agent.sock"
        with agent_process(agentsock, tmp):
            for c in CONCURRENCY:
                calls = go_bench_calls(c, secs, 10_000 if c == 1 else 40_000)
                rate = asyncio.run(
                    run_go_bench(peers.client, agentsock, calls, c, service="grpc.Health", method="Check")
                )
                rows.setdefault("Go client -> kuasar-agent Health", {})[f"c{c}"] = rate
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uvloop", action="store_true", help="also run the Python side on uvloop")
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement (default 2)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure every row this many times, print medians (default 1)"
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--loop", default="asyncio", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        run_in_loop(args.loop, functools.partial(serve, args.serve))
        return 0

    loops = ["asyncio", "uvloop"] if args.uvloop else ["asyncio"]
    notes: list[str] = []
    try:
        peers = build_go_peers()
    except GoUnavailable as exc:
        peers = None
        notes.append(f"Go rows skipped: {exc}")

    rounds: list[Rows] = []
    for _ in range(max(1, args.rounds)):
        with tempfile.TemporaryDirectory(prefix="kbench-") as tmp:
            rounds.append(measure_round(peers, loops, args.seconds, Path(tmp)))
    # a cell is the median of its rounds: the machine's other load moves single runs a lot
    rows: Rows = {
        name: {col: statistics.median(r[name][col] for r in rounds) for col in cols}
        for name, cols in rounds[0].items()
    }
    for loop_name in loops:
        stream = rows.pop(f"streaming ({loop_name})")
        notes.append(
            f"Py<->Py streaming ({loop_name}), 64 KiB messages: server->client {stream['down']:.0f} MB/s, "
            f"client->server {stream['up']:.0f} MB/s"
        )
    if len(rounds) > 1:
        notes.append(f"every cell is the median of {len(rounds)} rounds")

    base = rows.get("Go client -> Go server", {})
    header = f"{'unary Echo, one connection':<36} {'1 in flight':>12} {'ratio':>6}"
    print(f"{header} {'64 in flight':>13} {'ratio':>6}")
    for name, cols in rows.items():
        cells = []
        for c in CONCURRENCY:
            measured = cols.get(f"c{c}")
            ref = base.get(f"c{c}")
            cells.append(f"{measured:>10.0f}/s" if measured else f"{'-':>12}")
            cells.append(f"{measured / ref:>5.2f}x" if measured and ref else f"{'-':>6}")
        print(f"{name:<36} {cells[0]} {cells[1]} {cells[2]:>13} {cells[3]}")
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
