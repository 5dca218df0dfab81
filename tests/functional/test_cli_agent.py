"""``kuasarctl agent`` against our own agent in a local sandbox: every grpc.Health,
grpc.SandboxService and kuasar.agent.v1.Agent method through the real CLI, ``--json`` read field by
field, auto values and ``-n``, ``--repeat`` and the builtins, the exit codes, ``--list`` and
``--examples`` (which need no guest)."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.functional.bundle import container_sandbox, make_bundle
from tests.functional.cli_helpers import LocalSandbox, kuasarctl, local_sandbox, short_tmpdir

HEX64 = re.compile(r"[0-9a-f]{64}")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[LocalSandbox]:
    with local_sandbox("pod-agent-1") as running:
        yield running


def agent(sandbox: LocalSandbox, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return kuasarctl("agent", "-d", sandbox.root, sandbox.id, *args, timeout=timeout)


def records(result: subprocess.CompletedProcess[bytes]) -> list[dict[str, Any]]:
    """The ``--json`` lines of stdout, each checked for the record's keys and types."""
    lines = result.stdout.decode().splitlines()
    found = [json.loads(line) for line in lines]
    for record in found:
        assert {"method", "code", "status", "message", "elapsed_ms", "request", "response", "auto"} <= set(
            record
        )
        assert isinstance(record["code"], int) and isinstance(record["status"], str)
        assert isinstance(record["elapsed_ms"], (int, float)) and record["elapsed_ms"] >= 0
        assert isinstance(record["auto"], dict)
    return found


def decoded(data: str) -> bytes:
    return base64.b64decode(data)


# -- grpc.Health and grpc.SandboxService ---------------------------------------------------------------


def test_health_and_sandbox_service(sandbox: LocalSandbox) -> None:
    result = agent(
        sandbox,
        "--json",
        "-c",
        "Check",
        "-c",
        "grpc.Health/Version",
        "-c",
        "grpc.SandboxService/Check",
        "-c",
        'ExecVMProcess command="echo out; echo err >&2" stdin=ignored',
        "-c",
        "SyncClock Delta=0",
        "-c",
        'UpdateInterfaces json://{"interfaces": []}',
        "-c",
        "grpc.SandboxService/UpdateRoutes",
    )
    assert result.returncode == 0, result.stderr.decode()
    check, version, sandbox_check, exec_vm, clock, interfaces, routes = records(result)
    assert check["method"] == "grpc.Health/Check"  # the bare name means Health on kuasar-agent
    assert (check["code"], check["status"], check["message"]) == (0, "OK", "")
    assert check["request"] == {"service": "", "option_val": ""}
    assert check["response"] == {"status": "SERVING"}
    assert version["response"]["agent_version"] and version["response"]["grpc_version"]
    assert (sandbox_check["method"], sandbox_check["response"]) == ("grpc.SandboxService/Check", {})
    assert exec_vm["request"] == {"command": "echo out; echo err >&2", "stdin": "aWdub3JlZA=="}
    assert exec_vm["response"] == {"out": "out\n"}
    assert clock["request"]["Delta"] == "0" and int(clock["request"]["ClientSendTime"]) > 0
    assert clock["auto"] == {"ClientSendTime": clock["request"]["ClientSendTime"]}
    assert int(clock["response"]["ServerSendTime"]) >= int(clock["response"]["ClientArriveTime"]) > 0
    assert interfaces["method"] == "grpc.SandboxService/UpdateInterfaces" and interfaces["code"] == 0
    assert routes["code"] == 0
    assert "auto: SyncClock: ClientSendTime=" in result.stderr.decode()


def test_exec_vm_process_failure_is_shown_and_exits_1(sandbox: LocalSandbox) -> None:
    result = agent(sandbox, "-c", 'ExecVMProcess command="echo oops >&2; exit 3"', "-c", "Version")
    assert result.returncode == 1
    out = result.stdout.decode()
    assert out.startswith("grpc.SandboxService/ExecVMProcess: ")
    assert "failed with exit code 3" in out and "oops" in out
    assert "grpc.Health/Version" not in out  # the first failure ends the run
    err = result.stderr.decode().splitlines()
    assert err[0].startswith("Error: grpc.SandboxService/ExecVMProcess: ")


