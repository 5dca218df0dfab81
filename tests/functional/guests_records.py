"""A guest stand-in as the tests see it, and what it received, read back from its journal."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass

from kuasar.proto import sandbox_pb2


def read_journal(path: str) -> list[dict[str, object]]:
    """Every complete record in the journal at ``path``, in order."""
    try:
        with open(path, encoding="utf-8") as journal:
            lines = journal.read().split("\n")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines[:-1]]  # the last piece may be a record being written


@dataclass(frozen=True, slots=True)
class ExecCall:
    """One ``grpc.SandboxService/ExecVMProcess`` request: the command string and the stdin bytes."""

    command: str
    stdin: bytes


@dataclass(frozen=True, slots=True)
class GuestCall:
    """One ttrpc Request a stand-in received."""

    port: int
    stream_id: int
    flags: int
    service: str
    method: str
    payload: bytes
    timeout_nano: int
    metadata: tuple[tuple[str, str], ...]

    @classmethod
    def from_event(cls, event: dict[str, object]) -> GuestCall:
        metadata = event["metadata"]
        assert isinstance(metadata, list)
        return cls(
            port=int(str(event["port"])),
            stream_id=int(str(event["stream_id"])),
            flags=int(str(event["flags"])),
            service=str(event["service"]),
            method=str(event["method"]),
            payload=base64.b64decode(str(event["payload"])),
            timeout_nano=int(str(event["timeout_nano"])),
            metadata=tuple((str(k), str(v)) for k, v in metadata),
        )

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.method}"

    def exec_call(self) -> ExecCall:
        req = sandbox_pb2.ExecVMProcessRequest.FromString(self.payload)
        return ExecCall(command=req.command, stdin=req.stdin)


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """One console connection that has ended.

    Attributes:
        port: the console's vsock port.
        exec_mode: vmm-task saw ``KSR_MODE exec`` first (always False on a Kata console).
        received: the first 64 KiB the host sent after the mode header (all of it on Kata).
        ended: ``"host"`` (the host's side ended first), ``"shell"``, ``"spawn"`` or ``"error: …"``.
        shell_exit: the shell's wait status as asyncio reports it (``-9`` when SIGKILLed).
    """

    port: int
    exec_mode: bool
    received: bytes
    ended: str
    shell_exit: int | None

    @classmethod
    def from_event(cls, event: dict[str, object]) -> ConsoleSession:
        code = event.get("shell_exit")
        return cls(
            port=int(str(event["port"])),
            exec_mode=bool(event["exec_mode"]),
            received=base64.b64decode(str(event["received"])),
            ended=str(event["ended"]),
            shell_exit=None if code is None else int(str(code)),
        )


class Guest:
    """One stand-in sandbox as the tests see it: where it is and what it received.

    Attributes:
        kind: one of ``KINDS``, ``"crashed"`` or ``"missing-root"``.
        root, id: pass them to kuasarctl as ``-d ROOT ID``.
        socket: the VMM's hybrid vsock socket, ``ROOT/ID/task.vsock`` (or ``task.socket``).
        console_port: the guest's debug console port, or ``None`` when it has none.
        journal: the journal file, or ``None`` for the shapes that run nothing.
        pid: the stand-in process (``run_guest``), or ``None``.
    """

    def __init__(
        self,
        kind: str,
        root: str,
        sandbox_id: str,
        socket_path: str,
        *,
        console_port: int | None = None,
        journal: str | None = None,
        pid: int | None = None,
    ) -> None:
        self.kind = kind
        self.root = root
        self.id = sandbox_id
        self.socket = socket_path
        self.console_port = console_port
        self.journal = journal
        self.pid = pid

    def __repr__(self) -> str:
        return f"Guest({self.kind!r}, root={self.root!r}, id={self.id!r})"

    @property
    def directory(self) -> str:
        return os.path.join(self.root, self.id)

    def hvsock(self, port: int = 1024) -> str:
        """``hvsock://SOCKET:PORT``."""
        return f"hvsock://{self.socket}:{port}"

    def events(self) -> list[dict[str, object]]:
        """Every journal record so far, in order."""
        return [] if self.journal is None else read_journal(self.journal)

    def mark(self) -> int:
        """A position in the journal: pass it as ``since`` to see only what came after."""
        return len(self.events())

    def calls(self, since: int = 0) -> list[GuestCall]:
        """The ttrpc Requests received (after ``since``)."""
        return [GuestCall.from_event(e) for e in self.events()[since:] if e.get("event") == "ttrpc"]

    def exec_calls(self, since: int = 0) -> list[ExecCall]:
        """The ``grpc.SandboxService/ExecVMProcess`` requests received, decoded."""
        return [c.exec_call() for c in self.calls(since) if c.method == "ExecVMProcess"]

    def consoles(self, since: int = 0) -> list[ConsoleSession]:
        """The console sessions that have ended."""
        events = self.events()[since:]
        return [ConsoleSession.from_event(e) for e in events if e.get("event") == "console-close"]
