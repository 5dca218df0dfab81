"""``kuasarctl agent --server-address`` -> the Go ttrpc 1.1.1 server (``go/src/kuasarpeer/server``).

A service we ship no descriptor for, reached with ``--descriptor-set`` (built here from a
``FileDescriptorProto``, as ``protoc --descriptor_set_out`` would write it): values typed by its
descriptor, Go's statuses and its UNIMPLEMENTED texts shown as they come, ``--timeout`` honoured by
Go (``timeout_nano``) and exit 124.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from google.protobuf import descriptor_pb2

from tests.functional.cli_helpers import kuasarctl
from tests.interop.gopeers import PEER_SERVICE


def descriptor_set(path: Path) -> Path:
    """``kuasar.interop.v1.Peer`` as a serialized FileDescriptorSet (well-known types left out)."""
    package, _, name = PEER_SERVICE.rpartition(".")
    proto = descriptor_pb2.FileDescriptorProto(
        name="peer.proto",
        package=package,
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto", "google/protobuf/empty.proto"],
    )
    service = proto.service.add(name=name)
    for method, request, response in (
        ("Echo", "StringValue", "StringValue"),
        ("Raise", "StringValue", "StringValue"),
        ("Sleep", "Int64Value", "Int64Value"),
        ("Metadata", "Empty", "StringValue"),
    ):
        service.method.add(
            name=method, input_type=f".google.protobuf.{request}", output_type=f".google.protobuf.{response}"
        )
    path.write_bytes(descriptor_pb2.FileDescriptorSet(file=[proto]).SerializeToString())
    return path


def agent(socket: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return kuasarctl("agent", "--server-address", f"unix://{socket}", *args)


def records(result: subprocess.CompletedProcess[bytes]) -> list[dict[str, object]]:
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def test_go_server_refuses_our_services_with_its_texts(go_server_socket: Path) -> None:
    result = agent(go_server_socket, "-c", "grpc.Health/Check", "-c", "Version")
    assert result.returncode == 1
    lines = result.stdout.decode().splitlines()
    assert lines[0].startswith("grpc.Health/Check: UNIMPLEMENTED (12): service grpc.Health [")
    assert lines[1] == "  (the server does not implement grpc.Health/Check)"
    assert len(lines) == 2  # the first failure ends the run


def test_go_server_with_a_descriptor_set(go_server_socket: Path, short_tmp: Path) -> None:
    peer = str(descriptor_set(short_tmp / "peer.pb"))
    result = agent(
        go_server_socket,
        "--descriptor-set",
        peer,
        "--json",
        "--ignore-errors",
        "-c",
        "Echo value='hi there'",
        "-c",
        f'{PEER_SERVICE}/Raise json://{{"value": "5 no such box"}}',
        "-c",
        "Peer/Echo",
    )
    assert result.returncode == 1, result.stderr.decode()
    echo, raised, empty = records(result)
    assert echo["method"] == f"{PEER_SERVICE}/Echo"
    assert (echo["request"], echo["response"]) == ("hi there", "go:hi there")  # wrappers' JSON form
    assert (raised["code"], raised["status"], raised["message"]) == (5, "NOT_FOUND", "no such box")
    assert empty["response"] == "go:"
    assert "Traceback" not in result.stderr.decode()


def test_go_server_honours_the_timeout(go_server_socket: Path, short_tmp: Path) -> None:
    peer = str(descriptor_set(short_tmp / "peer.pb"))
    result = agent(
        go_server_socket, "--descriptor-set", peer, "--json", "--timeout", "200ms", "-c", "Sleep value=5000"
    )
    assert result.returncode == 124
    (record,) = records(result)
    assert record["status"] == "DEADLINE_EXCEEDED"
    fast = agent(go_server_socket, "--descriptor-set", peer, "--json", "-c", "Sleep value=1")
    assert fast.returncode == 0 and records(fast)[0]["response"] == "1"


def test_a_bad_descriptor_set_is_a_usage_error(short_tmp: Path) -> None:
    junk = short_tmp / "junk.pb"
    junk.write_bytes(b"\xff\xff\xff")
    result = kuasarctl("agent", "--descriptor-set", str(junk), "--list")
    assert result.returncode == 2
    assert result.stderr.decode().startswith(f"Error: {junk}: not a protobuf FileDescriptorSet")
    missing = kuasarctl("agent", "--descriptor-set", str(short_tmp / "none.pb"), "--list")
    assert missing.returncode == 2
