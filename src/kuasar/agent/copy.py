"""File copy in and out of the guest or a container's rootfs, confined to that rootfs.

Layer contract: guest side, below the ttrpc handlers. Knows files, tar and path resolution; never
ttrpc framing or protobuf. Failures are ``kuasar.errors.RPCError`` with the API's status.

Confinement (:func:`resolve_in_root`): a path is resolved one component at a time *inside* the
root, as the container sees it. Symlinks are followed there: an absolute target is taken from the
container's ``/`` (so ``/etc/x -> /etc/passwd`` is the container's passwd, never the guest's), and
a ``..`` that climbs above the root — in the request or in a symlink's target — is refused with
``PERMISSION_DENIED``. Files are then opened with ``O_NOFOLLOW``. For the guest's own filesystem
(root ``/``) ``..`` at the top simply stays there. A container that rewrites its own symlinks while
a copy runs can race the resolution (as with ``docker cp``); it can only reach its own rootfs's
view through ``/proc/PID/root`` while running, or the bundle rootfs when stopped.

Transfers: a file is one header then its bytes; a directory is a tar stream (PAX) of its contents,
member names relative to it, modes and mtimes kept, symlinks stored as links. Copying in follows
``docker cp``: onto an existing directory the source lands inside it under its own name; onto a
missing path it takes that path (whose parent must exist); a path ending in ``/`` must be an
existing directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import secrets
import stat
import tarfile
import threading
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import IO, Any

from kuasar.errors import RPCError
from kuasar.ttrpc.codes import Code

FILE = "file"
TAR = "tar"
DEFAULT_CHUNK = 1024 * 1024
_MAX_LINKS = 40
_EOF = object()


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


def _denied(path: str) -> RPCError:
    return RPCError(Code.PERMISSION_DENIED, f"path escapes the container rootfs: {path!r}")


def resolve_in_root(root: str, path: str, *, follow_last: bool = True) -> str:
    """Resolve ``path`` as seen from ``root``; return the in-root absolute path (``/a/b``).

    Raises:
        RPCError: ``INVALID_ARGUMENT`` for a relative path or a symlink loop, ``PERMISSION_DENIED``
            for a ``..`` escape when ``root`` is not ``/``.
    """
    if not path.startswith("/"):
        raise RPCError(Code.INVALID_ARGUMENT, f"path must be absolute: {path!r}")
    confined = os.path.abspath(root) != "/"
    pending = deque(part for part in path.split("/") if part not in ("", "."))
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.popleft()
        if part == "..":
            if not resolved:
                if confined:
                    raise _denied(path)
                continue
            resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            info = os.lstat(candidate)
        except FileNotFoundError:
            resolved.append(part)
            continue
        except NotADirectoryError:
            raise RPCError(Code.NOT_FOUND, f"not a directory on the way to {path!r}") from None
        if stat.S_ISLNK(info.st_mode) and (pending or follow_last):
            links += 1
            if links > _MAX_LINKS:
                raise RPCError(Code.INVALID_ARGUMENT, f"too many symlinks resolving {path!r}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            pending.extendleft(reversed([p for p in target.split("/") if p not in ("", ".")]))
            continue
        resolved.append(part)
    return "/" + "/".join(resolved)


def host_path(root: str, in_root: str) -> str:
    """The agent's path for an in-root path from :func:`resolve_in_root`."""
    return os.path.join(root, in_root.lstrip("/")) if in_root != "/" else root


def _os_error(exc: OSError, path: str) -> RPCError:
    if isinstance(exc, FileNotFoundError):
        return RPCError(Code.NOT_FOUND, f"no such file or directory: {path}")
    if isinstance(exc, PermissionError):
        return RPCError(Code.PERMISSION_DENIED, f"permission denied: {path}")
    if isinstance(exc, (IsADirectoryError, NotADirectoryError, FileExistsError)):
        return RPCError(Code.FAILED_PRECONDITION, f"{exc.strerror}: {path}")
    return RPCError(Code.INTERNAL, f"{exc.strerror or exc}: {path}")


# -- threads that stream ------------------------------------------------------------------------


