"""Fixtures for the interop tests: Go ttrpc peers built from Debian packages, and containerd's shim.

Every test here is marked ``interop``. Tests needing Go skip (with the reason) when ``go`` or
Debian's ``golang-github-containerd-ttrpc-dev`` is absent; the shim tests skip when
``containerd-shim-runc-v2`` is absent or cannot start here (it needs root for /run/containerd).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.gopeers import GoPeers, GoUnavailable, build_go_peers, go_server
from tests.interop.shim import Shim, ShimUnavailable, started_shim

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.interop)


@pytest.fixture(scope="session")
def go_peers() -> GoPeers:
    """The Go server and client, built once per session (cached across sessions in .build/)."""
    try:
        return build_go_peers()
    except GoUnavailable as exc:
        pytest.skip(f"Go ttrpc peers unavailable: {exc}")


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short directory for UNIX sockets (``tmp_path`` can exceed the 108-byte sun_path limit)."""
    with tempfile.TemporaryDirectory(prefix="kip-") as name:
        yield Path(name)


@pytest.fixture
def go_server_socket(go_peers: GoPeers, short_tmp: Path) -> Iterator[Path]:
    """A running Go ttrpc server; yields its socket path."""
    path = short_tmp / "go.sock"
    with go_server(go_peers.server, path):
        yield path


@pytest.fixture
def runc_shim(short_tmp: Path) -> Iterator[Shim]:
    """A containerd-shim-runc-v2 started as containerd starts it (``start``); shut down after."""
    if os.geteuid() != 0:
        pytest.skip("containerd-shim-runc-v2 needs root (it binds under /run/containerd)")
    try:
        with started_shim(short_tmp / "bundle") as shim:
            yield shim
    except ShimUnavailable as exc:
        pytest.skip(f"containerd-shim-runc-v2 cannot start here: {exc}")
