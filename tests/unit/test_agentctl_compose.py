"""``kuasarctl agent`` arguments: splitting a command, composing the request (every argument form and
their order), typing by the descriptor, the errors (one line, exit 2), and auto values with and
without ``-n``."""

from __future__ import annotations

import contextlib
import json
import signal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kuasar.agentctl import lexer
from kuasar.agentctl.auto import AutoValues
from kuasar.agentctl.catalog import Catalog, Method
from kuasar.agentctl.compose import ArgumentError, Request, compose
from kuasar.agentctl.fields import field_completions
from kuasar.agentctl.report import message_json
from kuasar.errors import UsageError
from kuasar.proto import agent_pb2, containerd_task_v2_pb2, kata_agent_pb2, sandbox_pb2

CATALOG = Catalog.builtin()


def method(path: str) -> Method:
    (found,) = CATALOG.candidates(path)
    return found


def build(path: str, text: str, files: dict[str, bytes] | None = None) -> Request:
    def read(name: str) -> bytes:
        if files is None or name not in files:
            raise FileNotFoundError(2, "No such file or directory")
        return files[name]

    return compose(method(path), lexer.split(text), read_file=read)


def one(path: str, text: str, files: dict[str, bytes] | None = None) -> dict[str, object]:
    request = build(path, text, files)
    assert len(request.messages) == 1
    return message_json(request.messages[0])


# -- splitting -------------------------------------------------------------------------------------


def test_shell_quoting_keeps_values_whole() -> None:
    tokens = lexer.split("""ExecVMProcess command="uname -a" x='a b' y=c\\ d z="q\\"q" """)
    assert tokens == [
        lexer.Word("ExecVMProcess"),
        lexer.Assign("command", "uname -a"),
        lexer.Assign("x", "a b"),
        lexer.Assign("y", "c d"),
        lexer.Assign("z", 'q"q'),
    ]


def test_json_documents_are_read_raw_to_their_end() -> None:
    # kata-agent-ctl splits on whitespace: its json://{"a": "b c"} cannot carry the space
    tokens = lexer.split('M json://{"mem_block_size": true, "s": "b c"} k=v')
    assert tokens[1] == lexer.JsonDoc(
        {"mem_block_size": True, "s": "b c"}, '{"mem_block_size": true, "s": "b c"}'.join(["json://", ""])
    )
    assert tokens[2] == lexer.Assign("k", "v")


def test_json_values_after_a_name_are_read_raw() -> None:
    tokens = lexer.split('M labels={"a": "b c"} argv=["x y", "z"] list=[a,b]')
    assert tokens[1] == lexer.Assign("labels", {"a": "b c"}, is_json=True)
    assert tokens[2] == lexer.Assign("argv", ["x y", "z"], is_json=True)
    assert tokens[3] == lexer.Assign("list", "[a,b]")  # not JSON: typed later


@pytest.mark.parametrize(
    "text",
    ['M json://{"a": ', "M json://", 'M x="open', "M x='open", 'M json://{"a": 1}x'],
)
def test_split_errors_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        lexer.split(text)


# -- composing -------------------------------------------------------------------------------------


def test_name_value_pairs_are_typed_by_the_descriptor() -> None:
    data = one("grpc.SandboxService/SyncClock", "Delta=-5 ClientSendTime=0x10")
    assert data["Delta"] == "-5" and data["ClientSendTime"] == "16"
    data = one("grpc.AgentService/GetGuestDetails", "mem_block_size=true mem_hotplug_probe=no")
    assert data == {"mem_block_size": True, "mem_hotplug_probe": False}
    data = one("kuasar.agent.v1.Agent/StopContainer", "id=web signal=TERM timeout_seconds=3")
    assert data == {"id": "web", "signal": int(signal.SIGTERM), "timeout_seconds": 3}


def test_kata_agent_ctl_signal_names() -> None:
    for text in ("usr1", "SIGUSR1", "USR1", "10"):
        assert one("grpc.AgentService/SignalProcess", f"signal={text}")["signal"] == int(signal.SIGUSR1)


