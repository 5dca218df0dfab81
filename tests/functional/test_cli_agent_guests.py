"""``kuasarctl agent`` against guests that are not ours: a stock Kuasar vmm-task and a Kata agent
(the tests' stand-ins, written from the wire facts), through every address form; what each was
sent is read from its journal — and a bad command sends nothing at all."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from typing import Any

import pytest

from kuasar.proto import kata_agent_pb2, sandbox_pb2
from tests.functional.agentctl_kata import (
    AGENT_VERSION,
    MEM_BLOCK_SIZE,
    kata_api_guest,
    kata_api_unix,
)
from tests.functional.cli_helpers import KUASARCTL, kuasarctl, short_tmpdir
from tests.functional.guests import Guest, booting_guest, crashed_vmm, kata_guest, mute_guest, vmm_task_guest
from tests.functional.guests_peers import exec_failure

__all__ = ["booting_guest", "crashed_vmm", "kata_guest", "mute_guest", "vmm_task_guest"]

#: How many calls the guest session's probe makes before the user's, per guest kind (kuasar.session:
#: Health/Check, then SandboxService/Check on vmm-task; Health/Check, Ping, Version on Kata).
PROBE_CALLS = {"vmm-task": 2, "kata-agent": 3}


def agent(guest: Guest, *args: str) -> subprocess.CompletedProcess[bytes]:
    return kuasarctl("agent", "-d", guest.root, guest.id, *args)


def records(result: subprocess.CompletedProcess[bytes]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def sent(guest: Guest, since: int) -> list[str]:
    """The user's calls of one kuasarctl run the stand-in received after ``since`` (no probe)."""
    return [c.path for c in guest.calls(since)][PROBE_CALLS[guest.kind] :]


