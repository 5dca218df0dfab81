"""Directory trees as tar streams, both ways, with the rules that keep an extraction in its place.

Layer contract: neutral module shared by the guest agent (``CopyIn``/``CopyOut`` of directories)
and the host CLI (the local end of ``kuasarctl cp``); imports neither ``kuasar.agent`` nor
``kuasar.ctl`` nor ``kuasar.sandbox``: stdlib ``tarfile`` run in a worker thread, plus
:mod:`kuasar.rootpath` and ``kuasar.errors``/``kuasar.codes`` (no protobuf). Failures are
:class:`kuasar.errors.RPCError` with the Agent API's status.

Writing (:func:`tar_chunks`): PAX, member names relative to the directory, modes and mtimes kept,
owner names dropped, symlinks stored as links (never followed).

Reading (:func:`extract`): the archive may be hostile, so every member is checked before anything
is written for it, and the first bad member fails the whole copy with ``PERMISSION_DENIED``
(members before it may already have been written, as with ``tar``):

- a name that is absolute or has a ``..`` component;
- a name that goes through a symlink placed earlier by the same archive (``up -> ..``, then
  ``up/sibling``), or that would be a directory at such a symlink;
- a name that, resolved inside the root, lands outside the destination (through a symlink that
  was already there);
- a symlink whose target — relative to the link's directory, or absolute within the root — is not
  inside the destination;
- a hard link whose source is absolute, has ``..``, goes through such a symlink, or is outside.

Devices, FIFOs and other member types are ``INVALID_ARGUMENT``; so is a stream that is not a tar.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import stat
import tarfile
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import IO, Any

from kuasar._fdio import write_all_blocking
from kuasar.codes import Code
from kuasar.errors import RPCError
from kuasar.rootpath import host_path, is_under, os_error, resolve_in_root

#: Largest block read from or written to a member at once.
CHUNK = 1024 * 1024
_EOF = object()


# -- a bounded pipe between the event loop and a tarfile thread ----------------------------------


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


# -- writing -------------------------------------------------------------------------------------


def _strip_owner_names(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uname = info.gname = ""
    return info


async def tar_chunks(fd: int, directory: str, chunk_size: int) -> AsyncGenerator[bytes, None]:
    """The contents of ``directory`` as a tar stream in chunks of ``chunk_size`` bytes (the last may
    be shorter). ``fd`` is an open descriptor of the directory; it is closed however the iteration
    ends (consume it or ``aclose`` it).

    Raises:
        RPCError: the status of a file that cannot be read; ``INTERNAL`` for a tar failure.
    """
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
                raise os_error(item, getattr(item, "filename", "") or "directory")
            if isinstance(item, BaseException):
                raise RPCError(Code.INTERNAL, f"tar failed: {item}")
            assert isinstance(item, bytes)
            yield item
        await worker
    finally:
        await _stop_worker(worker, pipe)
        os.close(fd)


# -- reading: where a member may go ------------------------------------------------------------


def _refused(name: str, why: str) -> RPCError:
    return RPCError(Code.PERMISSION_DENIED, f"unsafe tar member {name!r}: {why}")


class MemberRules:
    """Where the members of one archive may be written: inside ``base``, never through a symlink
    the archive itself placed. Keeps the archive's symlinks as it goes (feed members in order).

    Args:
        root: the directory that is ``/`` for the paths (a container rootfs, or ``/``).
        base: the destination directory, an in-root path already resolved.
    """

    def __init__(self, root: str, base: str) -> None:
        self.root = root
        self.base = "/" + "/".join(part for part in base.split("/") if part)
        self._links: set[tuple[str, ...]] = set()

    @staticmethod
    def parts(name: str) -> tuple[str, ...]:
        """A member name's components (``.`` and empty ones dropped).

        Raises:
            RPCError: ``PERMISSION_DENIED`` for an absolute name or a ``..`` component.
        """
        if name.startswith("/"):
            raise _refused(name, "an absolute path")
        parts = tuple(part for part in name.split("/") if part not in ("", "."))
        if ".." in parts:
            raise _refused(name, "a '..' component")
        return parts

    def _through_links(self, name: str, parts: tuple[str, ...], upto: int) -> None:
        for end in range(1, upto + 1):
            if parts[:end] in self._links:
                link = "/".join(parts[:end])
                raise _refused(name, f"goes through the symlink {link!r} placed earlier in the archive")

    def _inside(self, name: str, parts: tuple[str, ...], *, follow_last: bool) -> str:
        if not parts:
            return host_path(self.root, self.base)
        in_root = resolve_in_root(
            self.root, self.base.rstrip("/") + "/" + "/".join(parts), follow_last=follow_last
        )
        if not is_under(in_root, self.base):
            raise _refused(name, "leads outside the destination through an existing symlink")
        return host_path(self.root, in_root)

    def directory(self, name: str) -> str:
        """The real path for a directory member (an existing symlink inside the base is followed)."""
        parts = self.parts(name)
        self._through_links(name, parts, len(parts))
        return self._inside(name, parts, follow_last=True)

    def entry(self, name: str) -> str:
        """The real path for a file, symlink or hard-link member (the last component is replaced)."""
        parts = self.parts(name)
        self._through_links(name, parts, len(parts) - 1)
        return self._inside(name, parts, follow_last=False)

    def symlink(self, name: str, target: str) -> None:
        """Check a symlink member's target and remember the link.

        Raises:
            RPCError: ``PERMISSION_DENIED`` when the target is not inside the destination.
        """
        parts = self.parts(name)
        if not target:
            raise _refused(name, "a symlink with an empty target")
        start = [] if target.startswith("/") else [p for p in self.base.split("/") if p] + list(parts[:-1])
        where = start
        for part in target.split("/"):
            if part == "..":
                if not where:
                    raise _refused(name, f"a symlink to {target!r}, above the root")
                where = where[:-1]
            elif part not in ("", "."):
                where = [*where, part]
        if not is_under("/" + "/".join(where), self.base):
            raise _refused(name, f"a symlink to {target!r}, outside the destination")
        self._links.add(parts)

    def hardlink(self, name: str, source: str) -> str:
        """The real path of a hard-link member's source (an earlier member of the same archive)."""
        parts = self.parts(source)
        self._through_links(source, parts, len(parts) - 1)
        if parts in self._links:  # a link to one of our symlinks is that symlink again
            self._links.add(self.parts(name))
        return self._inside(source, parts, follow_last=False)