class _Pipe:
    """A bounded byte queue between a worker thread and the event loop, closable from either end."""

    def __init__(self, depth: int = 4) -> None:
        self.items: queue.Queue[object] = queue.Queue(maxsize=depth)
        self.cancelled = threading.Event()
        self._buffer = bytearray()

    def put(self, item: object) -> None:
        while not self.cancelled.is_set():
            try:
                self.items.put(item, timeout=0.2)
                return
            except queue.Full:
                continue
        raise EOFError("copy cancelled")

    def get(self) -> object:
        """The next item; once the other side has stopped, what it left, then ``EOFError``."""
        while True:
            try:
                return self.items.get(timeout=0.2)
            except queue.Empty:
                if self.cancelled.is_set() and self.items.empty():
                    raise EOFError("copy cancelled") from None

    # file-like API for tarfile ("r|" reads, "w|" writes)
    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            item = self.get()
            if item is _EOF:
                break
            assert isinstance(item, bytes)
            self._buffer += item
        count = len(self._buffer) if size < 0 else min(size, len(self._buffer))
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    def write(self, data: bytes) -> int:
        self.put(bytes(data))
        return len(data)


def _run_worker(work: Callable[[], None], pipe: _Pipe) -> asyncio.Future[None]:
    """Run ``work`` in a thread; whatever way it ends, the pipe stops blocking the other side."""

    def run() -> None:
        try:
            work()
        finally:
            pipe.cancelled.set()

    return asyncio.get_running_loop().run_in_executor(None, run)


async def _stop_worker(worker: asyncio.Future[None], pipe: _Pipe) -> None:
    pipe.cancelled.set()
    with contextlib.suppress(EOFError, RPCError, OSError, tarfile.TarError):
        await worker


# -- copy out ------------------------------------------------------------------------------------


async def open_source(root: str, path: str) -> tuple[CopyMeta, int]:
    """Resolve and open the source of a copy-out; return its header and an open descriptor."""
    in_root = resolve_in_root(root, path)
    host = host_path(root, in_root)
    try:
        fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise _os_error(exc, path) from None
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
    return meta, _tar_chunks(fd, directory, chunk_size)


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