def test_setup_sandbox_refused_and_ignore_errors(sandbox: LocalSandbox) -> None:
    result = agent(sandbox, "--json", "--ignore-errors", "-c", "SetupSandbox", "-c", "Ping")
    assert result.returncode == 1
    setup, ping = records(result)
    assert setup["method"] == "grpc.SandboxService/SetupSandbox" and setup["status"] == "NOT_FOUND"
    assert setup["response"] is None and setup["message"]
    assert ping["response"]["message"] == "pong"
    assert "1 of 2 calls failed" in result.stderr.decode()


def test_get_events_long_poll_and_timeout(sandbox: LocalSandbox) -> None:
    started = time.monotonic()
    result = agent(sandbox, "--json", "--timeout", "300ms", "-c", "GetEvents")
    assert result.returncode == 124
    assert time.monotonic() - started < 30
    (record,) = records(result)
    assert record["method"] == "grpc.SandboxService/GetEvents" and record["status"] == "DEADLINE_EXCEEDED"


# -- kuasar.agent.v1.Agent -----------------------------------------------------------------------------


def test_ping_and_system_info(sandbox: LocalSandbox) -> None:
    result = agent(sandbox, "--json", "-c", "Ping message='hello there'", "-c", "GetSystemInfo")
    assert result.returncode == 0, result.stderr.decode()
    ping, info = records(result)
    assert ping["request"] == {"message": "hello there", "timestamp_secs": "0"}
    assert ping["response"]["message"] == "pong: hello there"
    assert info["method"] == "kuasar.agent.v1.Agent/GetSystemInfo"
    assert info["response"]["hostname"] == sandbox.id and info["response"]["cpu_count"] >= 1


def test_exec_stream_both_ways(sandbox: LocalSandbox) -> None:
    script = 'json://[{"start": {"argv": ["sh", "-c", "cat; echo err >&2; exit 5"], "stdin": true}}]'
    result = agent(sandbox, "--json", "-c", f"Exec {script} 1.stdin=hex:68690a 2.stdin_eof=true")
    assert result.returncode == 0, result.stderr.decode()
    (record,) = records(result)
    assert [list(m) for m in record["request"]] == [["start"], ["stdin"], ["stdin_eof"]]
    kinds = [next(iter(m)) for m in record["response"]]
    assert kinds[0] == "started" and kinds[-1] == "exit"
    out = b"".join(decoded(m["stdout"]) for m in record["response"] if "stdout" in m)
    err = b"".join(decoded(m["stderr"]) for m in record["response"] if "stderr" in m)
    assert (out, err) == (b"hi\n", b"err\n")
    assert record["response"][-1]["exit"]["exit_code"] == 5


def test_exec_stream_text_output_streams_each_message(sandbox: LocalSandbox) -> None:
    result = agent(sandbox, "-c", "Exec start.argv=[echo,hi]")
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().splitlines()
    assert json.loads(lines[0]).keys() == {"started"}
    assert {"stdout": "aGkK"} in [json.loads(line) for line in lines[:-1]]
    assert re.fullmatch(r"kuasar\.agent\.v1\.Agent/Exec: OK, 3 messages \[.* ms\]", lines[-1])


def test_copy_in_then_out(sandbox: LocalSandbox) -> None:
    directory = short_tmpdir("ksrcp")
    target = os.path.join(directory, "copied.txt")
    header = json.dumps({"header": {"path": target, "size": 5, "mode": 0o600}})
    result = agent(
        sandbox,
        "--json",
        "-c",
        f"CopyIn json://[{header}] 1.data=hello",
        "-c",
        f"CopyOut path={target}",
    )
    assert result.returncode == 0, result.stderr.decode()
    copy_in, copy_out = records(result)
    assert copy_in["response"] == {"bytes_written": "5"}
    assert copy_out["response"][0]["header"]["size"] == "5"
    assert b"".join(decoded(m["data"]) for m in copy_out["response"][1:]) == b"hello"
    with open(target, "rb") as file:
        assert file.read() == b"hello"


