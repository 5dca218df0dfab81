"""Go ttrpc 1.1.1 client (``go/src/kuasarpeer/client``) -> Python ``kuasar.ttrpc.Server``.

The Python server runs in the test's event loop (``asyncio.start_unix_server`` +
``Server.handle_connection``); the Go client runs as a subprocess making a script of calls on one
connection. Where behaviour is Go's policy (error texts, codes, the oversize rule), the same
script is also run against the Go server and the answers must match.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from kuasar import ttrpc
from tests.interop.gopeers import PEER_SERVICE, GoPeers, go_server, run_go_bench, run_go_client
from tests.interop.peer import python_server, value_len_for_frame

MAX = 4 << 20


def call(method: str, **spec: Any) -> dict[str, Any]:
    return {"service": spec.pop("service", PEER_SERVICE), "method": method, **spec}


async def against_python(go_peers: GoPeers, tmp: Path, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    path = tmp / "py.sock"
    async with python_server(path):
        return await run_go_client(go_peers.client, path, calls)


async def against_go(go_peers: GoPeers, tmp: Path, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    path = tmp / "go.sock"
    with go_server(go_peers.server, path):
        return await run_go_client(go_peers.client, path, calls)


@pytest.mark.asyncio
async def test_unary_echo_many_calls_one_connection(go_peers: GoPeers, short_tmp: Path) -> None:
    calls = [call("Echo", type="string", value=f"hi {i}") for i in range(50)]
    results = await against_python(go_peers, short_tmp, calls)
    assert results == [{"ok": True, "string": f"py:hi {i}"} for i in range(50)]


@pytest.mark.asyncio
async def test_status_error_code_and_message(go_peers: GoPeers, short_tmp: Path) -> None:
    calls = [
        call("Raise", type="string", value="5 no such box: pod-1"),
        call("Raise", type="string", value="9 ünïcode ✓"),
        call("Echo", type="string", value="after"),
    ]
    results = await against_python(go_peers, short_tmp, calls)
    assert results == [
        {"ok": False, "code": int(ttrpc.Code.NOT_FOUND), "message": "no such box: pod-1"},
        {"ok": False, "code": int(ttrpc.Code.FAILED_PRECONDITION), "message": "ünïcode ✓"},
        {"ok": True, "string": "py:after"},
    ]


@pytest.mark.asyncio
async def test_unimplemented_texts_match_the_go_server(go_peers: GoPeers, short_tmp: Path) -> None:
    calls = [
        call("Echo", service="kuasar.interop.v1.Nope", type="string", value="x"),
        call("Nope", type="empty"),
        call("Nope", service="", type="empty"),
    ]
    python_results = await against_python(go_peers, short_tmp, calls)
    go_results = await against_go(go_peers, short_tmp, calls)
    assert python_results == go_results
    assert python_results[:2] == [
        {"ok": False, "code": int(ttrpc.Code.UNIMPLEMENTED), "message": "service kuasar.interop.v1.Nope"},
        {"ok": False, "code": int(ttrpc.Code.UNIMPLEMENTED), "message": "method Nope"},
    ]


@pytest.mark.asyncio
async def test_metadata_repeated_keys_arrive_in_order(go_peers: GoPeers, short_tmp: Path) -> None:
    sent = [["a", "1"], ["b", "x"], ["a", "2"], ["a", "3"], ["containerd-namespace-ttrpc", "default"]]
    results = await against_python(
        go_peers, short_tmp, [call("Metadata", type="empty", resp="string", metadata=sent)]
    )
    assert results[0]["ok"]
    lines = results[0]["string"].split("\n")
    # Go sends its MD map's keys in map order, but the values of one key in order
    assert sorted(lines) == sorted(f"{k}={v}" for k, v in sent)
    assert [line for line in lines if line.startswith("a=")] == ["a=1", "a=2", "a=3"]


@pytest.mark.asyncio
async def test_go_deadline_reaches_the_python_handler(go_peers: GoPeers, short_tmp: Path) -> None:
    calls = [
        call("Deadline", type="empty", resp="int64"),
        call("Deadline", type="empty", resp="int64", timeout_ms=3000),
    ]
    results = await against_python(go_peers, short_tmp, calls)
    assert results[0] == {"ok": True, "int": -1}
    assert results[1]["ok"]
    assert 0 < results[1]["int"] <= 3_000_000_000


@pytest.mark.asyncio
async def test_python_server_enforces_timeout_nano_like_go(go_peers: GoPeers, short_tmp: Path) -> None:
    # wire_timeout_ms sets only timeout_nano: the client waits, so the answer is the server's
    calls = [
        call("Sleep", type="int64", int=10_000, wire_timeout_ms=200),
        call("Sleep", type="int64", int=1, wire_timeout_ms=5000),
    ]
    python_results = await against_python(go_peers, short_tmp, calls)
    go_results = await against_go(go_peers, short_tmp, calls)
    assert (
        python_results
        == go_results
        == [
            {"ok": False, "code": int(ttrpc.Code.DEADLINE_EXCEEDED), "message": "context deadline exceeded"},
            {"ok": True, "int": 1},
        ]
    )


@pytest.mark.asyncio
async def test_4_mib_frame_accepted_oversize_rejected_connection_kept_like_go(
    go_peers: GoPeers, short_tmp: Path
) -> None:
    exact = value_len_for_frame(PEER_SERVICE, "Size", MAX)
    over = value_len_for_frame(PEER_SERVICE, "Size", MAX + 1)
    calls = [
        call("Size", type="bytes", size=exact, resp="int64"),
        call("Size", type="bytes", size=over, resp="int64"),  # Go 1.1.1 sends it anyway
        call("Size", type="bytes", size=3, resp="int64"),  # same connection, still served
    ]
    python_results = await against_python(go_peers, short_tmp, calls)
    go_results = await against_go(go_peers, short_tmp, calls)
    assert (
        python_results
        == go_results
        == [
            {"ok": True, "int": exact},
            {
                "ok": False,
                "code": int(ttrpc.Code.RESOURCE_EXHAUSTED),
                "message": "message length 4194305 exceed maximum message size of 4194304",
            },
            {"ok": True, "int": 3},
        ]
    )


@pytest.mark.asyncio
async def test_bench_mode_calls_health_check_with_method(go_peers: GoPeers, short_tmp: Path) -> None:
    """``-service grpc.Health -method Check``: bench/ttrpc_rate.py's row against a real agent."""
    path = short_tmp / "health.sock"
    server = ttrpc.Server(ttrpc.health_handlers())
    listener = await asyncio.start_unix_server(server.handle_connection, str(path))
    try:
        rate = await run_go_bench(go_peers.client, path, 200, 4, service="grpc.Health", method="Check")
        assert rate > 0  # every call answered OK (the bench fails on any error)
        with pytest.raises(RuntimeError, match="failed=200"):  # a method it does not serve: all fail
            await run_go_bench(go_peers.client, path, 200, 4, service="grpc.Health", method="Nope")
    finally:
        listener.close()
        server.close()
        await server.wait_closed()
        await listener.wait_closed()
