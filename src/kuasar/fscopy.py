"""File copy in and out of a root directory (the guest's ``/`` or a container's rootfs), as ``docker
cp`` does it.

Layer contract: neutral module shared by the guest agent (``CopyIn``/``CopyOut``) and the host
CLI (``kuasarctl cp`` runs the same code on its own end with root ``/``, so both ends follow the
same rules); imports neither ``kuasar.agent`` nor ``kuasar.ctl`` nor ``kuasar.sandbox``: only
:mod:`kuasar.rootpath`, :mod:`kuasar.tarstream` and ``kuasar.errors``/``kuasar.codes`` (no
protobuf: the callers translate :class:`CopyMeta` to and from ``CopyHeader``). Failures are
:class:`kuasar.errors.RPCError` with the Agent API's status.

Paths are resolved inside the root (:func:`kuasar.rootpath.resolve_in_root`) and files opened
with ``O_NOFOLLOW``. A file is one header then its bytes; a directory is a tar stream
(:mod:`kuasar.tarstream`, whose extraction refuses any member that would land outside the
destination). Copying in follows ``docker cp``: onto an existing directory the source lands inside
it under its own name; onto a missing path it takes that path (whose parent must exist); a path
ending in ``/`` must be an existing directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import stat
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from kuasar._fdio import write_all_blocking
from kuasar.codes import Code
from kuasar.errors import RPCError
from kuasar.rootpath import host_path, os_error, resolve_in_root
from kuasar.tarstream import CHUNK, extract, tar_chunks

FILE = "file"
TAR = "tar"
#: Default size of the chunks :func:`copy_out` yields.
DEFAULT_CHUNK = CHUNK


@dataclass(frozen=True, slots=True)
class CopyMeta:
    """What a copy carries besides the bytes.

    Attributes:
        kind: :data:`FILE` or :data:`TAR` (a directory).
        path: the path in the guest or container (source for copy-out, destination for copy-in).
        mode: permission bits (``0o7777``).
        mtime: modification time, unix seconds.
        size: bytes of a file (0 for a tar stream).
        name: the source's base name (copy-in onto an existing directory lands at ``path/name``).
    """

    kind: str
    path: str
    mode: int = 0o644
    mtime: int = 0
    size: int = 0
    name: str = ""


# -- copy out ------------------------------------------------------------------------------------


async def open_source(root: str, path: str) -> tuple[CopyMeta, int]:
    """Resolve and open the source of a copy-out; return its header and an open descriptor.

    Raises:
        RPCError: ``NOT_FOUND``, ``PERMISSION_DENIED``, ``INVALID_ARGUMENT`` (not a regular file
            or directory; a relative path).
    """
    in_root = resolve_in_root(root, path)
    host = host_path(root, in_root)
    try:
        fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise os_error(exc, path) from None
    info = os.fstat(fd)
    name = os.path.basename(in_root.rstrip("/")) or "."
    mode, mtime = stat.S_IMODE(info.st_mode), int(info.st_mtime)
    if stat.S_ISREG(info.st_mode):
        os.set_blocking(fd, True)
        return CopyMeta(FILE, path, mode, mtime, info.st_size, name), fd
    if stat.S_ISDIR(info.st_mode):
        return CopyMeta(TAR, path, mode, mtime, 0, name), fd
    os.close(fd)
    raise RPCError(Code.INVALID_ARGUMENT, f"not a regular file or directory: {path}")


async def copy_out(
    root: str, path: str, chunk_size: int = DEFAULT_CHUNK
) -> tuple[CopyMeta, AsyncGenerator[bytes, None]]:
    """Open ``path`` under ``root`` for reading: its header, then its bytes in chunks.

    The iterator must be consumed or closed (``aclose``); it releases its file and worker thread
    however it ends.

    Raises:
        RPCError: ``NOT_FOUND``, ``PERMISSION_DENIED``, ``INVALID_ARGUMENT`` (see module docs).
    """
    meta, fd = await open_source(root, path)
    if meta.kind == FILE:
        return meta, _file_chunks(fd, meta.size, chunk_size)
    directory = f"/proc/self/fd/{fd}/"  # the trailing slash follows the magic link to the directory
    return meta, tar_chunks(fd, directory, chunk_size)


async def _file_chunks(fd: int, size: int, chunk_size: int) -> AsyncGenerator[bytes, None]:
    try:
        remaining = size
        while remaining > 0:
            data = await asyncio.to_thread(os.read, fd, min(chunk_size, remaining))
            if not data:
                raise RPCError(Code.ABORTED, "the file shrank while it was being copied")
            remaining -= len(data)
            yield data
    finally:
        os.close(fd)


# -- copy in -------------------------------------------------------------------------------------


def _target(root: str, meta: CopyMeta) -> tuple[str, bool]:
    """The in-root destination of a copy-in, and whether it exists already."""
    if meta.name and ("/" in meta.name or meta.name in (".", "..")):
        raise RPCError(Code.INVALID_ARGUMENT, f"bad source name {meta.name!r}")
    dest = resolve_in_root(root, meta.path)
    host = host_path(root, dest)
    if os.path.isdir(host):
        if meta.name and meta.name != ".":
            inner = resolve_in_root(root, dest.rstrip("/") + "/" + meta.name)
            return inner, os.path.lexists(host_path(root, inner))
        if meta.kind == FILE:
            raise RPCError(Code.FAILED_PRECONDITION, f"destination is a directory: {meta.path}")
        return dest, True
    if os.path.lexists(host):
        if meta.kind == TAR or meta.path.endswith("/"):
            raise RPCError(Code.FAILED_PRECONDITION, f"cannot copy a directory onto a file: {meta.path}")
        return dest, True
    if meta.path.endswith("/"):
        raise RPCError(Code.NOT_FOUND, f"destination directory does not exist: {meta.path}")
    parent = host_path(root, os.path.dirname(dest))
    if not os.path.isdir(parent):
        raise RPCError(Code.NOT_FOUND, f"parent directory does not exist: {os.path.dirname(meta.path)}")
    return dest, False


async def copy_in(root: str, meta: CopyMeta, chunks: AsyncIterator[bytes]) -> int:
    """Write a copy-in under ``root``; return the bytes of file data written.

    Raises:
        RPCError: ``NOT_FOUND`` (missing parent), ``FAILED_PRECONDITION`` (type clash),
            ``PERMISSION_DENIED`` (a path or tar member that escapes), ``INVALID_ARGUMENT`` (size
            mismatch, bad tar).
    """
    dest, _ = _target(root, meta)
    if meta.kind == FILE:
        return await _write_file(host_path(root, dest), meta, chunks)
    if meta.kind == TAR:
        return await extract(root, dest, chunks, meta.mode, meta.mtime, meta.path)
    raise RPCError(Code.INVALID_ARGUMENT, f"unknown copy kind {meta.kind!r}")


async def _write_file(target: str, meta: CopyMeta, chunks: AsyncIterator[bytes]) -> int:
    temp = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.kuasar-{secrets.token_hex(4)}")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise os_error(exc, meta.path) from None
    written = 0
    try:
        try:
            async for data in chunks:
                written += len(data)
                if written > meta.size:
                    raise RPCError(Code.INVALID_ARGUMENT, f"more data than the header's {meta.size} bytes")
                await asyncio.to_thread(write_all_blocking, fd, data)
            if written != meta.size:
                raise RPCError(Code.INVALID_ARGUMENT, f"got {written} of {meta.size} bytes")
            os.fchmod(fd, meta.mode & 0o7777)
            os.utime(fd, (meta.mtime, meta.mtime))
        finally:
            os.close(fd)
        os.replace(temp, target)
    except OSError as exc:
        raise os_error(exc, meta.path) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
    return written


__all__ = ["DEFAULT_CHUNK", "FILE", "TAR", "CopyMeta", "copy_in", "copy_out", "open_source"]