def test_nested_fields_lists_and_maps() -> None:
    data = one(
        "grpc.AgentService/ExecProcess",
        'process.Args=[sh,-c,"echo hi"] process.Env=A=1 process.Cwd=/ process.User.UID=7 string_user.uid=0',
    )
    assert data["process"]["Args"] == ["sh", "-c", "echo hi"]  # type: ignore[index]
    assert data["process"]["Env"] == ["A=1"]  # type: ignore[index]
    assert data["process"]["User"]["UID"] == 7  # type: ignore[index]
    assert data["string_user"]["uid"] == "0"  # type: ignore[index]
    data = one("kuasar.agent.v1.Agent/CreateContainer", "labels.app=web labels.tier=db bundle=/b")
    assert data["labels"] == {"app": "web", "tier": "db"}
    data = one(
        "grpc.AgentService/UpdateRoutes", "routes.Routes.0.dest=10.0.0.0/8 routes.Routes.1.device=eth0"
    )
    routes = data["routes"]["Routes"]  # type: ignore[index]
    assert [r["dest"] for r in routes] == ["10.0.0.0/8", ""] and routes[1]["device"] == "eth0"
    assert one("grpc.AgentService/ExecProcess", "process.Args=[]")["process"]["Args"] == []  # type: ignore[index]


def test_enums_bytes_and_well_known_types() -> None:
    data = one("grpc.AgentService/UpdateInterface", "interface.IPAddresses.0.family=v6 interface.mtu=1500")
    assert data["interface"]["IPAddresses"][0]["family"] == "v6"  # type: ignore[index]
    assert one("grpc.AgentService/WriteStdin", "data=hex:0a00ff")["data"] == "CgD/"
    assert one("grpc.AgentService/WriteStdin", "data=base64:aGk=")["data"] == "aGk="
    assert one("grpc.AgentService/WriteStdin", "data=hi")["data"] == "aGk="
    request = build(
        "containerd.task.v2.Task/Update",
        'resources={"@type": "type.googleapis.com/containerd.types.transfer.Data", "data": "aGk="}',
    )
    assert request.messages[0].resources.type_url.endswith("containerd.types.transfer.Data")  # type: ignore[attr-defined]


def test_json_then_name_value_overrides_in_order() -> None:
    text = 'json://{"mem_block_size": true, "mem_hotplug_probe": true} mem_hotplug_probe=false'
    assert one("grpc.AgentService/GetGuestDetails", text) == {
        "mem_block_size": True,
        "mem_hotplug_probe": False,
    }
    # a later JSON document replaces what it names and merges nested objects
    text = 'json://{"process": {"Args": ["a"], "Cwd": "/x"}} json://{"process": {"Args": ["b"]}} exec_id=e'
    data = one("grpc.AgentService/ExecProcess", text)
    assert data["process"]["Args"] == ["b"] and data["process"]["Cwd"] == "/x"  # type: ignore[index]
    assert data["exec_id"] == "e"
    # ... and null clears
    data = one("grpc.AgentService/ExecProcess", 'process.Cwd=/ json://{"process": null}')
    assert "process" not in data


def test_file_arguments() -> None:
    files = {"/tmp/api.json": b'{"mem_block_size": true}'}
    data = one("grpc.AgentService/GetGuestDetails", "file:///tmp/api.json mem_hotplug_probe=1", files)
    assert data == {"mem_block_size": True, "mem_hotplug_probe": True}


def test_json_names_are_accepted_too() -> None:
    data = one("grpc.AgentService/GetGuestDetails", 'json://{"memBlockSize": true} memHotplugProbe=true')
    assert data == {"mem_block_size": True, "mem_hotplug_probe": True}


def test_client_streaming_takes_a_list_of_messages() -> None:
    request = build(
        "kuasar.agent.v1.Agent/Exec",
        'json://[{"start": {"argv": ["cat"], "stdin": true}}, {"stdin": "aGk="}] 2.stdin_eof=true',
    )
    kinds = [m.WhichOneof("kind") for m in request.messages]  # type: ignore[attr-defined]
    assert kinds == ["start", "stdin", "stdin_eof"]
    request = build("kuasar.agent.v1.Agent/Exec", "start.argv=[echo,hi] 1.stdin_eof=true")
    assert list(request.messages[0].start.argv) == ["echo", "hi"]  # type: ignore[attr-defined]
    assert request.messages[1].stdin_eof  # type: ignore[attr-defined]


def test_slots_are_not_fields() -> None:
    request = build("grpc.AgentService/SignalProcess", "signal=usr1 sid=S cid=C")
    assert request.slots == {"sid": "S", "cid": "C"}
    assert request.explicit == {"0:signal"}