async def run_cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    """kuasarctl in a subprocess while this event loop keeps serving an in-process stand-in."""
    proc = await asyncio.create_subprocess_exec(
        *KUASARCTL, *args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return subprocess.CompletedProcess([*KUASARCTL, *args], proc.returncode, out, err)


# -- a stock Kuasar vmm-task ------------------------------------------------------------------------


def test_vmm_task_has_no_health_and_says_so(vmm_task_guest: Guest) -> None:
    mark = vmm_task_guest.mark()
    result = agent(vmm_task_guest, "-c", "grpc.Health/Check")
    assert result.returncode == 1
    out = result.stdout.decode().splitlines()
    assert out[0].startswith("grpc.Health/Check: INVALID_ARGUMENT (3): grpc.Health service does not exist [")
    assert (
        out[1]
        == "  (a vmm-task guest does not serve grpc.Health (it is served by: Kata agent, kuasar-agent))"
    )
    assert result.stderr.decode().startswith(
        "Error: grpc.Health/Check: INVALID_ARGUMENT: grpc.Health service"
    )
    assert sent(vmm_task_guest, mark) == ["/grpc.Health/Check"]


def test_vmm_task_check_means_its_sandbox_service(vmm_task_guest: Guest) -> None:
    result = agent(vmm_task_guest, "--json", "-c", "Check")
    assert result.returncode == 0, result.stderr.decode()
    (record,) = records(result)
    assert (record["method"], record["status"], record["response"]) == ("grpc.SandboxService/Check", "OK", {})


def test_vmm_task_exec_vm_process_success_and_failure(vmm_task_guest: Guest) -> None:
    mark = vmm_task_guest.mark()
    result = agent(
        vmm_task_guest,
        "--json",
        "--ignore-errors",
        "-c",
        'ExecVMProcess command="read line; echo got:$line" stdin=hello',
        "-c",
        'ExecVMProcess command="echo bad >&2; exit 3"',
    )
    assert result.returncode == 1
    ok, failed = records(result)
    assert (ok["status"], ok["response"]) == ("OK", {"out": "got:hello\n"})
    assert (failed["code"], failed["status"], failed["response"]) == (2, "UNKNOWN", None)
    assert failed["message"] == exec_failure("echo bad >&2; exit 3", 3, b"bad\n")
    calls = vmm_task_guest.exec_calls(mark)
    assert [(c.command, c.stdin) for c in calls] == [
        ("read line; echo got:$line", b"hello"),
        ("echo bad >&2; exit 3", b""),
    ]


def test_vmm_task_sync_clock(vmm_task_guest: Guest) -> None:
    mark = vmm_task_guest.mark()
    result = agent(vmm_task_guest, "--json", "-c", "SyncClock Delta=0")
    assert result.returncode == 0, result.stderr.decode()
    (record,) = records(result)
    assert int(record["response"]["ClientArriveTime"]) > 0
    (call,) = [c for c in vmm_task_guest.calls(mark) if c.method == "SyncClock"]
    packet = sandbox_pb2.SyncClockPacket.FromString(call.payload)
    assert packet.Delta == 0 and str(packet.ClientSendTime) == record["request"]["ClientSendTime"]


def test_vmm_task_services_it_does_not_serve(vmm_task_guest: Guest) -> None:
    result = agent(vmm_task_guest, "--json", "--ignore-errors", "-c", "State", "-c", "GetGuestDetails")
    assert result.returncode == 1
    state, details = records(result)
    assert state["method"] == "containerd.task.v2.Task/State" and state["status"] == "INVALID_ARGUMENT"
    assert state["message"] == "containerd.task.v2.Task service does not exist"
    assert len(state["request"]["id"]) == 64  # a generated container ID
    assert details["message"] == "grpc.AgentService service does not exist"


@pytest.mark.parametrize(
    "command",
    [
        "Chek",
        "ExecVMProcess comand=x",
        "ExecVMProcess stdin=hex:zz",
        'ExecVMProcess json://{"command": }',
        "ExecVMProcess file:///no/such.json",
        "SyncClock Delta=soon",
        "GetEvents json://[]",
    ],
)
def test_bad_input_sends_nothing(vmm_task_guest: Guest, command: str) -> None:
    mark = vmm_task_guest.mark()
    result = agent(vmm_task_guest, "-c", "Check", "-c", 'ExecVMProcess command="touch /tmp/x"', "-c", command)
    assert result.returncode == 2
    assert len(result.stderr.decode().splitlines()[0]) > len("Error: ")
    assert vmm_task_guest.calls(mark) == []  # not even the probe: nothing was dialled


@pytest.mark.parametrize("form", ["hvsock", "unix+hybrid", "sandbox-dir"])
def test_vmm_task_address_forms(vmm_task_guest: Guest, form: str) -> None:
    args = {
        "hvsock": ["--server-address", vmm_task_guest.hvsock()],
        "unix+hybrid": ["--server-address", "unix://" + vmm_task_guest.socket, "--hybrid-vsock"],
        "sandbox-dir": ["-d", vmm_task_guest.root, vmm_task_guest.directory],
    }[form]
    result = kuasarctl("agent", *args, "--json", "-c", 'ExecVMProcess command="echo via-$0"')
    assert result.returncode == 0, result.stderr.decode()
    (record,) = records(result)
    assert record["response"]["out"].startswith("via-")


def test_hybrid_vsock_port_is_the_one_behind_the_socket(vmm_task_guest: Guest) -> None:
    address = "unix://" + vmm_task_guest.socket
    result = kuasarctl(
        "agent", "--server-address", address, "--hybrid-vsock", "--hybrid-vsock-port", "2000", "-c", "Check"
    )
    assert result.returncode == 125
    assert "Traceback" not in result.stderr.decode()
    # without --hybrid-vsock the VMM socket is a plain UNIX socket: no ttrpc there
    result = kuasarctl("agent", "--server-address", address, "--connect-timeout", "1", "-c", "Check")
    assert result.returncode == 125


# -- a Kata agent --------------------------------------------------------------------------------------


def test_kata_health_and_everything_else_refused(kata_guest: Guest) -> None:
    mark = kata_guest.mark()
    result = agent(
        kata_guest,
        "--json",
        "--ignore-errors",
        "-c",
        "Check",
        "-c",
        "Version",
        "-c",
        "GetGuestDetails",
        "-c",
        "Ping",
    )
    assert result.returncode == 1
    check, version, details, ping = records(result)
    assert (check["method"], check["response"]) == ("grpc.Health/Check", {"status": "SERVING"})
    assert version["response"] == {"grpc_version": "0.0.1", "agent_version": "4.1.0"}
    assert (details["status"], details["message"]) == (
        "INVALID_ARGUMENT",
        "grpc.AgentService service does not exist",
    )
    assert (ping["status"], ping["message"]) == (
        "INVALID_ARGUMENT",
        "kuasar.agent.v1.Agent service does not exist",
    )
    assert sent(kata_guest, mark) == [
        "/grpc.Health/Check",
        "/grpc.Health/Version",
        "/grpc.AgentService/GetGuestDetails",
        "/kuasar.agent.v1.Agent/Ping",
    ]


@pytest.mark.asyncio
async def test_kata_agent_service_calls() -> None:
    async with kata_api_guest() as guest:
        result = await run_cli(
            "agent",
            "-d",
            guest.root,
            guest.id,
            "--json",
            "-c",
            "GetGuestDetails",
            "-c",
            "GetMetrics",
            "-c",
            "ListInterfaces",
        )
        assert result.returncode == 0, result.stderr.decode()
        details, metrics, interfaces = records(result)
        assert details["method"] == "grpc.AgentService/GetGuestDetails"
        assert details["request"] == {
            "mem_block_size": True,
            "mem_hotplug_probe": True,
        }  # kata-agent-ctl's defaults
        assert details["auto"] == {"mem_block_size": True, "mem_hotplug_probe": True}
        assert details["response"]["mem_block_size_bytes"] == str(MEM_BLOCK_SIZE)
        assert details["response"]["agent_details"]["version"] == AGENT_VERSION
        assert metrics["response"]["metrics"].startswith("# HELP kata_agent")
        assert interfaces["response"]["Interfaces"][0]["IPAddresses"][0]["address"] == "127.0.0.1"
        (payload,) = guest.payloads("grpc.AgentService/GetGuestDetails")
        assert kata_agent_pb2.GuestDetailsRequest.FromString(payload) == kata_agent_pb2.GuestDetailsRequest(
            mem_block_size=True, mem_hotplug_probe=True
        )


@pytest.mark.asyncio
async def test_kata_refusals_are_shown_clearly() -> None:
    async with kata_api_guest() as guest:
        result = await run_cli(
            "agent",
            "-d",
            guest.root,
            guest.id,
            "--ignore-errors",
            "-c",
            "SignalProcess signal=usr1 sid=S1 cid=C1",
            "-c",
            "PauseContainer",
            "-c",
            "grpc.SandboxService/Check",
        )
        assert result.returncode == 1
        out = result.stdout.decode().splitlines()
        assert out[0].startswith(
            "grpc.AgentService/SignalProcess: INVALID_ARGUMENT (3): InvalidContainerId ["
        )
        assert out[1].startswith(
            "grpc.AgentService/PauseContainer: UNIMPLEMENTED (12): PauseContainer method ["
        )
        assert out[2].startswith("  (the server does not implement grpc.AgentService/PauseContainer)")
        assert out[3].startswith(
            "grpc.SandboxService/Check: INVALID_ARGUMENT (3): grpc.SandboxService service does not exist ["
        )
        assert (
            out[4] == "  (a kata-agent guest does not serve grpc.SandboxService"
            " (it is served by: Kuasar vmm-task, kuasar-agent))"
        )
        assert "3 of 3 calls failed" in result.stderr.decode()
        (payload,) = guest.payloads("grpc.AgentService/SignalProcess")
        request = kata_agent_pb2.SignalProcessRequest.FromString(payload)
        assert (request.container_id, request.exec_id, request.signal) == ("C1", "C1", 10)
        (payload,) = guest.payloads("grpc.AgentService/PauseContainer")
        assert kata_agent_pb2.PauseContainerRequest.FromString(payload).container_id == "C1"  # cid= held on


@pytest.mark.asyncio
async def test_kata_no_auto_values_sends_empty_requests() -> None:
    async with kata_api_guest() as guest:
        result = await run_cli(
            "agent", "-d", guest.root, guest.id, "-n", "-c", "GetGuestDetails", "-c", "CreateSandbox"
        )
        assert result.returncode == 0, result.stderr.decode()
        assert guest.payloads("grpc.AgentService/GetGuestDetails") == [b""]
        assert guest.payloads("grpc.AgentService/CreateSandbox") == [b""]
        result = await run_cli(
            "agent", "-d", guest.root, guest.id, "--json", "-c", "CreateSandbox", "-c", "DestroySandbox"
        )
        create, _destroy = records(result)
        sandbox_id = create["request"]["sandbox_id"]
        assert len(sandbox_id) == 64 and create["auto"] == {"sandbox_id": sandbox_id}
        last = guest.payloads("grpc.AgentService/CreateSandbox")[-1]
        assert kata_agent_pb2.CreateSandboxRequest.FromString(last).sandbox_id == sandbox_id


@pytest.mark.asyncio
@pytest.mark.parametrize("abstract", [False, True], ids=["unix", "abstract"])
async def test_kata_on_a_local_socket(abstract: bool) -> None:
    directory = short_tmpdir("ksrk")
    path = f"@{directory}/foo.socket" if abstract else os.path.join(directory, "foo.socket")
    async with kata_api_unix(path) as calls:
        result = await run_cli(
            "agent",
            "--server-address",
            f"unix://{path}",
            "--json",
            "-c",
            'GetGuestDetails json://{"mem_block_size": true}',
        )
        assert result.returncode == 0, result.stderr.decode()
        (record,) = records(result)
        assert record["request"] == {"mem_block_size": True, "mem_hotplug_probe": True}
        assert record["response"]["mem_block_size_bytes"] == str(MEM_BLOCK_SIZE)
        assert [c.method for c in calls][-1] == "GetGuestDetails"
    os.rmdir(directory)


@pytest.mark.asyncio
async def test_kata_bundle_dir_fills_exec_process_and_create_container(tmp_path: Any) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    spec = {
        "ociVersion": "1.0.2",
        "process": {
            "args": ["sh", "-c", "echo hi"],
            "cwd": "/",
            "user": {"uid": 0, "gid": 0},
            "env": ["A=1"],
        },
        "root": {"path": "rootfs"},
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}]},
    }
    (bundle / "config.json").write_text(json.dumps(spec))
    async with kata_api_guest() as guest:
        result = await run_cli(
            "agent", "-d", guest.root, guest.id, "--bundle-dir", str(bundle), "--ignore-errors",
            "-c", "CreateContainer", "-c", "ExecProcess exec_id=e1",
        )  # fmt: skip
        assert result.returncode == 1  # the stand-in does not implement them: UNIMPLEMENTED
        assert "auto: ExecProcess: container_id=" in result.stderr.decode()
        assert "process=config.json (--bundle-dir config.json)" in result.stderr.decode()
        (create,) = guest.payloads("grpc.AgentService/CreateContainer")
        request = kata_agent_pb2.CreateContainerRequest.FromString(create)
        assert (
            request.OCI.Root.Path == str(bundle / "rootfs")
            and list(request.OCI.Process.Args) == spec["process"]["args"]
        )
        assert [n.Type for n in request.OCI.Linux.Namespaces] == ["pid", "mount"]
        (execute,) = guest.payloads("grpc.AgentService/ExecProcess")
        process = kata_agent_pb2.ExecProcessRequest.FromString(execute)
        assert (process.container_id, process.exec_id) == (request.container_id, "e1")
        assert list(process.process.Args) == ["sh", "-c", "echo hi"] and list(process.process.Env) == ["A=1"]
        mark = len(guest.calls)
        bad = await run_cli(
            "agent", "-d", guest.root, guest.id, "--bundle-dir", str(tmp_path), "-c", "ExecProcess"
        )
        assert bad.returncode == 2 and "cannot read" in bad.stderr.decode()
        assert guest.calls[mark:] == []