# -- reading: writing the members ----------------------------------------------------------------


def _extract_member(rules: MemberRules, member: tarfile.TarInfo, tar: tarfile.TarFile) -> tuple[str, int]:
    """Write one member; return ``(directory path or "", file bytes written)``."""
    if member.isdir():
        host = rules.directory(member.name)
        try:
            is_dir = stat.S_ISDIR(os.lstat(host).st_mode)
        except FileNotFoundError:
            is_dir = False
        if not is_dir:
            if os.path.lexists(host):
                os.unlink(host)
            os.mkdir(host, 0o700)
        return host, 0
    if not (member.issym() or member.islnk() or member.isreg()):
        raise RPCError(Code.INVALID_ARGUMENT, f"unsupported tar member type: {member.name!r}")
    host = rules.entry(member.name)
    if member.issym():
        rules.symlink(member.name, member.linkname)
    source = rules.hardlink(member.name, member.linkname) if member.islnk() else ""
    if os.path.isdir(host) and not os.path.islink(host):
        raise RPCError(Code.FAILED_PRECONDITION, f"cannot replace a directory with a file: {member.name}")
    if os.path.lexists(host):
        os.unlink(host)
    if member.issym():
        os.symlink(member.linkname, host)
        os.utime(host, (member.mtime, member.mtime), follow_symlinks=False)
        return "", 0
    if member.islnk():
        os.link(source, host, follow_symlinks=False)
        return "", 0
    data = tar.extractfile(member)
    assert data is not None
    fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        while block := data.read(CHUNK):
            write_all_blocking(fd, block)
        os.fchmod(fd, member.mode & 0o7777)
        os.utime(fd, (member.mtime, member.mtime))
    finally:
        os.close(fd)
    return "", member.size


def _extract_all(root: str, base: str, mode: int, mtime: int, stream: IO[bytes]) -> int:
    host_base = host_path(root, base)
    if not os.path.isdir(host_base):
        os.mkdir(host_base, 0o700)
    rules = MemberRules(root, base)
    directories: list[tuple[str, tarfile.TarInfo]] = []
    written = 0
    top_seen = False
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            host, size = _extract_member(rules, member, tar)
            written += size
            if host:
                directories.append((host, member))
                top_seen = top_seen or host == host_base
    for host, member in reversed(directories):  # after their contents, so the mtimes stay
        os.chmod(host, member.mode & 0o7777)
        os.utime(host, (member.mtime, member.mtime))
    if not top_seen:
        os.chmod(host_base, mode & 0o7777)
        os.utime(host_base, (mtime, mtime))
    return written


async def extract(  # noqa: PLR0917 - where, and the destination's own mode and mtime
    root: str, base: str, chunks: AsyncIterator[bytes], mode: int, mtime: int, label: str
) -> int:
    """Extract a tar stream into the directory ``base`` (an in-root path, created if missing).

    Args:
        root: the directory that is ``/`` for ``base`` and the members (see :mod:`kuasar.rootpath`).
        base: the destination directory as the root sees it, already resolved.
        chunks: the tar stream.
        mode: permission bits for ``base`` when the archive has no ``.`` entry.
        mtime: its modification time, likewise.
        label: the destination as the caller names it, for error messages.

    Returns:
        The bytes of regular-file data written.

    Raises:
        RPCError: ``PERMISSION_DENIED`` for a member that would land outside ``base`` (see the
            module docs), ``INVALID_ARGUMENT`` for a bad tar stream or member type, and the status
            of a failed file operation.
    """
    pipe = _Pipe()
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["written"] = _extract_all(root, base, mode, mtime, pipe)  # type: ignore[arg-type]
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
        raise os_error(error, label)
    if error is not None:
        raise RPCError(Code.INVALID_ARGUMENT, f"bad tar stream: {error}")
    return int(result["written"])


__all__ = ["CHUNK", "MemberRules", "extract", "tar_chunks"]
