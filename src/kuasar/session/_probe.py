"""A guest as the session knows it, sans-IO: where its ports are (:class:`GuestTarget`), what
answers on its agent port (the probe's calls and how each answer is read), the guest kinds, and the
exec paths each kind offers.

Layer contract: bottom of ``kuasar.session``; ``kuasar.errors``, ``kuasar.address``,
``kuasar.config`` and (once an answer came) ``kuasar.wire`` — no asyncio, no sockets, no protobuf.
Every probe request is an empty message (empty bytes), every answer is read here
(:meth:`GuestProbe.receive_reply` / :meth:`GuestProbe.receive_error`), so drivers of any IO
model only make the calls.

The probe (design.md "Guests in the field")::

    grpc.Health/Check ── SERVING ──> kuasar.agent.v1.Agent/Ping ── OK ─────────> kuasar-agent
          │                                  └── not served ──> grpc.Health/Version ── OK ──> kata-agent
          │                                                                   └── else ──> ttrpc
          └── "grpc.Health service does not exist" / not served
                  ──> grpc.SandboxService/Check ── OK ──> vmm-task
                                          └── else ──> ttrpc
"""

from __future__ import annotations

from kuasar._record import Named, Record
from kuasar.address import Address, HvsockAddress, UnixAddress, parse_address, with_port
from kuasar.config import AGENT_PORT, CONSOLE_PORT
from kuasar.errors import KuasarError, RPCError, TransportError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import ClassVar, Self

#: gRPC status codes the probe reads (numbers as on the wire).
OK, _UNKNOWN, INVALID_ARGUMENT, UNIMPLEMENTED = 0, 2, 3, 12
#: grpc.health.v1 ``HealthCheckResponse.ServingStatus.SERVING``.
SERVING = 1
AGENT_SERVICE = "kuasar.agent.v1.Agent"
HEALTH_SERVICE = "grpc.Health"
SANDBOX_SERVICE = "grpc.SandboxService"


class GuestTarget(Record):
    """Where a guest's ports are.

    Attributes:
        api: the agent API address (port 1024), or ``None`` when the target has none.
        console: the debug console address.
        label: how messages name it (a sandbox ID or the address).
    """

    api: Address | None
    console: Address
    label: str

    @classmethod
    def for_socket(cls, path: str, *, console_port: int | None = None, label: str = "") -> GuestTarget:
        """A sandbox's hybrid vsock socket (``ROOT/ID/task.socket`` or ``task.vsock``)."""
        return cls(
            HvsockAddress(path, AGENT_PORT),
            HvsockAddress(path, console_port or CONSOLE_PORT),
            f"{label} ({path})" if label else path,
        )

    @classmethod
    def for_address(cls, text: str, *, console_port: int | None = None) -> GuestTarget:
        """An address string; a port in it names the console when ``console_port`` is not given."""
        address = parse_address(text)
        console = address
        if console_port is not None or not isinstance(address, HvsockAddress):
            console = with_port(address, console_port or CONSOLE_PORT)
        api = (
            None if isinstance(address, UnixAddress) and address.abstract else with_port(address, AGENT_PORT)
        )
        return cls(api, console, text)

    @classmethod
    def agent_only(cls, address: Address) -> GuestTarget:
        """An agent port alone, to probe (its console address is the same: never dialled)."""
        return cls(address, address, str(address))


class GuestKind(Named):
    """What serves a guest's agent port (vsock 1024)."""

    #: Our agent: every path, exact bytes.
    KUASAR_AGENT: ClassVar[GuestKind]
    #: A stock Kuasar guest: ``grpc.SandboxService`` (ExecVMProcess), its debug console with task.debug.
    VMM_TASK: ClassVar[GuestKind]
    #: A Kata agent: ``grpc.Health``, ``grpc.AgentService``; a plain debug console on its own vport.
    KATA_AGENT: ClassVar[GuestKind]
    #: A ttrpc server we cannot name.
    TTRPC: ClassVar[GuestKind]
    #: Nothing answered on the agent port.
    NONE: ClassVar[GuestKind]


GuestKind.define(
    KUASAR_AGENT="kuasar-agent", VMM_TASK="vmm-task", KATA_AGENT="kata-agent", TTRPC="ttrpc", NONE="none"
)


class ExecPath(Named):
    """A way to run a command in a guest."""

    #: ``kuasar.agent.v1.Agent/Exec``: streams, stderr apart, PTY and resize, signals.
    API: ClassVar[ExecPath]
    #: The debug console (``KSR_MODE exec`` + the marker wrapper): streams, stderr merged.
    CONSOLE: ClassVar[ExecPath]
    #: ``grpc.SandboxService/ExecVMProcess``: one shot; output when the command ends.
    VM_PROCESS: ClassVar[ExecPath]


ExecPath.define(API="api", CONSOLE="console", VM_PROCESS="exec-vm-process")


class Call(Record):
    """One probe call; its request is always the empty message."""

    service: str
    method: str


class Answer(Record):
    """How a probe call ended.

    Attributes:
        code: the status code (``OK`` = 0).
        message: the status message.
        serving: for ``grpc.Health/Check`` answered OK: whether the status was SERVING.
    """

    code: int
    message: str = ""
    serving: bool = False