@pytest.mark.parametrize(
    ("path", "text", "expected"),
    [
        ("grpc.AgentService/GetGuestDetails", "mem_block=1", "unknown field 'mem_block'"),
        ("grpc.AgentService/GetGuestDetails", "mem_block=1", "valid: mem_block_size, mem_hotplug_probe"),
        (
            "grpc.AgentService/ExecProcess",
            "process.Argz=[a]",
            "unknown field 'Argz' in process (grpc.Process",
        ),
        ("grpc.AgentService/GetGuestDetails", 'json://{"nope": 1}', "unknown field 'nope'"),
        ("grpc.AgentService/GetGuestDetails", "mem_block_size=maybe", "'maybe' is not true or false"),
        ("kuasar.agent.v1.Agent/Ping", "timestamp_secs=abc", "'abc' is not an integer"),
        ("kuasar.agent.v1.Agent/StopContainer", "timeout_seconds=-1", "out of range"),
        ("grpc.AgentService/SignalProcess", "signal=NOPE", "not an integer or a signal name"),
        ("grpc.AgentService/UpdateInterface", "interface.IPAddresses.0.family=v5", "not one of v4, v6"),
        ("grpc.AgentService/WriteStdin", "data=hex:zz", "(bytes)"),
        ("grpc.AgentService/GetGuestDetails", 'json://{"mem_block_size": "x"}', "mem_block_size"),
        ("grpc.AgentService/GetGuestDetails", "json://[1]", "must be an object"),
        ("grpc.AgentService/GetGuestDetails", "file:///missing.json", "cannot read /missing.json"),
        ("grpc.AgentService/GetGuestDetails", "file:///bad.json", "malformed JSON"),
        ("grpc.AgentService/GetGuestDetails", "stray", "unexpected argument 'stray'"),
        ("grpc.AgentService/UpdateRoutes", "routes.Routes.3.dest=x", "the list has 0 items"),
        ("grpc.AgentService/ExecProcess", "exec_id.x=1", "is not a message"),
        ("grpc.AgentService/ExecProcess", "process=notjson", "give it as JSON"),
        ("grpc.Health/Check", "1.service=x", "unknown field '1'"),
    ],
)
def test_bad_arguments_are_one_line_usage_errors(path: str, text: str, expected: str) -> None:
    with pytest.raises(ArgumentError) as caught:
        build(path, text, {"/bad.json": b"{nope"})
    message = str(caught.value)
    assert expected in message, message
    assert "\n" not in message and message.startswith(path + ":")
    assert caught.value.exit_code == 2


def test_typed_messages_match_the_stubs() -> None:
    request = build("grpc.SandboxService/ExecVMProcess", 'command="uname -a" stdin=hex:00')
    wire = request.messages[0].SerializeToString()
    assert sandbox_pb2.ExecVMProcessRequest.FromString(wire) == sandbox_pb2.ExecVMProcessRequest(
        command="uname -a", stdin=b"\0"
    )
    request = build("containerd.task.v2.Task/Kill", "id=c signal=KILL all=true")
    assert containerd_task_v2_pb2.KillRequest.FromString(request.messages[0].SerializeToString()) == (
        containerd_task_v2_pb2.KillRequest(id="c", signal=9, all=True)
    )
    request = build("kuasar.agent.v1.Agent/Logs", "container_id=c tail=0")
    logs = agent_pb2.LogsRequest.FromString(request.messages[0].SerializeToString())
    assert logs.HasField("tail") and logs.tail == 0  # optional: an explicit 0 is kept


# -- auto values -------------------------------------------------------------------------------------


def test_auto_values_generate_ids_once_and_reuse_them() -> None:
    auto = AutoValues()
    create = build("grpc.AgentService/CreateContainer", "")
    filled = auto.fill(create)
    cid = create.messages[0].container_id  # type: ignore[attr-defined]
    assert len(cid) == 64 and int(cid, 16) >= 0
    assert create.messages[0].exec_id == cid  # type: ignore[attr-defined]
    assert [(f.field, f.source) for f in filled] == [
        ("container_id", "generated cid"),
        ("exec_id", "exec_id = cid"),
    ]
    stats = build("grpc.AgentService/StatsContainer", "")
    auto.fill(stats)
    assert stats.messages[0].container_id == cid  # type: ignore[attr-defined]
    sandbox = build("grpc.AgentService/CreateSandbox", "")
    auto.fill(sandbox)
    assert len(sandbox.messages[0].sandbox_id) == 64 and sandbox.messages[0].sandbox_id != cid  # type: ignore[attr-defined]


def test_auto_values_never_overwrite_what_the_arguments_set() -> None:
    auto = AutoValues()
    request = build("grpc.AgentService/WaitProcess", 'json://{"container_id": "mine", "exec_id": ""}')
    auto.fill(request)
    assert request.messages[0].container_id == "mine"  # type: ignore[attr-defined]
    assert request.messages[0].exec_id == ""  # explicitly empty: left so  # type: ignore[attr-defined]


