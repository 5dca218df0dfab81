"""Copy in/out on a real filesystem: byte-exact files, directory trees as tar, rootfs confinement."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import AsyncIterator

import pytest

from kuasar.errors import RPCError
from kuasar.fscopy import FILE, TAR, CopyMeta, copy_in, copy_out
from kuasar.rootpath import resolve_in_root
from kuasar.ttrpc.codes import Code


async def feed(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        yield chunk


async def from_list(items: list[bytes]) -> AsyncIterator[bytes]:
    for item in items:
        yield item


async def round_trip(src_root: str, src: str, dst_root: str, dst: str, chunk: int = 1 << 20) -> CopyMeta:
    meta, chunks = await copy_out(src_root, src, chunk)
    sizes = []

    async def watched() -> AsyncIterator[bytes]:
        async for data in chunks:
            sizes.append(len(data))
            yield data

    await copy_in(dst_root, CopyMeta(meta.kind, dst, meta.mode, meta.mtime, meta.size, meta.name), watched())
    assert all(size <= chunk for size in sizes)
    return meta


def make_rootfs(base: str) -> str:
    rootfs = os.path.join(base, "rootfs")
    os.makedirs(os.path.join(rootfs, "etc"))
    os.makedirs(os.path.join(rootfs, "data"))
    with open(os.path.join(rootfs, "etc", "passwd"), "w", encoding="ascii") as file:
        file.write("container-passwd\n")
    return rootfs


@pytest.mark.asyncio
async def test_100_mib_file_is_byte_exact_both_ways(tmp_path: object) -> None:
    base = str(tmp_path)
    rootfs = make_rootfs(base)
    source = os.path.join(base, "big.bin")
    block = os.urandom(1 << 20)
    digest = hashlib.sha256()
    with open(source, "wb") as file:
        for index in range(100):
            data = block[index:] + block[:index]
            digest.update(data)
            file.write(data)
    os.chmod(source, 0o640)
    os.utime(source, (1_700_000_000, 1_700_000_000))
    meta = await round_trip("/", source, rootfs, "/data/")  # into an existing directory: keeps its name
    assert (meta.kind, meta.size, meta.mode, meta.mtime) == (FILE, 100 << 20, 0o640, 1_700_000_000)
    inside = os.path.join(rootfs, "data", "big.bin")
    back = os.path.join(base, "back.bin")
    await round_trip(rootfs, "/data/big.bin", "/", back)
    for path in (inside, back):
        with open(path, "rb") as file:
            assert hashlib.file_digest(file, "sha256").digest() == digest.digest()
        info = os.stat(path)
        assert (stat.S_IMODE(info.st_mode), int(info.st_mtime)) == (0o640, 1_700_000_000)
    assert sorted(os.listdir(os.path.join(rootfs, "data"))) == ["big.bin"]  # no temp file left


@pytest.mark.asyncio
async def test_directory_round_trip_keeps_modes_mtimes_and_links(tmp_path: object) -> None:
    base = str(tmp_path)
    rootfs = make_rootfs(base)
    tree = os.path.join(base, "tree")
    os.makedirs(os.path.join(tree, "sub", "deep"))
    files = {"a.txt": (b"alpha\n", 0o600), "sub/run.sh": (b"#!/bin/sh\n", 0o755), "sub/deep/z": (b"", 0o444)}
    for name, (data, mode) in files.items():
        path = os.path.join(tree, name)
        with open(path, "wb") as file:
            file.write(data)
        os.chmod(path, mode)
        os.utime(path, (1_600_000_000, 1_600_000_000))
    os.symlink("../a.txt", os.path.join(tree, "sub", "link"))
    os.chmod(os.path.join(tree, "sub"), 0o750)
    for directory in ("sub/deep", "sub", ""):
        os.utime(os.path.join(tree, directory), (1_500_000_000, 1_500_000_000))

    meta = await round_trip("/", tree, rootfs, "/data/copy")  # missing destination: takes that name
    assert meta.kind == TAR
    await round_trip(rootfs, "/data/copy", "/", os.path.join(base, "back"), chunk=4096)
    for copy in (os.path.join(rootfs, "data", "copy"), os.path.join(base, "back")):
        for name, (data, mode) in files.items():
            path = os.path.join(copy, name)
            with open(path, "rb") as file:
                assert file.read() == data
            info = os.stat(path)
            assert (stat.S_IMODE(info.st_mode), int(info.st_mtime)) == (mode, 1_600_000_000)
        assert os.readlink(os.path.join(copy, "sub", "link")) == "../a.txt"
        sub = os.stat(os.path.join(copy, "sub"))
        assert (stat.S_IMODE(sub.st_mode), int(sub.st_mtime)) == (0o750, 1_500_000_000)
        assert int(os.stat(copy).st_mtime) == 1_500_000_000


@pytest.mark.asyncio
async def test_dot_dot_escape_is_refused(tmp_path: object) -> None:
    rootfs = make_rootfs(str(tmp_path))
    for path in ("/../../etc/passwd", "/data/../../etc/passwd"):
        with pytest.raises(RPCError) as denied:
            await copy_out(rootfs, path)
        assert denied.value.code == Code.PERMISSION_DENIED
    with pytest.raises(RPCError) as relative:
        await copy_out(rootfs, "etc/passwd")
    assert relative.value.code == Code.INVALID_ARGUMENT
    os.symlink("../../../../../etc", os.path.join(rootfs, "up"))
    with pytest.raises(RPCError) as via_link:
        await copy_out(rootfs, "/up/passwd")
    assert via_link.value.code == Code.PERMISSION_DENIED


@pytest.mark.asyncio
async def test_absolute_symlink_resolves_inside_the_rootfs_never_to_the_host(tmp_path: object) -> None:
    rootfs = make_rootfs(str(tmp_path))
    os.symlink("/etc/passwd", os.path.join(rootfs, "hostpasswd"))
    os.symlink("/etc", os.path.join(rootfs, "hostetc"))
    _, chunks = await copy_out(rootfs, "/hostpasswd")
    assert b"".join([c async for c in chunks]) == b"container-passwd\n"
    assert resolve_in_root(rootfs, "/hostetc/passwd") == "/etc/passwd"
    await copy_in(rootfs, CopyMeta(FILE, "/hostetc/planted", 0o644, 0, 3), from_list([b"abc"]))
    assert os.path.exists(os.path.join(rootfs, "etc", "planted"))
    assert not os.path.exists("/etc/planted")
    os.symlink("/no/such/dir", os.path.join(rootfs, "dangling"))
    with pytest.raises(RPCError) as missing:
        await copy_out(rootfs, "/dangling")
    assert missing.value.code == Code.NOT_FOUND


@pytest.mark.asyncio
async def test_tar_member_escaping_the_destination_is_refused(tmp_path: object) -> None:
    import io
    import tarfile

    rootfs = make_rootfs(str(tmp_path))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("../../../../../../tmp/evil")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(RPCError) as denied:
        await copy_in(rootfs, CopyMeta(TAR, "/data/x", 0o755), from_list([buffer.getvalue()]))
    assert denied.value.code == Code.PERMISSION_DENIED
    assert not os.path.exists("/tmp/evil")


@pytest.mark.asyncio
async def test_copy_in_destination_rules(tmp_path: object) -> None:
    rootfs = make_rootfs(str(tmp_path))
    cases = [
        (CopyMeta(FILE, "/nope/file", size=1), Code.NOT_FOUND),
        (CopyMeta(FILE, "/nope/", size=1, name="f"), Code.NOT_FOUND),
        (CopyMeta(TAR, "/etc/passwd", name="d"), Code.FAILED_PRECONDITION),
        (CopyMeta(FILE, "/data", size=1), Code.FAILED_PRECONDITION),
        (CopyMeta(FILE, "/data/x", size=1, name="../y"), Code.INVALID_ARGUMENT),
    ]
    for meta, code in cases:
        with pytest.raises(RPCError) as refused:
            await copy_in(rootfs, meta, from_list([b"x"]))
        assert refused.value.code == code, meta
    with pytest.raises(RPCError) as short:
        await copy_in(rootfs, CopyMeta(FILE, "/data/short", size=10), from_list([b"abc"]))
    assert short.value.code == Code.INVALID_ARGUMENT
    with pytest.raises(RPCError) as long:
        await copy_in(rootfs, CopyMeta(FILE, "/data/long", size=1), from_list([b"abc"]))
    assert long.value.code == Code.INVALID_ARGUMENT
    assert os.listdir(os.path.join(rootfs, "data")) == []
    with pytest.raises(RPCError) as bad_tar:
        await copy_in(rootfs, CopyMeta(TAR, "/data/t"), from_list([b"not a tar" * 100]))
    assert bad_tar.value.code == Code.INVALID_ARGUMENT


@pytest.mark.asyncio
async def test_abandoned_copy_out_releases_its_thread_and_files(tmp_path: object) -> None:
    tree = os.path.join(str(tmp_path), "tree")
    os.makedirs(tree)
    for index in range(20):
        with open(os.path.join(tree, f"f{index}"), "wb") as file:
            file.write(os.urandom(256 * 1024))
    before = len(os.listdir("/proc/self/fd"))
    _, chunks = await copy_out("/", tree, 64 * 1024)
    assert isinstance(chunks, AsyncIterator)
    first = await anext(chunks)
    assert first
    await chunks.aclose()
    assert len(os.listdir("/proc/self/fd")) == before


@pytest.mark.asyncio
async def test_copy_in_whose_sender_vanishes_mid_tar_stops_cleanly(tmp_path: object) -> None:
    import asyncio

    rootfs = make_rootfs(str(tmp_path))
    tree = os.path.join(str(tmp_path), "tree")
    os.makedirs(tree)
    with open(os.path.join(tree, "big"), "wb") as file:
        file.write(os.urandom(3 << 20))
    _, chunks = await copy_out("/", tree, 64 * 1024)

    async def vanishing() -> AsyncIterator[bytes]:
        count = 0
        async for data in chunks:
            yield data
            count += 1
            if count == 5:
                raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        async with asyncio.timeout(30):
            await copy_in(rootfs, CopyMeta(TAR, "/data/t", 0o755), vanishing())
    await chunks.aclose()