def test_unknown_container_ids_are_generated_once_and_printed(sandbox: LocalSandbox) -> None:
    result = agent(sandbox, "--json", "--ignore-errors", "-c", "StartContainer", "-c", "StopContainer")
    assert result.returncode == 1
    start, stop = records(result)
    generated = start["request"]["id"]
    assert HEX64.fullmatch(generated) and stop["request"]["id"] == generated
    assert start["auto"] == {"id": generated} and start["status"] == "NOT_FOUND"
    assert f"auto: StartContainer: id={generated} (generated cid)" in result.stderr.decode()


def test_no_auto_values_sends_the_defaults(sandbox: LocalSandbox) -> None:
    result = agent(sandbox, "--json", "-n", "-c", "StartContainer")
    assert result.returncode == 1
    (start,) = records(result)
    assert start["request"] == {"id": ""} and start["auto"] == {}
    assert "auto:" not in result.stderr.decode()


def test_containers_lifecycle_with_one_generated_id(tmp_path: Any) -> None:
    with container_sandbox("pod-agent-ctr") as sandbox:
        bundle = make_bundle(os.path.join(str(tmp_path), "b"), ["sh", "-c", "echo from-container; sleep 300"])
        result = agent(
            sandbox,
            "--json",
            "-c",
            f"CreateContainer bundle={bundle} labels.app=web",
            "-c",
            "StartContainer",
            "-c",
            "ListContainers",
            "-c",
            "sleep 0.5",
            "-c",
            "Logs stdout=true",
            "-c",
            "StopContainer timeout_seconds=1",
            "-c",
            "RemoveContainer",
            "-c",
            "ListContainers all=true",
        )
        assert result.returncode == 0, result.stderr.decode()
        create, start, listed, logs, stop, remove, after = records(result)
        cid = create["request"]["id"]
        assert HEX64.fullmatch(cid)
        assert create["response"]["labels"] == {"app": "web"} and create["response"]["status"] == "created"
        assert start["request"]["id"] == cid and start["response"]["status"] == "running"
        assert [c["id"] for c in listed["response"]["containers"]] == [cid]
        assert logs["request"]["container_id"] == cid
        assert b"from-container\n" in b"".join(decoded(entry["data"]) for entry in logs["response"])
        assert stop["response"]["status"] == "stopped" and remove["response"] == {}
        assert after["response"]["containers"] == []


# -- builtins, repeat, exit codes --------------------------------------------------------------------


def test_repeat_flag_and_builtin(sandbox: LocalSandbox) -> None:
    result = agent(sandbox, "--json", "--repeat", "2", "-c", "repeat 2", "-c", "Ping", "-c", "Version")
    assert result.returncode == 0, result.stderr.decode()
    methods = [r["method"].rpartition("/")[2] for r in records(result)]
    assert methods == ["Ping", "Ping", "Version", "Ping", "Ping", "Version"]
    inline = agent(sandbox, "--json", "-c", "repeat 3 Ping message=x")
    assert [r["response"]["message"] for r in records(inline)] == ["pong: x"] * 3


def test_builtins(sandbox: LocalSandbox) -> None:
    started = time.monotonic()
    result = agent(
        sandbox, "-c", "echo before", "-c", "sleep 400ms", "-c", "Ping", "-c", "quit", "-c", "Version"
    )
    assert result.returncode == 0, result.stderr.decode()
    assert time.monotonic() - started >= 0.4
    out = result.stdout.decode()
    assert out.startswith("before\nkuasar.agent.v1.Agent/Ping: OK")
    assert "Version" not in out  # quit stopped the run
    # with --json, stdout holds only the records; echo goes to stderr
    result = agent(sandbox, "--json", "-c", "echo note", "-c", "Ping")
    assert len(records(result)) == 1 and "note" in result.stderr.decode()