def test_a_sandbox_with_the_wrong_agent_port_is_diagnosed(kata_guest: Guest) -> None:
    result = agent(kata_guest, "-p", "1030", "-c", "Check")
    assert result.returncode == 125
    first = result.stderr.decode().splitlines()[0]
    assert (
        first == f"Error: nothing in the guest of {kata_guest.id} ({kata_guest.socket})"
        " answers ttrpc on vsock port 1030"
    )


# -- guests that do not answer ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "first", "detail"),
    [
        (
            "crashed_vmm",
            "does not accept connections: the sandbox has crashed or is stopping",
            "connection refused",
        ),
        ("booting_guest", "answers ttrpc on vsock port 1024", "no listener on that port"),
        ("mute_guest", "answers ttrpc on vsock port 1024", "timed out"),
    ],
)
def test_unreachable_guests_are_diagnosed(
    request: pytest.FixtureRequest, fixture: str, first: str, detail: str
) -> None:
    guest: Guest = request.getfixturevalue(fixture)
    result = kuasarctl("agent", "-d", guest.root, guest.id, "--connect-timeout", "1", "-c", "Check")
    assert result.returncode == 125
    lines = result.stderr.decode().splitlines()
    assert lines[0].startswith("Error: ") and first in lines[0] and guest.id in lines[0]
    assert detail in lines[1]
    assert result.stdout == b""