def _strip_owner_names(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uname = info.gname = ""
    return info


async def _tar_chunks(fd: int, directory: str, chunk_size: int) -> AsyncGenerator[bytes, None]:
    pipe = _Pipe()

    class _Chunker:
        def __init__(self) -> None:
            self.buffer = bytearray()

        def write(self, data: bytes) -> int:
            self.buffer += data
            while len(self.buffer) >= chunk_size:
                pipe.put(bytes(self.buffer[:chunk_size]))
                del self.buffer[:chunk_size]
            return len(data)

    def work() -> None:
        out = _Chunker()
        try:
            with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                tar.add(directory, arcname=".", recursive=True, filter=_strip_owner_names)
            if out.buffer:
                pipe.put(bytes(out.buffer))
            pipe.put(_EOF)
        except (OSError, tarfile.TarError) as exc:
            pipe.put(exc)

    worker = _run_worker(work, pipe)
    try:
        while True:
            item = await asyncio.to_thread(pipe.get)
            if item is _EOF:
                break
            if isinstance(item, OSError):
                raise _os_error(item, getattr(item, "filename", "") or "directory")
            if isinstance(item, BaseException):
                raise RPCError(Code.INTERNAL, f"tar failed: {item}")
            assert isinstance(item, bytes)
            yield item
        await worker
    finally:
        await _stop_worker(worker, pipe)
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
            ``PERMISSION_DENIED`` (escape), ``INVALID_ARGUMENT`` (size mismatch, bad tar).
    """
    dest, _ = _target(root, meta)
    if meta.kind == FILE:
        return await _write_file(host_path(root, dest), meta, chunks)
    if meta.kind == TAR:
        return await _extract(root, dest, meta, chunks)
    raise RPCError(Code.INVALID_ARGUMENT, f"unknown copy kind {meta.kind!r}")


async def _write_file(target: str, meta: CopyMeta, chunks: AsyncIterator[bytes]) -> int:
    temp = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.kuasar-{secrets.token_hex(4)}")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise _os_error(exc, meta.path) from None
    written = 0
    try:
        try:
            async for data in chunks:
                written += len(data)
                if written > meta.size:
                    raise RPCError(Code.INVALID_ARGUMENT, f"more data than the header's {meta.size} bytes")
                await asyncio.to_thread(_write_all, fd, data)
            if written != meta.size:
                raise RPCError(Code.INVALID_ARGUMENT, f"got {written} of {meta.size} bytes")
            os.fchmod(fd, meta.mode & 0o7777)
            os.utime(fd, (meta.mtime, meta.mtime))
        finally:
            os.close(fd)
        os.replace(temp, target)
    except OSError as exc:
        raise _os_error(exc, meta.path) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
    return written


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _member_path(root: str, base: str, name: str, *, follow_last: bool = False) -> str:
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if name.startswith("/") or ".." in parts:
        raise RPCError(Code.PERMISSION_DENIED, f"tar member escapes the destination: {name!r}")
    if not parts:
        return base
    return resolve_in_root(root, base.rstrip("/") + "/" + "/".join(parts), follow_last=follow_last)


def _extract_member(root: str, base: str, member: tarfile.TarInfo, tar: tarfile.TarFile) -> tuple[str, int]:
    mode = member.mode & 0o7777
    if member.isdir():
        # An existing symlink here is followed inside the root, so the chmod below never leaves it.
        host = host_path(root, _member_path(root, base, member.name, follow_last=True))
        try:
            is_dir = stat.S_ISDIR(os.lstat(host).st_mode)
        except FileNotFoundError:
            is_dir = False
        if not is_dir:
            if os.path.lexists(host):
                os.unlink(host)
            os.mkdir(host, 0o700)
        return host, 0
    host = host_path(root, _member_path(root, base, member.name))
    if os.path.isdir(host) and not os.path.islink(host):
        raise RPCError(Code.FAILED_PRECONDITION, f"cannot replace a directory with a file: {member.name}")
    if os.path.lexists(host):
        os.unlink(host)
    if member.issym():
        os.symlink(member.linkname, host)
        os.utime(host, (member.mtime, member.mtime), follow_symlinks=False)
        return "", 0
    if member.islnk():
        os.link(host_path(root, _member_path(root, base, member.linkname)), host, follow_symlinks=False)
        return "", 0
    if not member.isreg():
        raise RPCError(Code.INVALID_ARGUMENT, f"unsupported tar member type: {member.name}")
    source = tar.extractfile(member)
    assert source is not None
    fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        while data := source.read(DEFAULT_CHUNK):
            _write_all(fd, data)
        os.fchmod(fd, mode)
        os.utime(fd, (member.mtime, member.mtime))
    finally:
        os.close(fd)
    return "", member.size


def _extract_all(root: str, base: str, meta: CopyMeta, stream: IO[bytes]) -> int:
    host_base = host_path(root, base)
    if not os.path.isdir(host_base):
        os.mkdir(host_base, 0o700)
    directories: list[tuple[str, tarfile.TarInfo]] = []
    written = 0
    top_seen = False
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            host, size = _extract_member(root, base, member, tar)
            written += size
            if host:
                directories.append((host, member))
                top_seen = top_seen or host == host_base
    for host, member in reversed(directories):
        os.chmod(host, member.mode & 0o7777)
        os.utime(host, (member.mtime, member.mtime))
    if not top_seen:
        os.chmod(host_base, meta.mode & 0o7777)
        os.utime(host_base, (meta.mtime, meta.mtime))
    return written


async def _extract(root: str, base: str, meta: CopyMeta, chunks: AsyncIterator[bytes]) -> int:
    pipe = _Pipe()
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["written"] = _extract_all(root, base, meta, pipe)  # type: ignore[arg-type]
        except (RPCError, OSError, tarfile.TarError, EOFError) as exc:
            result["error"] = exc

    worker = _run_worker(work, pipe)
    try:
        async for data in chunks:
            try:
                await asyncio.to_thread(pipe.put, data)
            except EOFError:  # the extractor has finished or failed: the rest is not needed
                break
        else:
            with contextlib.suppress(EOFError):
                await asyncio.to_thread(pipe.put, _EOF)
        await worker
    finally:
        await _stop_worker(worker, pipe)
    error = result.get("error")
    if isinstance(error, RPCError):
        raise error
    if isinstance(error, OSError):
        raise _os_error(error, meta.path)
    if error is not None:
        raise RPCError(Code.INVALID_ARGUMENT, f"bad tar stream: {error}")
    return int(result["written"])