def not_served(answer: Answer) -> bool:
    """The server says it has no such service or method (Go, Rust 0.5 and Rust ≥0.7 texts)."""
    if answer.code == UNIMPLEMENTED:
        return True
    return answer.code == INVALID_ARGUMENT and "does not exist" in answer.message


_CHECK = Call(HEALTH_SERVICE, "Check")
_PING = Call(AGENT_SERVICE, "Ping")
_VERSION = Call(HEALTH_SERVICE, "Version")
_SANDBOX_CHECK = Call(SANDBOX_SERVICE, "Check")


class GuestProbe:
    """The probe as a state machine: ``next_call()`` → the driver makes it → ``receive(answer)``,
    until ``kind`` is set. A driver that cannot reach a ttrpc server at all calls ``unreachable()``.
    """

    def __init__(self) -> None:
        self._pending: Call | None = _CHECK
        self.kind: GuestKind | None = None
        self.answers: list[tuple[Call, Answer]] = []
        #: Why nothing answered, when ``kind`` is ``NONE``.
        self.error: TransportError | None = None

    def next_call(self) -> Call | None:
        """The call to make now, or ``None`` once the kind is known."""
        return self._pending

    def ahead(self) -> Call | None:
        """A call a driver may send together with :meth:`next_call`'s, before its answer, to save a
        round trip: ``Agent/Ping`` with the first ``Health/Check`` (our agent, the common guest,
        answers both). It stays a guess: it is the next call only if the answers lead to it, and
        a driver drops its answer otherwise."""
        return _PING if self._pending == _CHECK and not self.answers else None

    def unreachable(self, error: TransportError | None = None) -> None:
        """Nothing answered on the agent port (dial or handshake failed, or no ttrpc there)."""
        self._pending = None
        self.kind = GuestKind.NONE
        self.error = error

    def receive_reply(self, payload: bytes) -> None:
        """The pending call answered OK with ``payload``."""
        call = self._pending
        serving = call == _CHECK and _health_status(payload) == SERVING
        self.receive(Answer(OK, serving=serving))

    def receive_error(self, error: KuasarError) -> None:
        """The pending call failed: a status is an answer; anything else on the first call means
        no ttrpc server answers there (the port accepted, then closed, stalled or spoke garbage)."""
        if isinstance(error, RPCError):
            self.receive(Answer(error.code, error.message))
        elif not self.answers:
            self.unreachable(error if isinstance(error, TransportError) else TransportError(str(error)))
        else:
            self.receive(Answer(_UNKNOWN, str(error)))

    def receive(self, answer: Answer) -> None:
        """The answer to :meth:`next_call`'s call."""
        call = self._pending
        if call is None:
            raise RuntimeError("the probe is already finished")
        self.answers.append((call, answer))
        self._pending, self.kind = self._step(call, answer)

    @staticmethod
    def _step(call: Call, answer: Answer) -> tuple[Call | None, GuestKind | None]:
        ok = answer.code == OK
        if call == _CHECK:
            if ok and answer.serving:
                return _PING, None
            return (_SANDBOX_CHECK, None) if not_served(answer) else (None, GuestKind.TTRPC)
        if call == _PING:
            return (None, GuestKind.KUASAR_AGENT) if ok else (_VERSION, None)
        if call == _VERSION:
            return None, GuestKind.KATA_AGENT if ok else GuestKind.TTRPC
        return None, GuestKind.VMM_TASK if ok else GuestKind.TTRPC


class RawPayload:
    """A message that is its bytes: what the probe sends (empty) and what it reads back."""

    def __init__(self, data: bytes = b"") -> None:
        self.data = data

    def SerializeToString(self) -> bytes:
        return self.data

    @classmethod
    def FromString(cls, data: bytes, /) -> Self:
        return cls(data)


def exec_paths(kind: GuestKind) -> tuple[ExecPath, ...]:
    """The exec paths to try for ``kind``, best first (the console is tried only if it answers)."""
    if kind is GuestKind.KUASAR_AGENT:
        return (ExecPath.API, ExecPath.CONSOLE)
    if kind is GuestKind.VMM_TASK:
        return (ExecPath.CONSOLE, ExecPath.VM_PROCESS)
    return (ExecPath.CONSOLE,)


def console_dial(kind: GuestKind, connect_timeout: float | None) -> tuple[float | None, bool]:
    """(budget, retry) for dialing the console: retried within ``connect_timeout`` only while the
    guest may still be booting (nothing answered its agent port); one short try otherwise —
    vmm-task starts its console before its ttrpc server, so once the agent port answered, a
    closed console is final."""
    if kind is GuestKind.NONE:
        return connect_timeout, True
    return min(connect_timeout or 1.0, 1.0), False


def _health_status(payload: bytes) -> int:
    """A ``HealthCheckResponse``'s status (``kuasar.wire`` is loaded here, by a probe that got an
    answer: ``exec --console`` never needs it)."""
    from kuasar.wire import HealthCheckResponse

    return HealthCheckResponse.decode(payload).status
