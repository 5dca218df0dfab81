"""ttrpc handlers of ``kuasar.agent.v1.Agent`` for containers, logs and file copy.

Layer contract: guest side; the only place that turns protobuf messages into calls on
:class:`~kuasar.agent.containers.ContainerManager`, :mod:`kuasar.agent.logs` and
:mod:`kuasar.fscopy` and back. Imports ``kuasar.ttrpc`` and the generated ``agent_pb2``; never
``kuasar.ctl`` or ``kuasar.sandbox``.

Statuses: an unknown container is ``NOT_FOUND``; a duplicate create ``ALREADY_EXISTS``; a bad ID or
bundle ``INVALID_ARGUMENT``; stopping a container that has already stopped, starting one that is not
``created``, or removing a live one without ``force`` is ``FAILED_PRECONDITION``; a copy path that
escapes the rootfs, or a tar member that would land outside the destination, is
``PERMISSION_DENIED``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from google.protobuf import empty_pb2

from kuasar import fscopy as copying
from kuasar import ttrpc
from kuasar.agent.containers import ContainerInfo, ContainerManager
from kuasar.agent.logs import LogQuery
from kuasar.config import DEFAULT_LIMITS, Limits
from kuasar.errors import RPCError
from kuasar.proto import agent_pb2 as pb
from kuasar.ttrpc.codes import Code

SERVICE = "kuasar.agent.v1.Agent"
#: Bytes of protobuf and ttrpc framing kept free in each copy chunk.
_CHUNK_SLACK = 1024


def container_info(info: ContainerInfo) -> pb.ContainerInfo:
    """The API form of a container snapshot."""
    message = pb.ContainerInfo(
        id=info.id,
        bundle=info.bundle,
        status=info.status,
        pid=info.pid,
        created_at=info.created_at,
        started_at=info.started_at,
        finished_at=info.finished_at,
        labels=dict(info.labels),
    )
    if info.exit is not None:
        message.exit.CopyFrom(
            pb.ExitStatus(
                exit_code=info.exit.exit_code, signal=info.exit.signal, core_dumped=info.exit.core_dumped
            )
        )
    return message


def container_handlers(
    manager: ContainerManager, *, limits: Limits = DEFAULT_LIMITS
) -> dict[tuple[str, str], ttrpc.Handler]:
    """Handlers for CreateContainer, StartContainer, StopContainer, RemoveContainer,
    ListContainers, Logs, CopyIn and CopyOut, keyed ``(service, method)``.

    Args:
        manager: the agent's containers (its log store serves Logs).
        limits: copy chunks stay under ``limits.max_message`` (at most 1 MiB of data each).
    """
    chunk_size = max(4096, min(copying.DEFAULT_CHUNK, limits.max_message - _CHUNK_SLACK))

    def root_for(container_id: str) -> str:
        return manager.rootfs(container_id) if container_id else "/"

    async def create(request: pb.CreateContainerRequest, ctx: Any) -> pb.ContainerInfo:
        return container_info(await manager.create(request.id, request.bundle, dict(request.labels)))

    async def start(request: pb.ContainerRequest, ctx: Any) -> pb.ContainerInfo:
        return container_info(await manager.start(request.id))

    async def stop(request: pb.StopContainerRequest, ctx: Any) -> pb.ContainerInfo:
        grace = float(request.timeout_seconds) if request.timeout_seconds else None
        return container_info(await manager.stop(request.id, request.signal, grace))

    async def remove(request: pb.RemoveContainerRequest, ctx: Any) -> empty_pb2.Empty:
        await manager.remove(request.id, request.force)
        return empty_pb2.Empty()

    async def list_containers(request: pb.ListContainersRequest, ctx: Any) -> pb.ListContainersResponse:
        infos = await manager.list_containers(include_stopped=request.all)
        return pb.ListContainersResponse(containers=[container_info(info) for info in infos])

    async def logs(request: pb.LogsRequest, stream: Any, ctx: Any) -> None:
        log = manager.logs.get(request.container_id)
        wanted = {name for name, on in (("stdout", request.stdout), ("stderr", request.stderr)) if on}
        query = LogQuery(
            streams=frozenset(wanted),
            since=request.since,
            until=request.until,
            tail=request.tail if request.HasField("tail") else None,
            follow=request.follow,
        )
        async with contextlib.aclosing(log.read(query)) as lines:
            async for line in lines:
                await stream.send(pb.LogEntry(stream=line.stream, data=line.data, timestamp=line.timestamp))

    async def copy_out(request: pb.CopyOutRequest, stream: Any, ctx: Any) -> None:
        meta, chunks = await copying.copy_out(root_for(request.container_id), request.path, chunk_size)
        async with contextlib.aclosing(chunks):
            header = pb.CopyHeader(
                container_id=request.container_id,
                path=request.path,
                kind=pb.CopyHeader.TAR if meta.kind == copying.TAR else pb.CopyHeader.FILE,
                mode=meta.mode,
                mtime=meta.mtime,
                size=meta.size,
                name=meta.name,
            )
            await stream.send(pb.CopyChunk(header=header))
            async for data in chunks:
                await stream.send(pb.CopyChunk(data=data))

    async def copy_in(stream: Any, ctx: Any) -> pb.CopyInResponse:
        messages = aiter(stream)
        first = await anext(messages, None)
        if first is None or first.WhichOneof("kind") != "header":
            raise RPCError(Code.INVALID_ARGUMENT, "CopyIn must start with a header")
        header = first.header
        meta = copying.CopyMeta(
            kind=copying.TAR if header.kind == pb.CopyHeader.TAR else copying.FILE,
            path=header.path,
            mode=header.mode,
            mtime=header.mtime,
            size=header.size,
            name=header.name,
        )

        async def data() -> AsyncIterator[bytes]:
            async for message in messages:
                if message.WhichOneof("kind") != "data":
                    raise RPCError(Code.INVALID_ARGUMENT, "CopyIn takes one header, then data")
                yield message.data

        written = await copying.copy_in(root_for(header.container_id), meta, data())
        return pb.CopyInResponse(bytes_written=written)

    unary = ttrpc.Cardinality.UNARY
    return {
        (SERVICE, "CreateContainer"): ttrpc.Handler(
            create, unary, pb.CreateContainerRequest, pb.ContainerInfo
        ),
        (SERVICE, "StartContainer"): ttrpc.Handler(start, unary, pb.ContainerRequest, pb.ContainerInfo),
        (SERVICE, "StopContainer"): ttrpc.Handler(stop, unary, pb.StopContainerRequest, pb.ContainerInfo),
        (SERVICE, "RemoveContainer"): ttrpc.Handler(
            remove, unary, pb.RemoveContainerRequest, empty_pb2.Empty
        ),
        (SERVICE, "ListContainers"): ttrpc.Handler(
            list_containers, unary, pb.ListContainersRequest, pb.ListContainersResponse
        ),
        (SERVICE, "Logs"): ttrpc.Handler(
            logs, ttrpc.Cardinality.SERVER_STREAMING, pb.LogsRequest, pb.LogEntry
        ),
        (SERVICE, "CopyOut"): ttrpc.Handler(
            copy_out, ttrpc.Cardinality.SERVER_STREAMING, pb.CopyOutRequest, pb.CopyChunk
        ),
        (SERVICE, "CopyIn"): ttrpc.Handler(
            copy_in, ttrpc.Cardinality.CLIENT_STREAMING, pb.CopyChunk, pb.CopyInResponse
        ),
    }
