"""``kuasarctl agent``: method lookup (every name form, the guest kind's choice, suggestions), the
builtins and their plan, durations, ``--list`` and the ``--json`` record, every ``--examples``
command."""

from __future__ import annotations

import json
import re
import shlex

import pytest
from google.protobuf import descriptor_pb2, wrappers_pb2

from kuasar.agentctl.catalog import AmbiguousMethod, Catalog, UnknownMethod
from kuasar.agentctl.plan import FOREVER, Call, Echo, Help, Planner, Quit, Sleep, parse_duration
from kuasar.agentctl.report import CallResult, help_text, list_json, list_text, render_text
from kuasar.ctl.commands.agent_text import EPILOG, EXAMPLES
from kuasar.errors import UsageError

CATALOG = Catalog.builtin()
SERVICES = [
    "grpc.Health",
    "kuasar.agent.v1.Agent",
    "grpc.SandboxService",
    "grpc.AgentService",
    "containerd.task.v2.Task",
    "containerd.services.streaming.v1.Streaming",
]


def paths(name: str) -> list[str]:
    return [m.path for m in CATALOG.candidates(name)]


def test_every_service_is_in_the_catalogue() -> None:
    assert [s.name for s in CATALOG.services] == SERVICES


@pytest.mark.parametrize(
    "name",
    [
        "grpc.AgentService/GetGuestDetails",
        "/grpc.AgentService/GetGuestDetails",
        "grpc.AgentService.GetGuestDetails",
        "AgentService/GetGuestDetails",
        "GetGuestDetails",
    ],
)
def test_name_forms(name: str) -> None:
    assert paths(name) == ["grpc.AgentService/GetGuestDetails"]


def test_kata_agent_ctl_spellings() -> None:
    assert paths("GetIptables") == ["grpc.AgentService/GetIPTables"]
    assert paths("SetIptables") == ["grpc.AgentService/SetIPTables"]


def test_unknown_method_names_the_closest() -> None:
    with pytest.raises(UnknownMethod) as caught:
        CATALOG.candidates("GetGuestDetail")
    assert "GetGuestDetails" in str(caught.value) and caught.value.exit_code == 2
    with pytest.raises(UnknownMethod, match="ExecVMProcess"):
        CATALOG.candidates("execvmprocess")
    with pytest.raises(UnknownMethod):
        CATALOG.candidates("grpc.Nope/Check")


def test_the_guest_kind_picks_among_bare_names() -> None:
    check = CATALOG.candidates("Check")
    assert [m.path for m in check] == ["grpc.Health/Check", "grpc.SandboxService/Check"]
    assert CATALOG.choose("Check", check, "kuasar-agent").path == "grpc.Health/Check"
    assert CATALOG.choose("Check", check, "kata-agent").path == "grpc.Health/Check"
    assert CATALOG.choose("Check", check, "vmm-task").path == "grpc.SandboxService/Check"
    assert CATALOG.choose("Check", check, None).path == "grpc.Health/Check"
    create = CATALOG.candidates("CreateContainer")
    assert CATALOG.choose("CreateContainer", create, "kata-agent").path == "grpc.AgentService/CreateContainer"
    assert (
        CATALOG.choose("CreateContainer", create, "kuasar-agent").path
        == "kuasar.agent.v1.Agent/CreateContainer"
    )
    with pytest.raises(
        AmbiguousMethod, match=re.escape("kuasar.agent.v1.Agent/CreateContainer, grpc.AgentService")
    ):
        CATALOG.choose("CreateContainer", create, "ttrpc")
    routes = CATALOG.candidates("UpdateRoutes")
    assert CATALOG.choose("UpdateRoutes", routes, "vmm-task").path == "grpc.SandboxService/UpdateRoutes"
    assert CATALOG.needs_kind("Check", check) and not CATALOG.needs_kind(
        "X", CATALOG.candidates("GetGuestDetails")
    )


def test_descriptor_sets_add_services() -> None:
    proto = descriptor_pb2.FileDescriptorProto(
        name="peer.proto", package="kuasar.interop.v1", dependency=["google/protobuf/wrappers.proto"]
    )
    service = proto.service.add(name="Peer")
    service.method.add(
        name="Echo", input_type=".google.protobuf.StringValue", output_type=".google.protobuf.StringValue"
    )
    files = descriptor_pb2.FileDescriptorSet(file=[proto])
    catalog = CATALOG.with_descriptor_set(files.SerializeToString(), "peer.pb")
    (echo,) = catalog.candidates("Echo")
    assert echo.path == "kuasar.interop.v1.Peer/Echo"
    assert (
        echo.request_type()(value="x").SerializeToString()
        == wrappers_pb2.StringValue(value="x").SerializeToString()
    )
    with pytest.raises(UsageError, match="not a protobuf FileDescriptorSet"):
        CATALOG.with_descriptor_set(b"\xff\xff", "junk.pb")


# -- the plan ----------------------------------------------------------------------------------------


def plan(*commands: str) -> list[object]:
    return list(Planner(CATALOG).parse_all(commands))


def test_builtins() -> None:
    steps = plan("echo hello  world", "sleep 1.5s", "quit", "help", "list", "exit")
    assert steps == [Echo("hello world"), Sleep(1.5), Quit(), Help(), Help(), Quit()]


