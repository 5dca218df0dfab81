"""The guest-side services of a stock Kuasar vmm-task and of a Kata agent, for the tests.

Written from public source and the wire facts (shared/protocol-facts.md §B, §C), on the tests' own
ttrpc server (``guests_ttrpc``), independent of ``kuasar.agent`` and ``kuasar.ttrpc``. The protobuf
stubs of ``kuasar.proto`` are used as wire definitions only.

:class:`VmmTaskGuest` — kuasar-io/kuasar HEAD ``6a74f374f3``, ttrpc-rust ``v0.7.1-kuasar``:

- ``grpc.SandboxService/Check`` → ``Empty`` (``vmm/task/src/sandbox_service.rs:136``);
- ``grpc.SandboxService/ExecVMProcess`` → ``do_execute_cmd`` (``sandbox_service.rs:140-221``) and
  ``util.rs::spawn_and_wait`` (``:141-254``): ``/bin/bash -c <command>``, stdout and stderr piped,
  stdin piped only when the request's ``stdin`` is non-empty. The whole stdin is written and closed
  *before* stdout and stderr are read (so a command that reads much stdin while writing much output
  deadlocks, there as here). Exit code 0: ``out`` = stdout, lossy UTF-8. Otherwise
  ``containerd_shim::other!("cmd {} failed with exit code {} and error message {}", …)``, i.e.
  ``Error::Other`` whose Display is ``"Other: " + text`` (rust-extensions ``crates/shim/src/error.rs``
  at ``53b4ca86``: ``#[error("Other: {0}")]``; ``From<Error> for ttrpc::Error`` gives
  ``Others(e.to_string())``);
  the ttrpc handler macro (ttrpc-rust ``src/asynchronous/utils.rs:37-47``) then answers
  UNKNOWN with ``format!("{:?}", err)``: ``Others("<that text, Debug-escaped>")``;
- the exit code is the reaper's (``vmm/task/src/main.rs:262-283``): ``WaitStatus::Exited`` → its
  status, ``WaitStatus::Signaled`` → ``128 + signal`` — so a command killed by SIGKILL reports
  ``failed with exit code 137``;
- no ``grpc.Health``: the Rust 0.7 server answers INVALID_ARGUMENT ``grpc.Health service does not exist``.

:class:`KataGuest` — kata-containers HEAD ``7c6ba40c54``, ttrpc 0.9.0: ``grpc.Health/Check`` →
SERVING, ``grpc.Health/Version`` → ``{grpc_version: API_VERSION "0.0.1", agent_version: VERSION
"4.1.0"}`` (``src/agent/src/rpc.rs:1945-1972``, ``src/agent/Makefile:85``, ``VERSION``).

Stand-in liberties: with an empty ``stdin`` the command's stdin is /dev/null (vmm-task's child
inherits vmm-task's own, the VM console); a command whose call times out or whose connection drops
keeps running with its output discarded (vmm-task drops the future and leaves the child running);
the other vmm-task services (``containerd.task.v2.Task``, ``Streaming``, and SandboxService's
UpdateInterfaces, UpdateRoutes, SetupSandbox) and Kata's ``grpc.AgentService`` are not served.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import os
import time

from kuasar.proto import health_pb2, sandbox_pb2
from tests.functional.guests_console import (
    VMM_TASK_ENV,
    Children,
    Journal,
    KataConsole,
    VmmTaskConsole,
    kill,
)
from tests.functional.guests_rustfmt import lossy, rust_debug_str
from tests.functional.guests_ttrpc import Call, Code, Dialect, Handler, MiniTtrpcServer, Recorder, RpcStatus

SANDBOX_SERVICE = "grpc.SandboxService"
HEALTH_SERVICE = "grpc.Health"
KATA_AGENT_VERSION = "4.1.0"
KATA_API_VERSION = "0.0.1"


def _shell() -> str:
    # vmm-task hard-codes /bin/bash; a host without bash gets /bin/sh so the stand-in still runs.
    return "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"


def others(text: str) -> str:
    """The status message of a Rust ``ttrpc::Error::Others(text)`` answered through ``{:?}``."""
    return f"Others({rust_debug_str(text)})"


def exec_failure(command: str, exit_code: int, stderr: bytes) -> str:
    """ExecVMProcess's UNKNOWN status message for a command that did not exit 0."""
    return others(f"Other: cmd {command} failed with exit code {exit_code} and error message {lossy(stderr)}")


def _io_error(err: int) -> str:
    """Rust's Display of an OS ``io::Error``."""
    return f"{os.strerror(err)} (os error {err})"


def _record(journal: Journal, port: int) -> Recorder:
    def record(call: Call) -> None:
        journal(
            {
                "event": "ttrpc",
                "port": port,
                "stream_id": call.stream_id,
                "flags": call.flags,
                "service": call.service,
                "method": call.method,
                "payload": base64.b64encode(call.payload).decode(),
                "timeout_nano": call.timeout_nano,
                "metadata": [list(kv) for kv in call.metadata],
            }
        )

    return record


async def _drain(proc: asyncio.subprocess.Process, children: Children) -> None:
    """Let an abandoned command run on: discard its output, reap it."""
    streams = [s for s in (proc.stdout, proc.stderr) if s is not None]
    with contextlib.suppress(Exception):
        await asyncio.gather(*(s.read() for s in streams), proc.wait())
    children.discard(proc)


