"""The descriptors ``kuasarctl agent`` ships: Kata's grpc.AgentService, containerd's Task and
Streaming, with upstream names and field numbers (kata-containers 7c6ba40c54, containerd
301026e58c), and Kata's files in their own descriptor pool."""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FieldDescriptor

from kuasar.proto import (
    containerd_streaming_pb2,
    containerd_task_v2_pb2,
    kata_agent_pb2,
    kata_pool,
    sandbox_pb2,
)

KATA_METHODS = """
CreateContainer StartContainer RemoveContainer ExecProcess SignalProcess WaitProcess UpdateContainer
UpdateEphemeralMounts StatsContainer PauseContainer ResumeContainer RemoveStaleVirtiofsShareMounts
GetDiagnosticData WriteStdin ReadStdout ReadStderr CloseStdin TtyWinResize UpdateInterface
UpdateRoutes ListInterfaces ListRoutes AddARPNeighbors GetIPTables SetIPTables GetMetrics
MemAgentMemcgSet MemAgentCompactSet CreateSandbox DestroySandbox OnlineCPUMem ReseedRandomDev
GetGuestDetails MemHotplugByProbe SetGuestDateTime CopyFile GetOOMEvent AddSwap AddSwapPath
GetVolumeStats ResizeVolume SetPolicy
""".split()  # noqa: SIM905 - read as the .proto lists them

TASK_METHODS = """
State Create Start Delete Pids Pause Resume Checkpoint Kill Exec ResizePty CloseIO Update Wait Stats
Connect Shutdown
""".split()  # noqa: SIM905 - read as the .proto lists them

S, U32, I32, I64, U64, B, BY, M = (
    FieldDescriptor.TYPE_STRING,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_BOOL,
    FieldDescriptor.TYPE_BYTES,
    FieldDescriptor.TYPE_MESSAGE,
)

#: (message, field, number, type) read from the upstream .proto files.
FIELDS = [
    (kata_agent_pb2.CreateContainerRequest, "OCI", 6, M),
    (kata_agent_pb2.CreateContainerRequest, "stderr_port", 11, U32),
    (kata_agent_pb2.ExecProcessRequest, "process", 4, M),
    (kata_agent_pb2.ExecProcessRequest, "stdin_port", 5, U32),
    (kata_agent_pb2.SignalProcessRequest, "signal", 3, U32),
    (kata_agent_pb2.WaitProcessResponse, "status", 1, I32),
    (kata_agent_pb2.ReseedRandomDevRequest, "data", 2, BY),
    (kata_agent_pb2.GuestDetailsRequest, "mem_hotplug_probe", 2, B),
    (kata_agent_pb2.AgentDetails, "extra_features", 6, S),
    (kata_agent_pb2.SetGuestDateTimeRequest, "Usec", 2, I64),
    (kata_agent_pb2.FSGroup, "group_id", 2, U32),
    (kata_agent_pb2.Storage, "shared", 8, B),
    (kata_agent_pb2.CopyFileRequest, "data", 8, BY),
    (kata_agent_pb2.CopyFileRequest, "uid", 5, I32),
    (kata_agent_pb2.MemAgentCompactConfig, "compact_force_times", 8, U64),
    (kata_agent_pb2.CreateSandboxRequest, "kernel_modules", 7, M),
    (kata_agent_pb2.UpdateRoutesRequest, "routes", 1, M),
    (kata_agent_pb2.TtyWinResizeRequest, "column", 4, U32),
    (containerd_task_v2_pb2.CreateTaskRequest, "options", 10, M),
    (containerd_task_v2_pb2.StateResponse, "exec_id", 11, S),
    (containerd_task_v2_pb2.KillRequest, "all", 4, B),
    (containerd_task_v2_pb2.ConnectResponse, "version", 3, S),
    (containerd_task_v2_pb2.ExecProcessRequest, "spec", 7, M),
    (containerd_streaming_pb2.StreamInit, "id", 1, S),
]


def test_kata_agent_service_has_every_upstream_method() -> None:
    service = kata_agent_pb2.DESCRIPTOR.services_by_name["AgentService"]
    assert service.full_name == "grpc.AgentService"
    assert [m.name for m in service.methods] == KATA_METHODS


def test_containerd_services() -> None:
    task = containerd_task_v2_pb2.DESCRIPTOR.services_by_name["Task"]
    assert task.full_name == "containerd.task.v2.Task"
    assert [m.name for m in task.methods] == TASK_METHODS
    stream = containerd_streaming_pb2.DESCRIPTOR.services_by_name["Streaming"].methods_by_name["Stream"]
    assert stream.containing_service.full_name == "containerd.services.streaming.v1.Streaming"
    assert stream.client_streaming and stream.server_streaming
    assert stream.input_type.full_name == stream.output_type.full_name == "google.protobuf.Any"


@pytest.mark.parametrize(
    ("message", "name", "number", "kind"), FIELDS, ids=lambda v: getattr(v, "__name__", v)
)
def test_field_numbers(message: type, name: str, number: int, kind: int) -> None:
    field = message.DESCRIPTOR.fields_by_name[name]  # type: ignore[attr-defined]
    assert (field.number, field.type) == (number, kind)


def test_kata_lives_in_its_own_pool() -> None:
    # Kata and Kuasar disagree on grpc.UpdateRoutesRequest: both definitions are usable side by side.
    assert kata_agent_pb2.DESCRIPTOR.pool is kata_pool.POOL
    with pytest.raises(KeyError):
        descriptor_pool.Default().FindServiceByName("grpc.AgentService")
    kata = kata_agent_pb2.UpdateRoutesRequest.DESCRIPTOR.fields_by_name["routes"]
    kuasar = sandbox_pb2.UpdateRoutesRequest.DESCRIPTOR.fields_by_name["routes"]
    assert not kata.is_repeated and kuasar.is_repeated and kata.message_type.full_name == "grpc.Routes"
    assert kuasar.message_type.full_name == "grpc.Route"
    route = kata_agent_pb2.Routes.DESCRIPTOR.fields_by_name["Routes"].message_type
    assert route.full_name == "types.Route" and route.fields_by_name["mtu"].number == 8
