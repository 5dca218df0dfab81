"""EventBus and the cgroup v2 OOM watcher (real files shaped like ``memory.events``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kuasar.agent.services.events import EventBus, OomWatcher, read_oom_kills
from kuasar.proto import containerd_task_events_pb2


def memory_events(path: Path, oom_kill: int) -> None:
    path.mkdir(exist_ok=True)
    (path / "memory.events").write_text(f"low 0\nhigh 0\nmax 12\noom {oom_kill}\noom_kill {oom_kill}\n")


def test_read_oom_kills(tmp_path: Path) -> None:
    assert read_oom_kills(str(tmp_path / "missing")) is None
    memory_events(tmp_path / "c", 4)
    assert read_oom_kills(str(tmp_path / "c")) == 4


@pytest.mark.asyncio
async def test_watcher_publishes_on_increase_only(tmp_path: Path) -> None:
    bus = EventBus()
    watcher = OomWatcher(bus)
    memory_events(tmp_path / "a", 2)  # kills before watching started are history, not events
    memory_events(tmp_path / "b", 0)
    watcher.watch("a", str(tmp_path / "a"))
    watcher.watch("b", str(tmp_path / "b"))
    assert watcher.poll() == []
    memory_events(tmp_path / "b", 1)
    assert watcher.poll() == ["b"]
    assert watcher.poll() == []
    envelope = await bus.next()
    assert envelope.topic == "/tasks/oom" and envelope.namespace == "k8s.io"
    assert envelope.event.type_url == "containerd.events.TaskOOM"
    assert containerd_task_events_pb2.TaskOOM.FromString(envelope.event.value).container_id == "b"
    watcher.unwatch("b")
    memory_events(tmp_path / "b", 5)
    assert watcher.poll() == [] and bus.pending() == 0


@pytest.mark.asyncio
async def test_watcher_task_starts_and_closes(tmp_path: Path) -> None:
    bus = EventBus()
    watcher = OomWatcher(bus, interval=0.01)
    memory_events(tmp_path / "c", 0)
    watcher.watch("c", str(tmp_path / "c"))
    watcher.start()
    memory_events(tmp_path / "c", 1)
    envelope = await asyncio.wait_for(bus.next(), 10)
    await watcher.close()
    assert containerd_task_events_pb2.TaskOOM.FromString(envelope.event.value).container_id == "c"


def test_bounds_are_validated() -> None:
    with pytest.raises(ValueError, match="capacity"):
        EventBus(capacity=0)
    with pytest.raises(ValueError, match="interval"):
        OomWatcher(EventBus(), interval=0)