class VmmTaskGuest:
    """A stock Kuasar vmm-task: ttrpc on 1024 and, with ``console``, the debug console on 1025."""

    kind = "vmm-task"
    api_port = 1024

    def __init__(self, journal: Journal, children: Children, *, console: bool = False) -> None:
        self._children = children
        self._orphans: set[asyncio.Task[None]] = set()
        services: dict[str, dict[str, Handler]] = {
            SANDBOX_SERVICE: {
                "Check": self._check,
                "ExecVMProcess": self._exec_vm_process,
                "SyncClock": self._sync_clock,
                "GetEvents": self._get_events,
            }
        }
        self.ttrpc = MiniTtrpcServer(services, dialect=Dialect.RUST_071, record=_record(journal, 1024))
        self.console = VmmTaskConsole(journal, children, port=1025) if console else None

    async def _check(self, call: Call) -> bytes:
        health_pb2.CheckRequest.FromString(call.payload)
        return b""

    async def _sync_clock(self, call: Call) -> bytes:
        # Delta 0: fill the guest's times (CLOCK_REALTIME ns). A non-zero Delta would set the guest's
        # clock; the stand-in answers the same without touching the host's.
        packet = sandbox_pb2.SyncClockPacket.FromString(call.payload)
        if packet.Delta == 0:
            packet.ClientArriveTime = time.clock_gettime_ns(time.CLOCK_REALTIME)
            packet.ServerSendTime = time.clock_gettime_ns(time.CLOCK_REALTIME)
        return packet.SerializeToString()

    async def _get_events(self, call: Call) -> bytes:
        await asyncio.Event().wait()  # only OOM events are ever sent; there are none here
        raise AssertionError("unreachable")

    async def _exec_vm_process(self, call: Call) -> bytes:
        req = sandbox_pb2.ExecVMProcessRequest.FromString(call.payload)
        try:
            proc = await asyncio.create_subprocess_exec(
                _shell(),
                "-c",
                req.command,
                stdin=asyncio.subprocess.PIPE if req.stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=VMM_TASK_ENV,
                cwd="/",
                process_group=0,  # not vmm-task's doing: lets the stand-in's close kill what it left
            )
        except OSError as exc:
            raise RpcStatus(
                Code.UNKNOWN, others(f"spawn failed error: {_io_error(exc.errno or 0)}")
            ) from None
        self._children.add(proc)
        try:
            if req.stdin:
                assert proc.stdin is not None
                try:
                    proc.stdin.write(req.stdin)
                    await proc.stdin.drain()
                    proc.stdin.close()
                    await proc.stdin.wait_closed()
                except (BrokenPipeError, ConnectionResetError):
                    # spawn_and_wait SIGKILLs a child that has not exited when a step fails.
                    kill(proc)
                    await _drain(proc, self._children)
                    text = f"failed to write stdin error: {_io_error(errno.EPIPE)}"
                    raise RpcStatus(Code.UNKNOWN, others(text)) from None
            assert proc.stdout is not None and proc.stderr is not None
            stdout, stderr, status = await asyncio.gather(proc.stdout.read(), proc.stderr.read(), proc.wait())
        except asyncio.CancelledError:
            if proc.stdin is not None:
                proc.stdin.close()  # dropped with the future, as vmm-task's ChildStdin is
            orphan = asyncio.ensure_future(_drain(proc, self._children))
            self._orphans.add(orphan)
            orphan.add_done_callback(self._orphans.discard)
            raise
        self._children.discard(proc)
        exit_code = 128 - status if status < 0 else status  # Signaled(sig) → 128 + sig
        if exit_code == 0:
            return sandbox_pb2.ExecVMProcessResponse(out=lossy(stdout)).SerializeToString()
        raise RpcStatus(Code.UNKNOWN, exec_failure(req.command, exit_code, stderr))

    async def close(self) -> None:
        self.ttrpc.close()
        await self.ttrpc.wait_closed()
        for orphan in list(self._orphans):
            orphan.cancel()
        await asyncio.gather(*self._orphans, return_exceptions=True)


class KataGuest:
    """A Kata agent: ``grpc.Health`` on 1024 and, with ``console``, a plain debug console on 1026."""

    kind = "kata-agent"
    api_port = 1024

    def __init__(
        self,
        journal: Journal,
        children: Children,
        *,
        console: bool = True,
        console_port: int = 1026,
        agent_version: str = KATA_AGENT_VERSION,
        api_version: str = KATA_API_VERSION,
    ) -> None:
        self._versions = health_pb2.VersionCheckResponse(
            grpc_version=api_version, agent_version=agent_version
        )
        services: dict[str, dict[str, Handler]] = {
            HEALTH_SERVICE: {"Check": self._check, "Version": self._version}
        }
        self.ttrpc = MiniTtrpcServer(services, dialect=Dialect.RUST_09, record=_record(journal, 1024))
        self.console = KataConsole(journal, children, port=console_port) if console else None

    async def _check(self, call: Call) -> bytes:
        health_pb2.CheckRequest.FromString(call.payload)
        return health_pb2.HealthCheckResponse(
            status=health_pb2.HealthCheckResponse.SERVING
        ).SerializeToString()

    async def _version(self, call: Call) -> bytes:
        health_pb2.CheckRequest.FromString(call.payload)
        return self._versions.SerializeToString()

    async def close(self) -> None:
        self.ttrpc.close()
        await self.ttrpc.wait_closed()
