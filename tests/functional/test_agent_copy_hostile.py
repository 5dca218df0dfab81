"""Hostile tar streams sent to a real agent's ``CopyIn``: nothing is ever written outside the
destination, even when it is shallow (``DIR/x``, whose sibling ``DIR/sibling`` no rootfs check
protects)."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
import pytest_asyncio

from kuasar import ttrpc
from kuasar.agent.services.containers import SERVICE, container_handlers
from kuasar.errors import RPCError
from kuasar.fscopy import TAR, CopyMeta, copy_in
from kuasar.proto import agent_pb2 as pb
from kuasar.ttrpc.testing import client_server_pair
from tests.functional.bundle import scratch_manager

Member = tuple[tarfile.TarInfo, bytes | None]


def regular(name: str, data: bytes = b"pwned\n") -> Member:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def directory(name: str) -> Member:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info, None


def archive(*members: Member) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


#: (case, archive for a destination DIR/x; ``parent`` is DIR as the agent sees it)
HOSTILE: list[tuple[str, Callable[[str], bytes]]] = [
    ("dot-dot member", lambda parent: archive(regular("../sibling"))),
    ("dot-dot inside a name", lambda parent: archive(directory("a"), regular("a/../../sibling"))),
    ("absolute member", lambda parent: archive(regular(f"{parent}/sibling"))),
    ("write through a symlink to ..", lambda parent: archive(link("up", ".."), regular("up/sibling"))),
    ("write through ./up -> ..", lambda parent: archive(link("./up", "../"), regular("./up/sibling"))),
    (
        "write through an absolute symlink",
        lambda parent: archive(link("abs", parent), regular("abs/sibling")),
    ),
    ("directory through a symlink", lambda parent: archive(link("up", ".."), directory("up/sibling"))),
    ("symlink chain", lambda parent: archive(link("a", "."), link("a/b", ".."), regular("a/b/sibling"))),
    ("escaping relative symlink", lambda parent: archive(link("sibling-link", "../sibling"))),
    ("escaping absolute symlink", lambda parent: archive(link("passwd", "/etc/passwd"))),
    ("hard link out", lambda parent: archive(link("hl", "../outside", tarfile.LNKTYPE))),
    ("absolute hard link", lambda parent: archive(link("hl", f"{parent}/outside", tarfile.LNKTYPE))),
    (
        "hard link to an escaping symlink",
        lambda parent: archive(link("in", "."), link("hl", "in", tarfile.LNKTYPE), regular("hl/x")),
    ),
]


@dataclass
class Agent:
    client: ttrpc.Client

    async def copy_in(self, path: str, data: bytes) -> pb.CopyInResponse:
        header = pb.CopyHeader(path=path, kind=pb.CopyHeader.TAR, mode=0o755)
        async with self.client.stream(SERVICE, "CopyIn", pb.CopyInResponse, client_streaming=True) as stream:
            await stream.send(pb.CopyChunk(header=header))
            for offset in range(0, len(data), 512):
                await stream.send(pb.CopyChunk(data=data[offset : offset + 512]))
            await stream.close_send()
            return await stream.response()


@pytest_asyncio.fixture
async def agent(tmp_path: object) -> AsyncIterator[Agent]:
    manager = scratch_manager(str(tmp_path), subreaper=False)
    try:
        async with client_server_pair([container_handlers(manager)]) as (client, _server):
            yield Agent(client)
    finally:
        await manager.close()
        manager.logs.close()


def listing(path: str) -> list[str]:
    return sorted(os.listdir(path))


@pytest.mark.asyncio
async def test_hostile_tar_into_a_shallow_destination_writes_nothing_outside(
    agent: Agent, tmp_path: object
) -> None:
    for number, (case, build) in enumerate(HOSTILE):
        parent = os.path.join(str(tmp_path), f"case{number}")
        os.mkdir(parent)
        with open(os.path.join(parent, "outside"), "w", encoding="ascii") as file:
            file.write("outside\n")
        with pytest.raises(RPCError) as refused:
            await agent.copy_in(os.path.join(parent, "x"), build(parent))
        assert refused.value.code == ttrpc.Code.PERMISSION_DENIED, (case, refused.value)
        assert "unsafe tar member" in refused.value.message, case
        assert "\n" not in refused.value.message
        assert listing(parent) in (["outside"], ["outside", "x"]), (case, listing(parent))
        with open(os.path.join(parent, "outside"), encoding="ascii") as file:
            assert file.read() == "outside\n", case
        for top, _dirs, files in os.walk(os.path.join(parent, "x")):
            for name in files:  # a member written before the bad one stays inside x
                assert os.path.realpath(os.path.join(top, name)).startswith(parent + "/x/"), case
    await links_that_stay_inside_are_extracted(agent, os.path.join(str(tmp_path), "fine"))


@pytest.mark.asyncio
async def test_existing_symlink_in_the_destination_is_not_a_way_out(agent: Agent, tmp_path: object) -> None:
    parent = str(tmp_path)
    os.makedirs(os.path.join(parent, "x"))
    os.symlink("..", os.path.join(parent, "x", "up"))
    with pytest.raises(RPCError) as refused:
        await agent.copy_in(os.path.join(parent, "x"), archive(regular("up/sibling")))
    assert refused.value.code == ttrpc.Code.PERMISSION_DENIED
    assert not os.path.exists(os.path.join(parent, "sibling"))


async def links_that_stay_inside_are_extracted(agent: Agent, dest: str) -> None:
    data = archive(
        directory("sub"),
        regular("sub/file", b"data\n"),
        link("sub/rel", "file"),
        link("top", "sub/../sub/file"),
        link("abs", f"{dest}/sub/file"),
        link("hard", "sub/file", tarfile.LNKTYPE),
    )
    written = await agent.copy_in(dest, data)
    assert written.bytes_written == 5
    for name in ("sub/rel", "top", "abs", "hard"):
        with open(os.path.join(dest, name), "rb") as file:
            assert file.read() == b"data\n", name
    assert os.readlink(os.path.join(dest, "sub", "rel")) == "file"
    assert os.stat(os.path.join(dest, "hard")).st_ino == os.stat(os.path.join(dest, "sub", "file")).st_ino


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


@pytest.mark.asyncio
async def test_inside_a_rootfs_the_shallow_sibling_is_safe_too(tmp_path: object) -> None:
    rootfs = os.path.join(str(tmp_path), "rootfs")
    os.makedirs(os.path.join(rootfs, "data"))
    for data in (archive(link("up", ".."), regular("up/sibling")), archive(regular("../sibling"))):
        with pytest.raises(RPCError) as refused:
            await copy_in(rootfs, CopyMeta(TAR, "/data/x", 0o755), _chunks(data))
        assert refused.value.code == ttrpc.Code.PERMISSION_DENIED
        assert not os.path.exists(os.path.join(rootfs, "data", "sibling"))
