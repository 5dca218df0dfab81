"""containerd 1.6's ``containerd-shim-runc-v2``, started the way containerd starts it, and the
few ``containerd.task.v2.Task`` messages the interop tests send it.

Layer contract: test support; stdlib, protobuf's dynamic descriptors and ``kuasar.ttrpc`` framing
(for a blocking clean-up call). No containerd protos: the messages are declared here with the
field numbers of containerd's ``api/runtime/task/v2/shim.proto`` (facts, not code).

How containerd starts a shim (``runtime/v2/shim``): in the bundle directory (which holds
``config.json`` and a ``log`` FIFO), ``containerd-shim-runc-v2 -namespace NS -id ID -address
CONTAINERD_SOCK -publish-binary containerd start``. ``start`` re-executes itself as a daemon
(``shim.pid`` in the bundle), prints its ttrpc address ``unix:///run/containerd/s/<sha256>`` and
exits. The daemon only reaches containerd's address to publish events, so it need not exist.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from kuasar.agent.procfs import processes
from kuasar.proto import ttrpc_pb2
from kuasar.ttrpc.framing import Frame, FrameDecoder, FrameType, encode_frame

SHIM_BINARY = "containerd-shim-runc-v2"
TASK_SERVICE = "containerd.task.v2.Task"
NAMESPACE = "kuasar-interop"
NAMESPACE_KEY = "containerd-namespace-ttrpc"
START_TIMEOUT = 15.0


class ShimUnavailable(Exception):
    """The shim binary is missing or would not start: the reason to skip with."""


def _task_messages() -> dict[str, Any]:
    fields = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="kuasar_interop/task.proto", package="kuasar_interop.task", syntax="proto3"
    )
    declared = {
        # containerd.task.v2: ConnectRequest{id=1}, ConnectResponse{shim_pid=1, task_pid=2,
        # version=3}, StateRequest{id=1, exec_id=2}, ShutdownRequest{id=1, now=2}
        "ConnectRequest": [("id", fields.TYPE_STRING)],
        "ConnectResponse": [
            ("shim_pid", fields.TYPE_UINT32),
            ("task_pid", fields.TYPE_UINT32),
            ("version", fields.TYPE_STRING),
        ],
        "StateRequest": [("id", fields.TYPE_STRING), ("exec_id", fields.TYPE_STRING)],
        "ShutdownRequest": [("id", fields.TYPE_STRING), ("now", fields.TYPE_BOOL)],
    }
    for name, members in declared.items():
        message = file.message_type.add(name=name)
        for number, (field_name, field_type) in enumerate(members, start=1):
            message.field.add(name=field_name, number=number, type=field_type, label=fields.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"kuasar_interop.task.{name}"))
        for name in declared
    }


#: Dynamic message classes: ``TASK["ConnectRequest"](id="x")``.
TASK = _task_messages()


@dataclass
class Shim:
    """A started shim daemon."""

    id: str
    namespace: str
    socket_path: Path
    pid: int
    bundle: Path

    @property
    def metadata(self) -> list[tuple[str, str]]:
        """The metadata containerd sends on every call."""
        return [(NAMESPACE_KEY, self.namespace)]


def alive(pid: int) -> bool:
    """Whether a process with this pid exists and has not exited.

    The daemonized shim is re-parented to the nearest child subreaper, which is this test process
    once an in-process ContainerManager has made it one: then it lingers as our zombie, which we
    reap here.
    """
    state = next((proc.state for proc in processes() if proc.pid == pid), None)
    if state == "Z":
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    return state not in (None, "Z")


def call_blocking(socket_path: Path, method: str, payload: bytes, timeout: float = 5.0) -> ttrpc_pb2.Response:
    """One ``Task`` call over a blocking socket (fixture set-up and teardown run outside the loop).

    Raises:
        OSError: the socket failed or timed out.
        ShimUnavailable: the shim closed the connection without answering.
    """
    request = ttrpc_pb2.Request(
        service=TASK_SERVICE, method=method, payload=payload, timeout_nano=int(timeout * 1e9)
    )
    request.metadata.add(key=NAMESPACE_KEY, value=NAMESPACE)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(socket_path))
        sock.sendall(encode_frame(Frame(1, FrameType.REQUEST, 0, request.SerializeToString())))
        decoder = FrameDecoder()
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                raise ShimUnavailable(f"shim closed the connection during {method}")
            for frame in decoder.feed(chunk):
                if frame.stream_id == 1 and frame.type == FrameType.RESPONSE:
                    return ttrpc_pb2.Response.FromString(frame.data)


@contextlib.contextmanager
def started_shim(bundle: Path) -> Iterator[Shim]:
    """Start a shim for a fresh id with ``bundle`` as its bundle; Shutdown/kill it afterwards.

    Raises:
        ShimUnavailable: the binary is missing or ``start`` failed.
    """
    binary = shutil.which(SHIM_BINARY) or (
        f"/usr/bin/{SHIM_BINARY}" if Path(f"/usr/bin/{SHIM_BINARY}").exists() else None
    )
    if binary is None:
        raise ShimUnavailable(f"{SHIM_BINARY} not installed (apt-get install containerd)")
    bundle.mkdir(parents=True)
    (bundle / "config.json").write_text('{"ociVersion": "1.0.2"}')
    os.mkfifo(bundle / "log")
    log_fd = os.open(bundle / "log", os.O_RDONLY | os.O_NONBLOCK)  # the shim opens it for writing
    shim_id = f"kip-{os.getpid()}-{secrets.token_hex(4)}"
    containerd_address = bundle.parent / "containerd.sock"  # never listened on
    env = dict(os.environ, TTRPC_ADDRESS=f"{containerd_address}.ttrpc")
    shim: Shim | None = None
    try:
        try:
            started = subprocess.run(
                [
                    binary,
                    "-namespace",
                    NAMESPACE,
                    "-id",
                    shim_id,
                    "-address",
                    str(containerd_address),
                    "-publish-binary",
                    shutil.which("containerd") or "/usr/bin/containerd",
                    "start",
                ],
                cwd=bundle,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=START_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ShimUnavailable(f"{SHIM_BINARY} start: {exc}") from exc
        address = started.stdout.strip()
        if started.returncode != 0 or not address.startswith("unix://"):
            raise ShimUnavailable(
                f"{SHIM_BINARY} start exited {started.returncode}: {started.stdout} {started.stderr}".strip()
            )
        socket_path = Path(address.removeprefix("unix://"))
        try:
            connected = call_blocking(
                socket_path, "Connect", TASK["ConnectRequest"](id=shim_id).SerializeToString()
            )
        except OSError as exc:
            raise ShimUnavailable(f"shim at {address} does not answer: {exc}") from exc
        pid = TASK["ConnectResponse"].FromString(connected.payload).shim_pid
        shim = Shim(shim_id, NAMESPACE, socket_path, pid, bundle)
        yield shim
    finally:
        if shim is not None:
            _stop(shim)
        os.close(log_fd)


def _stop(shim: Shim) -> None:
    if alive(shim.pid):
        with contextlib.suppress(OSError, ShimUnavailable):
            call_blocking(
                shim.socket_path, "Shutdown", TASK["ShutdownRequest"](id=shim.id).SerializeToString()
            )
    deadline = time.monotonic() + 5
    while alive(shim.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(shim.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(shim.pid, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        shim.socket_path.unlink()