def test_builtins_alone_need_no_guest() -> None:
    result = kuasarctl("agent", "-c", "echo hi", "-c", "help")
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode()
    assert out.startswith("hi\nBuiltin commands:") and "grpc.AgentService" in out


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("Chek", "unknown method 'Chek' (did you mean: Check"),
        ("GetGuestDetails mem_block=1", "unknown field 'mem_block'"),
        ("Ping timestamp_secs=soon", "'soon' is not an integer"),
        ('Ping json://{"message": ', "malformed JSON"),
        ("Ping file:///no/such/file.json", "cannot read /no/such/file.json"),
        ("sleep forever", "not a duration"),
    ],
)
def test_bad_input_is_exit_2_with_one_line(sandbox: LocalSandbox, command: str, message: str) -> None:
    result = agent(sandbox, "-c", "Ping", "-c", command)
    assert result.returncode == 2
    assert result.stdout == b""  # not even the good command before it ran
    first = result.stderr.decode().splitlines()[0]
    assert first.startswith("Error: ") and message in first


def test_unreachable_guests_are_125(sandbox: LocalSandbox) -> None:
    missing = agent(sandbox, "-c", "Check", timeout=30)
    assert missing.returncode == 0
    result = kuasarctl("agent", "-d", sandbox.root, "no-such-pod", "-c", "Check")
    assert result.returncode == 125
    assert result.stderr.decode().startswith('Error: No pod found with prefix "no-such-pod"')
    result = kuasarctl("agent", "--server-address", "unix:///tmp/no-such-ksr.sock", "-c", "Check")
    assert result.returncode == 125 and "Traceback" not in result.stderr.decode()
    result = kuasarctl("agent", "-d", sandbox.root, "-p", "4000", sandbox.id, "-c", "Check")
    assert result.returncode == 125
    assert "vsock port 4000" in result.stderr.decode().splitlines()[0]


@pytest.mark.parametrize(
    "args",
    [
        ["-c", "Check"],
        ["--server-address", "vsock://3:1024", "SANDBOX", "-c", "Check"],
        ["--server-address", "vsock://3:1024", "--hybrid-vsock", "-c", "Check"],
        ["--server-address", "nope://x", "-c", "Check"],
        ["SANDBOX"],
        ["--repeat", "0", "SANDBOX", "-c", "Check"],
        ["--timeout", "soon", "SANDBOX", "-c", "Check"],
    ],
)
def test_bad_flags_are_exit_2(args: list[str]) -> None:
    result = kuasarctl("agent", *args)
    assert result.returncode == 2, result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()


def test_list_needs_no_guest() -> None:
    result = kuasarctl("agent", "--list")
    assert result.returncode == 0
    out = result.stdout.decode()
    for service in ("grpc.Health", "grpc.SandboxService", "grpc.AgentService", "kuasar.agent.v1.Agent"):
        assert f"\n{service}  (" in "\n" + out
    assert "containerd.task.v2.Task  (" in out and "containerd.services.streaming.v1.Streaming  (" in out
    one = kuasarctl("agent", "--list", "grpc.SandboxService", "--json")
    assert one.returncode == 0
    (service,) = json.loads(one.stdout)
    assert [m["name"] for m in service["methods"]] == [
        "UpdateInterfaces",
        "UpdateRoutes",
        "Check",
        "ExecVMProcess",
        "SyncClock",
        "GetEvents",
        "SetupSandbox",
    ]
    assert kuasarctl("agent", "--list", "NoSuch").returncode == 2


def test_examples() -> None:
    result = kuasarctl("agent", "--examples")
    assert result.returncode == 0
    assert (
        "kuasarctl agent --server-address unix:///run/vc/vm/ID/clh.sock --hybrid-vsock"
        in result.stdout.decode()
    )