def test_cid_given_once_holds_for_later_commands() -> None:
    auto = AutoValues()
    auto.fill(build("grpc.AgentService/SignalProcess", "cid=C1"))
    later = build("grpc.AgentService/WaitProcess", "")
    auto.fill(later)
    assert (later.messages[0].container_id, later.messages[0].exec_id) == ("C1", "C1")  # type: ignore[attr-defined]


def test_defaults() -> None:
    auto = AutoValues()
    details = build("grpc.AgentService/GetGuestDetails", "mem_hotplug_probe=false")
    auto.fill(details)
    assert message_json(details.messages[0]) == {"mem_block_size": True, "mem_hotplug_probe": False}
    signal_request = build("grpc.AgentService/SignalProcess", "")
    auto.fill(signal_request)
    assert signal_request.messages[0].signal == signal.SIGKILL  # type: ignore[attr-defined]
    clock = build("grpc.SandboxService/SyncClock", "")
    auto.fill(clock)
    assert clock.messages[0].ClientSendTime > 0  # type: ignore[attr-defined]


def test_no_auto_values() -> None:
    auto = AutoValues(enabled=False)
    for path in (
        "grpc.AgentService/CreateSandbox",
        "grpc.AgentService/SignalProcess",
        "grpc.AgentService/GetGuestDetails",
    ):
        request = build(path, "")
        assert auto.fill(request) == []
        assert request.messages[0] == method(path).request_type()()
    named = build("grpc.AgentService/StatsContainer", "cid=C")  # named explicitly: still used
    auto.fill(named)
    assert named.messages[0].container_id == "C"  # type: ignore[attr-defined]


def test_field_completions() -> None:
    request = method("grpc.AgentService/ExecProcess").descriptor.input_type
    assert "process." in field_completions(request, "pro") and "process=" in field_completions(request, "pro")
    assert field_completions(request, "process.Ar") == ["process.Args="]
    assert field_completions(request, "nope.x") == []


def test_kata_messages_round_trip_through_json() -> None:
    request = build("grpc.AgentService/CopyFile", "path=/run/x file_mode=0o644 data=hex:6869 offset=0")
    data = message_json(request.messages[0])
    assert json.loads(json.dumps(data))["data"] == "aGk="
    assert (
        kata_agent_pb2.CopyFileRequest.FromString(request.messages[0].SerializeToString()).file_mode == 0o644
    )


def test_well_known_requests_take_their_json_forms() -> None:
    from google.protobuf import descriptor_pb2

    proto = descriptor_pb2.FileDescriptorProto(
        name="p.proto", package="p.v1", dependency=["google/protobuf/wrappers.proto"]
    )
    proto.service.add(name="S").method.add(
        name="Echo", input_type=".google.protobuf.StringValue", output_type=".google.protobuf.StringValue"
    )
    catalog = CATALOG.with_descriptor_set(
        descriptor_pb2.FileDescriptorSet(file=[proto]).SerializeToString(), "p"
    )
    (echo,) = catalog.candidates("p.v1.S/Echo")
    for text in ('json://"hi"', 'json://{"value": "hi"}', "value=hi"):
        request = compose(echo, lexer.split(text))
        assert message_json(request.messages[0]) == "hi"  # type: ignore[comparison-overlap]
    with pytest.raises(ArgumentError):
        compose(echo, lexer.split("json://[1, 2]"))


