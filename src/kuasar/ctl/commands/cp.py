"""``kuasarctl cp``: copy files and directories between the host and a sandbox, as ``docker cp`` does.

Layer contract: ``kuasar.ctl`` only. One of SRC and DEST is ``SANDBOX:PATH`` (a local path with a
colon needs a ``./`` prefix); ``--container ID`` confines the remote path to that container's
rootfs, otherwise it is the guest's own filesystem. Streams through the agent's ``CopyIn`` and
``CopyOut``; the local end uses the neutral :mod:`kuasar.fscopy` with root ``/`` so both ends follow
the same rules (onto an existing directory the source lands inside it under its own name; a missing
destination takes the source's place; a destination ending in ``/`` must be an existing directory;
modes and mtimes are kept). A progress line goes to stderr only when stderr is a terminal and the
copy is large; nothing is printed on a pipe.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any, TextIO

from kuasar.ctl.commands import summary
from kuasar.ctl.commands.containers import SERVICE, add_connect_flags, agent_client
from kuasar.errors import KuasarError, RPCError, UsageError

#: Copies at least this large get a progress line on a terminal.
PROGRESS_THRESHOLD = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One side of a copy: ``sandbox`` is ``None`` for a local path."""

    sandbox: str | None
    path: str


def parse_endpoint(text: str) -> Endpoint:
    """``SANDBOX:PATH`` or a local path (docker's rule: a colon after a slash-free prefix)."""
    if not text:
        raise UsageError("empty path")
    head, sep, tail = text.partition(":")
    if sep and head and "/" not in head and not text.startswith("."):
        if not tail:
            raise UsageError(f"missing path after {head}:", hints=[f"e.g. {head}:/tmp"])
        return Endpoint(head, tail)
    return Endpoint(None, text)


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "cp",
        help=summary("cp"),
        description="Copy SANDBOX:PATH to a local path, or a local path to SANDBOX:PATH.",
        epilog="Examples: kuasarctl cp pod1:/etc/hosts ./hosts;  kuasarctl cp ./dir pod1:/tmp/  "
        "(--container ID: inside that container's rootfs)",
    )
    add_connect_flags(parser)
    parser.add_argument("--container", metavar="ID", default="", help="the container whose rootfs PATH is in")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress line even on a terminal")
    parser.add_argument("source", metavar="SRC", help="SANDBOX:PATH to copy out, or a local path to copy in")
    parser.add_argument("dest", metavar="DEST", help="a local path, or SANDBOX:PATH to copy into")
    parser.set_defaults(func=run)


