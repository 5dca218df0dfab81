"""grpc.SandboxService stubs carry Kuasar's wire contract: package, names and field numbers.

Expected values are transcribed from kuasar-io/kuasar ``vmm/common/src/protos/sandbox.proto`` and
containerd's ``events.proto``/``task.proto`` (6a74f374f3); a renumbered or renamed field fails here.
"""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from kuasar.proto import containerd_events_ttrpc_pb2, containerd_task_events_pb2, health_pb2, sandbox_pb2

I64 = FieldDescriptor.TYPE_INT64
U64 = FieldDescriptor.TYPE_UINT64
U32 = FieldDescriptor.TYPE_UINT32
STR = FieldDescriptor.TYPE_STRING
BYT = FieldDescriptor.TYPE_BYTES
MSG = FieldDescriptor.TYPE_MESSAGE
ENUM = FieldDescriptor.TYPE_ENUM

EXPECTED: dict[str, dict[str, tuple[int, int]]] = {
    "grpc.CheckRequest": {"service": (1, STR)},
    "grpc.ExecVMProcessRequest": {"command": (1, STR), "stdin": (2, BYT)},
    "grpc.ExecVMProcessResponse": {"out": (1, STR)},
    "grpc.SyncClockPacket": {
        "ClientSendTime": (1, I64),
        "ClientArriveTime": (2, I64),
        "ServerSendTime": (3, I64),
        "ServerArriveTime": (4, I64),
        "Delta": (5, I64),
    },
    "grpc.IPAddress": {"family": (1, ENUM), "address": (2, STR), "mask": (3, STR)},
    "grpc.Interface": {
        "device": (1, STR),
        "name": (2, STR),
        "IPAddresses": (3, MSG),
        "mtu": (4, U64),
        "hwAddr": (5, STR),
        "type": (6, STR),
        "raw_flags": (7, U32),
    },
    "grpc.Route": {
        "dest": (1, STR),
        "gateway": (2, STR),
        "device": (3, STR),
        "source": (4, STR),
        "scope": (5, U32),
        "family": (6, ENUM),
        "flags": (7, U32),
    },
    "grpc.UpdateInterfacesRequest": {"interfaces": (1, MSG)},
    "grpc.UpdateRoutesRequest": {"routes": (1, MSG)},
    "grpc.SetupSandboxRequest": {"config": (1, MSG), "interfaces": (2, MSG), "routes": (3, MSG)},
    "containerd.services.events.ttrpc.v1.Envelope": {
        "timestamp": (1, MSG),
        "namespace": (2, STR),
        "topic": (3, STR),
        "event": (4, MSG),
    },
    "containerd.services.events.ttrpc.v1.ForwardRequest": {"envelope": (1, MSG)},
    "containerd.events.TaskOOM": {"container_id": (1, STR)},
}

MESSAGES: dict[str, Descriptor] = {
    d.full_name: d
    for d in (
        health_pb2.CheckRequest.DESCRIPTOR,
        *(getattr(sandbox_pb2, n).DESCRIPTOR for n in sandbox_pb2.DESCRIPTOR.message_types_by_name),
        containerd_events_ttrpc_pb2.Envelope.DESCRIPTOR,
        containerd_events_ttrpc_pb2.ForwardRequest.DESCRIPTOR,
        containerd_task_events_pb2.TaskOOM.DESCRIPTOR,
    )
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_message_fields_match_kuasar(name: str) -> None:
    descriptor = MESSAGES[name]
    got = {f.name: (f.number, f.type) for f in descriptor.fields}
    # Kata's grpc.CheckRequest (shared with grpc.Health) adds option_val = 2; Kuasar reads only field 1.
    if name == "grpc.CheckRequest":
        got.pop("option_val")
    assert got == EXPECTED[name]


def test_repeated_fields() -> None:
    assert MESSAGES["grpc.Interface"].fields_by_name["IPAddresses"].is_repeated
    for message, field in [
        ("grpc.UpdateInterfacesRequest", "interfaces"),
        ("grpc.UpdateRoutesRequest", "routes"),
        ("grpc.SetupSandboxRequest", "interfaces"),
        ("grpc.SetupSandboxRequest", "routes"),
    ]:
        assert MESSAGES[message].fields_by_name[field].is_repeated


def test_ip_family_values() -> None:
    assert sandbox_pb2.IPFamily.Value("v4") == 0
    assert sandbox_pb2.IPFamily.Value("v6") == 1


def test_service_methods_and_types() -> None:
    service = sandbox_pb2.DESCRIPTOR.services_by_name["SandboxService"]
    assert service.full_name == "grpc.SandboxService"
    methods = {m.name: (m.input_type.full_name, m.output_type.full_name) for m in service.methods}
    assert methods == {
        "UpdateInterfaces": ("grpc.UpdateInterfacesRequest", "google.protobuf.Empty"),
        "UpdateRoutes": ("grpc.UpdateRoutesRequest", "google.protobuf.Empty"),
        "Check": ("grpc.CheckRequest", "google.protobuf.Empty"),
        "ExecVMProcess": ("grpc.ExecVMProcessRequest", "grpc.ExecVMProcessResponse"),
        "SyncClock": ("grpc.SyncClockPacket", "grpc.SyncClockPacket"),
        "GetEvents": ("google.protobuf.Empty", "containerd.services.events.ttrpc.v1.Envelope"),
        "SetupSandbox": ("grpc.SetupSandboxRequest", "google.protobuf.Empty"),
    }


def test_sync_clock_packet_bytes() -> None:
    """A known encoding: field 1 varint 5, field 5 varint -1 (ten bytes, two's complement)."""
    packet = sandbox_pb2.SyncClockPacket(ClientSendTime=5, Delta=-1)
    assert packet.SerializeToString() == b"\x08\x05" + b"\x28" + b"\xff" * 9 + b"\x01"
