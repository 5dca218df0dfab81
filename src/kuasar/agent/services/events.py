"""Guest events for ``grpc.SandboxService/GetEvents``: a bounded bus and a cgroup v2 OOM watcher.

Layer contract: agent side; stdlib, asyncio and the generated containerd event stubs. Knows nothing
of ttrpc or of how containers are run: the container code (or the :class:`OomWatcher` here) calls
:meth:`EventBus.publish_oom`, and the SandboxService long-poll takes events with
:meth:`EventBus.next`. Each event is delivered to one taker, as Kuasar's vmm-task does with its
channel. The bus is bounded: when full, the oldest event is dropped (and counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf import any_pb2, timestamp_pb2
from google.protobuf.message import Message

from kuasar._log import get_logger
from kuasar.proto import containerd_events_ttrpc_pb2 as events_pb2
from kuasar.proto import containerd_task_events_pb2 as task_events_pb2

#: containerd's topic for a container hitting its memory limit (``runtime.TaskOOMEventTopic``).
TASK_OOM_TOPIC = "/tasks/oom"
#: The containerd namespace Kuasar's guest stamps on every event (CRI's namespace).
DEFAULT_NAMESPACE = "k8s.io"
DEFAULT_CAPACITY = 1024
#: The most bytes read from one ``memory.events`` file (it is a few short lines).
_MEMORY_EVENTS_MAX = 4096

log = get_logger("kuasar.agent.events")


def pack_event(event: Message) -> any_pb2.Any:
    """An ``Any`` whose type_url is the bare full message name, as containerd's typeurl expects.

    (Kuasar's guest does the same: ``type_url = descriptor.full_name``, no ``type.googleapis.com/``.)
    """
    return any_pb2.Any(type_url=event.DESCRIPTOR.full_name, value=event.SerializeToString())


class EventBus:
    """A bounded FIFO of containerd event envelopes, filled by publishers and drained by GetEvents.

    Args:
        namespace: stamped on each envelope.
        capacity: the most events kept; publishing into a full bus drops the oldest one.
    """

    def __init__(self, namespace: str = DEFAULT_NAMESPACE, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("EventBus capacity must be at least 1")
        self.namespace = namespace
        self.dropped = 0
        self._queue: asyncio.Queue[events_pb2.Envelope] = asyncio.Queue(capacity)

    def publish(self, topic: str, event: Message) -> events_pb2.Envelope:
        """Queue ``event`` under ``topic``, timestamped now; return the envelope. Never blocks."""
        stamp = timestamp_pb2.Timestamp()
        stamp.FromNanoseconds(time.time_ns())
        envelope = events_pb2.Envelope(
            timestamp=stamp, namespace=self.namespace, topic=topic, event=pack_event(event)
        )
        while True:
            try:
                self._queue.put_nowait(envelope)
                return envelope
            except asyncio.QueueFull:
                with contextlib.suppress(asyncio.QueueEmpty):
                    self._queue.get_nowait()
                    self.dropped += 1
                    log.warning("event bus full: dropped the oldest event")

    def publish_oom(self, container_id: str) -> events_pb2.Envelope:
        """Queue a ``/tasks/oom`` event (``containerd.events.TaskOOM{container_id}``)."""
        return self.publish(TASK_OOM_TOPIC, task_events_pb2.TaskOOM(container_id=container_id))

    async def next(self) -> events_pb2.Envelope:
        """Wait for the oldest queued event and take it. Cancelling leaves the queue untouched."""
        return await self._queue.get()

    def pending(self) -> int:
        """How many events are queued."""
        return self._queue.qsize()


def read_oom_kills(cgroup_dir: str) -> int | None:
    """The ``oom_kill`` counter of a cgroup v2 directory's ``memory.events``; None when unreadable."""
    try:
        with open(os.path.join(cgroup_dir, "memory.events"), "rb") as file:
            text = file.read(_MEMORY_EVENTS_MAX)
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(b" ")
        if key == b"oom_kill" and value.strip().isdigit():
            return int(value)
    return None


@dataclass
class _Watched:
    cgroup_dir: str
    kills: int | None


class OomWatcher:
    """Polls cgroup v2 ``memory.events`` of registered containers and publishes OOM events.

    Read-only and bounded: one small read per watched container per ``interval``. An increase of
    ``oom_kill`` publishes one ``/tasks/oom`` event for that container (several kills between two
    polls still make one event, as containerd's own cgroup v2 monitor reports per notification).

    Args:
        bus: where events go.
        interval: seconds between polls.
    """

    def __init__(self, bus: EventBus, interval: float = 1.0) -> None:
        if interval <= 0:
            raise ValueError("OomWatcher interval must be positive")
        self.bus = bus
        self.interval = interval
        self._watched: dict[str, _Watched] = {}
        self._task: asyncio.Task[None] | None = None

    def watch(self, container_id: str, cgroup_dir: str) -> None:
        """Start watching ``cgroup_dir`` (a cgroup v2 directory) for ``container_id``."""
        self._watched[container_id] = _Watched(cgroup_dir, read_oom_kills(cgroup_dir))

    def unwatch(self, container_id: str) -> None:
        """Stop watching a container (unknown IDs are ignored)."""
        self._watched.pop(container_id, None)

    def watched(self) -> Iterable[str]:
        """The container IDs being watched."""
        return tuple(self._watched)

    def poll(self) -> list[str]:
        """Check every watched cgroup once; publish and return the IDs whose counter went up."""
        fired: list[str] = []
        for container_id, entry in list(self._watched.items()):
            kills = read_oom_kills(entry.cgroup_dir)
            if kills is None:
                continue
            if entry.kills is not None and kills > entry.kills:
                self.bus.publish_oom(container_id)
                fired.append(container_id)
            entry.kills = kills
        return fired

    def start(self) -> None:
        """Poll in a background task until :meth:`close`."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.poll()

    async def close(self) -> None:
        """Stop polling and wait for the task to end."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