def test_repeat_prefixes_the_next_command_or_its_own_rest() -> None:
    steps = plan("repeat 3", "Check", "repeat -1 sleep 1", "Version")
    assert isinstance(steps[0], Call) and steps[0].count == 3
    assert steps[1] == Sleep(1.0, count=FOREVER)
    assert isinstance(steps[2], Call) and steps[2].count == 1
    for bad in (
        ["repeat"],
        ["repeat 0", "Check"],
        ["repeat x", "Check"],
        ["repeat 2"],
        ["sleep"],
        ["quit now"],
    ):
        with pytest.raises(UsageError):
            plan(*bad)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5", 5.0), ("1.5s", 1.5), ("250ms", 0.25), ("1m30s", 90.0), ("2h", 7200.0), ("10us", 1e-5), ("0", 0.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "5x", "-1s", "1.2.3s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(UsageError):
        parse_duration(text)


def test_a_call_is_composed_for_each_candidate() -> None:
    (step,) = plan("Check service=x")
    assert isinstance(step, Call)
    assert [r.method.path for r in step.requests] == ["grpc.Health/Check", "grpc.SandboxService/Check"]
    # a field only one candidate has keeps that candidate
    (step,) = plan("UpdateRoutes routes.Routes.0.dest=10.0.0.0/8")
    assert isinstance(step, Call) and [r.method.path for r in step.requests] == [
        "grpc.AgentService/UpdateRoutes"
    ]


def _example_commands(text: str) -> list[list[str]]:
    """The ``-c`` arguments of every ``kuasarctl agent`` line in ``text``."""
    found = []
    for line in text.splitlines():
        line = line.split("#", 1)[0] if " # " in line else line
        match = re.search(r"kuasarctl agent (.*)$", line)
        if not match:
            continue
        words = shlex.split(match.group(1))
        found.append([words[i + 1] for i, word in enumerate(words) if word in ("-c", "--cmd")])
    return found


def test_every_example_parses() -> None:
    examples = _example_commands(EXAMPLES) + _example_commands(EPILOG)
    assert len(examples) > 20
    own = descriptor_pb2.FileDescriptorProto(name="my.proto", package="my.v1")
    own.service.add(name="Svc").method.add(
        name="Get", input_type=".google.protobuf.StringValue", output_type=".google.protobuf.StringValue"
    )
    own.message_type.add(name="Unused")
    own.dependency.append("google/protobuf/wrappers.proto")
    catalog = CATALOG.with_descriptor_set(
        descriptor_pb2.FileDescriptorSet(file=[own]).SerializeToString(), "my.pb"
    )
    for commands in examples:
        planner = Planner(catalog, read_file=lambda path: b'{"mem_block_size": true}')
        if commands == ["my.v1.Svc/Get id=1"]:
            commands = ["my.v1.Svc/Get value=1"]
        planner.parse_all(commands)


# -- reports -----------------------------------------------------------------------------------------


def test_list_shows_every_service_method_and_field() -> None:
    text = list_text(CATALOG, None)
    for service in CATALOG.services:
        assert service.name in text
        for method in service.methods:
            assert f"  {method.name}(" in text
    assert "mem_block_size: bool = 1  [auto: default]" in text
    assert "container_id: string = 1  [auto: cid]" in text
    assert "Exec(stream kuasar.agent.v1.ExecInput) -> stream kuasar.agent.v1.ExecOutput" in text
    detail = list_text(CATALOG, "ExecProcess")
    assert "Args: repeated string = 4" in detail and "UID: uint32 = 1" in detail  # nested, deeper
    assert "grpc.AgentService" in list_text(CATALOG, "AgentService")
    with pytest.raises(UsageError):
        list_text(CATALOG, "NoSuchThing")
    data = json.loads(list_json(CATALOG, list(CATALOG.services)))
    assert [s["service"] for s in data] == SERVICES
    kata = next(s for s in data if s["service"] == "grpc.AgentService")
    signal = next(m for m in kata["methods"] if m["name"] == "SignalProcess")
    assert signal["kind"] == "unary" and signal["request"] == "grpc.SignalProcessRequest"
    assert {
        "name": "signal",
        "json_name": "signal",
        "number": 3,
        "type": "uint32",
        "auto": "default",
    } in signal["fields"]
    assert "GetGuestDetails" in help_text(CATALOG)


def test_the_json_record() -> None:
    (check,) = CATALOG.candidates("grpc.Health/Check")
    ok = CallResult(check, elapsed=0.00123, requests=[{"service": ""}], responses=[{"status": "SERVING"}])
    data = json.loads(ok.json_line())
    assert data == {
        "method": "grpc.Health/Check",
        "code": 0,
        "status": "OK",
        "message": "",
        "elapsed_ms": 1.23,
        "request": {"service": ""},
        "response": {"status": "SERVING"},
        "auto": {},
    }
    failed = CallResult(check, code=3, message="grpc.Health service does not exist", requests=[{}])
    data = json.loads(failed.json_line())
    assert (data["status"], data["response"]) == ("INVALID_ARGUMENT", None)
    text = render_text(failed, "vmm-task")
    assert "INVALID_ARGUMENT (3): grpc.Health service does not exist" in text
    assert "a vmm-task guest does not serve grpc.Health" in text