class _Progress:
    """A one-line progress meter on a terminal; silent elsewhere."""

    def __init__(self, stream: TextIO, total: int, enabled: bool) -> None:
        self.stream = stream
        self.total = total
        self.done = 0
        self.enabled = enabled and stream.isatty() and (total == 0 or total >= PROGRESS_THRESHOLD)
        self._last = 0.0

    def add(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if self.enabled and now - self._last >= 0.1:
            self._last = now
            self._draw()

    def _draw(self) -> None:
        mib = self.done / (1 << 20)
        if self.total:
            share = self.done / self.total
            bar = "#" * int(share * 30)
            text = f"\r[{bar:<30}] {mib:8.1f} / {self.total / (1 << 20):.1f} MiB {share:4.0%}"
        else:
            text = f"\r{mib:8.1f} MiB"
        self.stream.write(text)
        self.stream.flush()

    def finish(self, summary: str) -> None:
        if self.enabled:
            self._draw()
            self.stream.write(f"\n{summary}\n")
            self.stream.flush()


class _RemoteFailed(Exception):
    """Carries the agent's error through the local writer, which must not relabel it as local."""

    def __init__(self, error: KuasarError) -> None:
        super().__init__(str(error))
        self.error = error


def _local_error(exc: RPCError) -> KuasarError:
    return KuasarError(f"local: {exc.message}")


def run(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    source, dest = parse_endpoint(args.source), parse_endpoint(args.dest)
    if (source.sandbox is None) == (dest.sandbox is None):
        raise UsageError(
            "exactly one of SRC and DEST must be SANDBOX:PATH",
            hints=["kuasarctl cp SANDBOX:/path local", "kuasarctl cp local SANDBOX:/path"],
        )
    if source.sandbox is not None:
        target = os.path.abspath(dest.path) + ("/" if dest.path.endswith("/") else "")
        return _copy_from(args, source, target)
    # docker cp: "DIR/." copies the directory's contents, not the directory itself
    contents_only = source.path.endswith(("/.", "/./")) or source.path == "."
    name = "" if contents_only else os.path.basename(os.path.abspath(source.path))
    return _copy_to(args, os.path.abspath(source.path), name, dest)


async def _copy_to(args: argparse.Namespace, local: str, name: str, remote: Endpoint) -> int:
    from kuasar import fscopy as copying
    from kuasar.proto import agent_pb2 as pb

    assert remote.sandbox is not None
    try:
        meta, chunks = await copying.copy_out("/", local)
    except RPCError as exc:
        raise _local_error(exc) from None
    progress = _Progress(sys.stderr, meta.size, not args.quiet)
    header = pb.CopyHeader(
        container_id=args.container,
        path=remote.path,
        kind=pb.CopyHeader.TAR if meta.kind == copying.TAR else pb.CopyHeader.FILE,
        mode=meta.mode,
        mtime=meta.mtime,
        size=meta.size,
        name=name,
    )
    try:
        async with (
            agent_client(args, remote.sandbox) as client,
            client.stream(SERVICE, "CopyIn", pb.CopyInResponse, client_streaming=True) as stream,
        ):
            await stream.send(pb.CopyChunk(header=header))
            async for data in chunks:
                await stream.send(pb.CopyChunk(data=data))
                progress.add(len(data))
            await stream.close_send()
            await stream.response()
    finally:
        await chunks.aclose()
    progress.finish(f"Successfully copied {_size(progress.done)} to {remote.sandbox}:{remote.path}")
    return 0


async def _copy_from(args: argparse.Namespace, remote: Endpoint, local: str) -> int:
    from kuasar import fscopy as copying
    from kuasar.errors import ProtocolError
    from kuasar.proto import agent_pb2 as pb

    assert remote.sandbox is not None
    request = pb.CopyOutRequest(container_id=args.container, path=remote.path)
    async with (
        agent_client(args, remote.sandbox) as client,
        client.stream(SERVICE, "CopyOut", pb.CopyChunk, server_streaming=True, request=request) as stream,
    ):
        first = await stream.recv()
        if first is None or first.WhichOneof("kind") != "header":
            raise ProtocolError("CopyOut did not start with a header")
        header = first.header
        progress = _Progress(sys.stderr, header.size, not args.quiet)

        async def data() -> AsyncIterator[bytes]:
            try:
                async for message in stream:
                    if message.WhichOneof("kind") != "data":
                        raise ProtocolError("CopyOut sent a second header")
                    progress.add(len(message.data))
                    yield message.data
            except KuasarError as exc:
                raise _RemoteFailed(exc) from exc

        meta = copying.CopyMeta(
            kind=copying.TAR if header.kind == pb.CopyHeader.TAR else copying.FILE,
            path=local,
            mode=header.mode,
            mtime=header.mtime,
            size=header.size,
            name=header.name if header.name not in ("", "/", ".", "..") else "",
        )
        try:
            await copying.copy_in("/", meta, data())
        except _RemoteFailed as failed:
            raise failed.error from None
        except RPCError as exc:
            raise _local_error(exc) from None
    progress.finish(f"Successfully copied {_size(progress.done)} to {local}")
    return 0


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.1f}{unit}" if unit != "B" else f"{count}B"
        value /= 1000
    return f"{count}B"