_WORDS = st.sampled_from(
    [
        "x=1",
        "process.Args=[a,b]",
        'json://{"a": 1}',
        "json://[]",
        "json://null",
        'labels={"k": "v"}',
        "data=hex:0g",
        "0.start.argv=[x]",
        "routes.Routes.0.dest=d",
        "signal=usr1",
        "cid=c",
        "file:///nonexistent",
        "id=",
        "=x",
        "'",
        '"a b"',
        "tail=-1",
        "interface.IPAddresses.0.family=v6",
        "resources={}",
        "OCI.Process.Args=[sh]",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from([m.path for s in CATALOG.services for m in s.methods]),
    words=st.lists(_WORDS, max_size=4),
)
def test_any_command_composes_or_is_a_usage_error(method: str, words: list[str]) -> None:
    from kuasar.agentctl.plan import Planner

    with contextlib.suppress(UsageError):  # anything else (TypeError, KeyError...) fails the test
        Planner(CATALOG).parse(" ".join([method, *words]))


def test_streaming_service_messages_are_any_with_their_types() -> None:
    init = '{"@type": "type.googleapis.com/containerd.services.streaming.v1.StreamInit", "id": "s1"}'
    window = '{"@type": "type.googleapis.com/containerd.types.transfer.WindowUpdate", "update": 32768}'
    request = build("containerd.services.streaming.v1.Streaming/Stream", f"json://[{init}, {window}]")
    assert [json.loads(json.dumps(message_json(m))) for m in request.messages] == [
        json.loads(init),
        json.loads(window),
    ]
    assert request.messages[0].type_url.endswith("StreamInit")  # type: ignore[attr-defined]
    for bad in ('json://[{"@type": "type.googleapis.com/no.Such"}]', "json://[1]"):
        with pytest.raises(ArgumentError):
            build("containerd.services.streaming.v1.Streaming/Stream", bad)
    with pytest.raises(ArgumentError, match="must be an object"):
        build("grpc.SandboxService/GetEvents", "json://[]")
    with pytest.raises(ArgumentError, match="has no field"):
        build("grpc.SandboxService/GetEvents", 'json://{"a": 1}')


OCI_SPEC = {
    "ociVersion": "1.0.2",
    "process": {
        "terminal": False,
        "user": {"uid": 1000, "gid": 1000, "additionalGids": [5]},
        "args": ["sh", "-c", "echo hi"],
        "env": ["PATH=/bin"],
        "cwd": "/",
        "capabilities": {"bounding": ["CAP_KILL"]},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        "noNewPrivileges": True,
        "oomScoreAdj": 5,
        "ioPriority": {"class": "IOPRIO_CLASS_IDLE"},
    },
    "root": {"path": "rootfs", "readonly": True},
    "hostname": "box",
    "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
    "linux": {
        "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
        "namespaces": [{"type": "pid"}],
    },
}


def test_an_oci_spec_in_kata_names() -> None:
    from kuasar.agentctl import oci

    spec = oci.absolute_root(OCI_SPEC, "/b")
    message = kata_agent_pb2.CreateContainerRequest().OCI
    dropped = oci.load(message, spec, "config.json")
    assert dropped == ["process.ioPriority"]  # Kata's Process has no such field: named, not silently lost
    assert (message.Version, message.Hostname, message.Root.Path) == ("1.0.2", "box", "/b/rootfs")
    process = message.Process
    assert list(process.Args) == ["sh", "-c", "echo hi"] and process.Cwd == "/" and process.NoNewPrivileges
    assert (process.User.UID, process.User.GID, list(process.User.AdditionalGids)) == (1000, 1000, [5])
    assert process.OOMScoreAdj == 5 and process.Rlimits[0].Type == "RLIMIT_NOFILE"
    assert message.Linux.UIDMappings[0].HostID == 1000 and message.Linux.Namespaces[0].Type == "pid"
    assert message.Mounts[0].destination == "/proc"


def test_bundle_auto_values() -> None:
    from kuasar.agentctl import oci

    auto = AutoValues(bundle=oci.absolute_root(OCI_SPEC, "/b"))
    execute = build("grpc.AgentService/ExecProcess", "exec_id=e1")
    filled = auto.fill(execute)
    assert list(execute.messages[0].process.Args) == ["sh", "-c", "echo hi"]  # type: ignore[attr-defined]
    assert [f.field for f in filled] == ["container_id", "process"]
    create = build("grpc.AgentService/CreateContainer", "")
    auto.fill(create)
    assert create.messages[0].OCI.Root.Path == "/b/rootfs"  # type: ignore[attr-defined]
    mine = build("grpc.AgentService/ExecProcess", "process.Args=[true]")
    auto.fill(mine)
    assert list(mine.messages[0].process.Args) == ["true"]  # type: ignore[attr-defined]
    off = AutoValues(enabled=False, bundle=OCI_SPEC)
    none = build("grpc.AgentService/ExecProcess", "")
    off.fill(none)
    assert not none.messages[0].HasField("process")  # type: ignore[attr-defined]


def test_json_looking_lists_are_typed_like_bracket_lists() -> None:
    assert one("grpc.AgentService/ExecProcess", "process.Args=[true,1]")["process"]["Args"] == ["true", "1"]  # type: ignore[index]
    data = one("grpc.AgentService/MemHotplugByProbe", "memHotplugProbeAddr=[16, 32]")
    assert data["memHotplugProbeAddr"] == ["16", "32"]
    assert one("grpc.AgentService/MemHotplugByProbe", "memHotplugProbeAddr=[0x10,32]") == data
