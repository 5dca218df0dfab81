"""Auto values: the IDs and defaults a request gets when the command leaves them out, sans-IO.

Layer contract: ``kuasar.agentctl``; protobuf messages (via ``compose``) and the stdlib.

kata-agent-ctl's rules, kept: ``cid`` and ``sid`` are generated once per run (64 hex digits) and
reused by every later command; ``exec_id`` defaults to the ``cid``; ``cid=``/``sid=``/``exec_id=``
on a command set them for it and the commands after it. Its surprises, dropped: an auto value
never overwrites a field the arguments set (kata-agent-ctl's overwrote JSON values), and with
``-n`` nothing is generated or defaulted at all (kata-agent-ctl still filled ``sandbox_id``);
an explicit ``cid=`` still fills the ID fields with ``-n``, since the user named it.

Each filled field is reported (``Filled``) so the CLI can print it.
"""

from __future__ import annotations

import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kuasar.agentctl.fields import find_field

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from kuasar.agentctl.compose import Request

CID, SID, EXEC_ID = "cid", "sid", "exec_id"
#: ReadStdout/ReadStderr's ``len`` when none is given (kata-agent-ctl sends 0, which reads nothing).
READ_LEN = 4096

_KATA = "grpc.AgentService/"
_TASK = "containerd.task.v2.Task/"
_AGENT = "kuasar.agent.v1.Agent/"
_IDS = (("container_id", CID), ("exec_id", EXEC_ID))
_CONTAINER = (("container_id", CID),)

_KATA_PROCESS = (
    "CreateContainer",
    "ExecProcess",
    "WaitProcess",
    "CloseStdin",
    "TtyWinResize",
    "ReadStdout",
    "ReadStderr",
    "WriteStdin",
    "SignalProcess",
)
_KATA_CONTAINER = (
    "StartContainer",
    "RemoveContainer",
    "StatsContainer",
    "PauseContainer",
    "ResumeContainer",
    "UpdateContainer",
)
_TASK_BY_ID = (
    "State",
    "Create",
    "Start",
    "Delete",
    "Pids",
    "Pause",
    "Resume",
    "Checkpoint",
    "Kill",
    "ResizePty",
    "CloseIO",
    "Update",
    "Wait",
    "Stats",
    "Connect",
    "Shutdown",
)
_AGENT_BY_ID = ("CreateContainer", "StartContainer", "StopContainer", "RemoveContainer")

#: method path -> (field, slot) pairs filled from the IDs.
ID_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    **{_KATA + m: _IDS for m in _KATA_PROCESS},
    **{_KATA + m: _CONTAINER for m in _KATA_CONTAINER},
    _KATA + "CreateSandbox": (("sandbox_id", SID),),
    **{_TASK + m: (("id", CID),) for m in _TASK_BY_ID},
    _TASK + "Exec": (("id", CID), ("exec_id", EXEC_ID)),
    **{_AGENT + m: (("id", CID),) for m in _AGENT_BY_ID},
    _AGENT + "Logs": (("container_id", CID),),
}


#: method path -> the field ``--bundle-dir``'s config.json fills.
BUNDLE_FIELDS = {_KATA + "ExecProcess": "process", _KATA + "CreateContainer": "OCI"}


def _now_ns() -> int:
    return time.time_ns()


#: method path -> (field, value maker) defaults.
DEFAULTS: dict[str, tuple[tuple[str, Callable[[], Any]], ...]] = {
    _KATA + "SignalProcess": (("signal", lambda: int(signal.SIGKILL)),),
    _TASK + "Kill": (("signal", lambda: int(signal.SIGKILL)),),
    _KATA + "ReadStdout": (("len", lambda: READ_LEN),),
    _KATA + "ReadStderr": (("len", lambda: READ_LEN),),
    _KATA + "GetGuestDetails": (("mem_block_size", lambda: True), ("mem_hotplug_probe", lambda: True)),
    _KATA + "SetGuestDateTime": (
        ("Sec", lambda: _now_ns() // 10**9),
        ("Usec", lambda: _now_ns() // 1000 % 10**6),
    ),
    "grpc.SandboxService/SyncClock": (("ClientSendTime", _now_ns),),
}


def random_id() -> str:
    """A container or sandbox ID as kata-agent-ctl generates them: 64 random hex digits."""
    return secrets.token_hex(32)


@dataclass(frozen=True, slots=True)
class Filled:
    """One field an auto value filled."""

    field: str
    value: Any
    #: where it came from: ``generated cid``, ``cid``, ``default``, ...
    source: str


@dataclass
class AutoValues:
    """The run's IDs, shared by its commands.

    Attributes:
        enabled: ``False`` with ``-n``: nothing generated, no defaults.
        slots: the current ``cid``, ``sid`` and ``exec_id`` (explicit or generated).
    """

    enabled: bool = True
    slots: dict[str, str] = field(default_factory=dict)
    #: ``--bundle-dir``'s ``config.json`` (root path made absolute): Kata's ExecProcess takes its
    #: ``process``, CreateContainer the whole spec (``OCI``), as kata-agent-ctl's do.
    bundle: dict[str, Any] | None = None
    _generated: set[str] = field(default_factory=set)

    def learn(self, given: dict[str, str]) -> None:
        """Take ``cid=``/``sid=``/``exec_id=`` from a command (they hold for later commands too)."""
        for name, value in given.items():
            self.slots[name] = value
            self._generated.discard(name)
        if CID in given and EXEC_ID not in given and EXEC_ID in self._generated:
            self.slots.pop(EXEC_ID, None)  # derived from the old cid: derive it again
            self._generated.discard(EXEC_ID)

    def slot(self, name: str) -> tuple[str, str] | None:
        """The value of ``name`` and how it was found, generating it when allowed."""
        if name in self.slots:
            how = (
                ("exec_id = cid" if name == EXEC_ID else f"generated {name}")
                if name in self._generated
                else name
            )
            return self.slots[name], how
        if not self.enabled:
            return None
        if name == EXEC_ID:
            found = self.slot(CID)
            if found is None:
                return None
            self.slots[EXEC_ID] = found[0]
            self._generated.add(EXEC_ID)
            return found[0], "exec_id = cid"
        self.slots[name] = random_id()
        self._generated.add(name)
        return self.slots[name], f"generated {name}"

    def fill(self, request: Request, messages: list[Message] | None = None) -> list[Filled]:
        """Fill the empty ID and defaulted fields of the first message; return what was filled.

        Args:
            request: the composed request (its slots are learnt, its explicit fields left alone).
            messages: the messages to fill (default: ``request.messages``; the runner passes
                copies, so every run of a repeated command gets fresh defaults).
        """
        self.learn(request.slots)
        messages = request.messages if messages is None else messages
        if not messages:
            return []
        message = messages[0]
        path = request.method.path
        filled: list[Filled] = []
        for name, slot in ID_FIELDS.get(path, ()):
            if not self._open(message, name, request):
                continue
            found = self.slot(slot) if (self.enabled or slot in self.slots) else None
            if found is not None:
                setattr(message, name, found[0])
                filled.append(Filled(name, found[0], found[1]))
        if self.enabled:
            for name, make in DEFAULTS.get(path, ()):
                if self._open(message, name, request):
                    value = make()
                    setattr(message, name, value)
                    filled.append(Filled(name, value, "default"))
            filled.extend(self._from_bundle(path, message, request))
        return filled

    def _from_bundle(self, path: str, message: Message, request: Request) -> list[Filled]:
        from kuasar.agentctl import oci

        target = BUNDLE_FIELDS.get(path)
        if self.bundle is None or target is None or f"0:{target}" in request.explicit:
            return []
        if message.HasField(target):
            return []
        data = self.bundle if target == "OCI" else self.bundle.get("process", {})
        dropped = oci.load(getattr(message, target), data, "config.json")
        note = f"--bundle-dir config.json{' (not in Kata: ' + ', '.join(dropped) + ')' if dropped else ''}"
        return [Filled(target, "config.json", note)]

    @staticmethod
    def _open(message: Message, name: str, request: Request) -> bool:
        descriptor: Any = message.DESCRIPTOR
        fd = find_field(descriptor, name)
        if fd is None or fd.is_repeated or fd.message_type is not None:
            return False
        if f"0:{fd.name}" in request.explicit:
            return False
        return bool(getattr(message, fd.name) == fd.default_value)
