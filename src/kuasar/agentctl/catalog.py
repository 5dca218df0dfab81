"""The services ``kuasarctl agent`` can call, and how a name on the command line finds its method.

Layer contract: ``kuasar.agentctl``; the generated stubs and protobuf descriptors only (no IO but
reading a ``--descriptor-set`` file's bytes, which the caller hands in).

Name forms, tried in order: ``grpc.Health/Check`` (also ``/grpc.Health/Check`` and
``grpc.Health.Check``), ``Health/Check`` (a unique service short name), kata-agent-ctl's spellings
(``GetIptables``), and a bare ``Check``. A bare name may match several services; the guest kind
picks among them (:meth:`Catalog.choose`): only the services that kind serves count, and when
several still have the name, ``grpc.Health`` wins (``Check`` and ``Version`` as kata-agent-ctl means
them); otherwise the name is ambiguous and the user names the service.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kuasar.errors import UsageError

if TYPE_CHECKING:
    from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
    from google.protobuf.message import Message

#: Guest kinds as ``kuasar.session.GuestKind`` values name them.
KUASAR_AGENT, VMM_TASK, KATA_AGENT = "kuasar-agent", "vmm-task", "kata-agent"

HEALTH = "grpc.Health"

#: kata-agent-ctl's command names whose spelling differs from the method's.
KATA_ALIASES = {"GetIptables": "GetIPTables", "SetIptables": "SetIPTables"}

#: (stub module, service short name, who serves it, guest kinds that serve it), in preference order.
_BUILTIN = (
    ("health_pb2", "Health", "Kata agent, kuasar-agent", (KATA_AGENT, KUASAR_AGENT)),
    ("agent_pb2", "Agent", "kuasar-agent", (KUASAR_AGENT,)),
    ("sandbox_pb2", "SandboxService", "Kuasar vmm-task, kuasar-agent", (VMM_TASK, KUASAR_AGENT)),
    ("kata_agent_pb2", "AgentService", "Kata agent", (KATA_AGENT,)),
    ("containerd_task_v2_pb2", "Task", "Kuasar vmm-task, containerd shims", (VMM_TASK,)),
    ("containerd_streaming_pb2", "Streaming", "Kuasar vmm-task", (VMM_TASK,)),
)
#: Stubs loaded only so ``google.protobuf.Any`` fields can name their types in JSON.
_ANY_TYPES = ("containerd_transfer_pb2", "containerd_events_ttrpc_pb2", "containerd_task_events_pb2")


@dataclass(frozen=True, slots=True)
class Service:
    """One service we have a descriptor for.

    Attributes:
        descriptor: its protobuf descriptor.
        origin: who serves it, for ``--list``.
        kinds: the guest kinds that serve it; empty: unknown (a ``--descriptor-set`` service).
    """

    descriptor: ServiceDescriptor
    origin: str
    kinds: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.descriptor.full_name

    @property
    def methods(self) -> tuple[Method, ...]:
        return tuple(Method(m, self) for m in self.descriptor.methods)

    def served_by(self, kind: str | None) -> bool:
        """Whether a guest of ``kind`` serves it (``None`` or an unnamed kind: assume it may)."""
        return not self.kinds or kind not in (KUASAR_AGENT, VMM_TASK, KATA_AGENT) or kind in self.kinds


@dataclass(frozen=True, slots=True)
class Method:
    """One callable method."""

    descriptor: MethodDescriptor
    service: Service

    @property
    def name(self) -> str:
        return self.descriptor.name

    @property
    def path(self) -> str:
        """``service/method``, as ``--json`` and the messages name it."""
        return f"{self.service.name}/{self.name}"

    @property
    def client_streaming(self) -> bool:
        return bool(self.descriptor.client_streaming)

    @property
    def server_streaming(self) -> bool:
        return bool(self.descriptor.server_streaming)

    @property
    def kind(self) -> str:
        """``unary``, ``server-streaming``, ``client-streaming`` or ``bidi``."""
        shapes = ("unary", "server-streaming", "client-streaming", "bidi")
        return shapes[2 * self.client_streaming + self.server_streaming]

    def request_type(self) -> type[Message]:
        from google.protobuf import message_factory

        return message_factory.GetMessageClass(self.descriptor.input_type)

    def response_type(self) -> type[Message]:
        from google.protobuf import message_factory

        return message_factory.GetMessageClass(self.descriptor.output_type)


class UnknownMethod(UsageError):
    """No service we know has a method by that name."""


class AmbiguousMethod(UsageError):
    """Several services the guest may serve have a method by that name."""


class Catalog:
    """The services we can call, in preference order.

    Args:
        services: the services; the first of several with one full name wins.
    """

    def __init__(self, services: Iterable[Service]) -> None:
        seen: dict[str, Service] = {}
        for service in services:
            seen.setdefault(service.name, service)
        self.services: tuple[Service, ...] = tuple(seen.values())

    @classmethod
    def builtin(cls) -> Catalog:
        """Every service whose descriptor kuasar-py ships."""
        import importlib

        for module in _ANY_TYPES:
            importlib.import_module(f"kuasar.proto.{module}")
        services = []
        for module, short, origin, kinds in _BUILTIN:
            stub = importlib.import_module(f"kuasar.proto.{module}")
            services.append(Service(stub.DESCRIPTOR.services_by_name[short], origin, kinds))
        return cls(services)

    def with_descriptor_set(self, data: bytes, source: str) -> Catalog:
        """This catalogue plus the services of a serialized ``FileDescriptorSet``
        (``protoc --include_imports --descriptor_set_out=FILE``), in a pool of their own.

        Raises:
            UsageError: the bytes are not a descriptor set whose files build (names ``source``).
        """
        from google.protobuf import descriptor_pb2, descriptor_pool
        from google.protobuf.message import DecodeError

        files = descriptor_pb2.FileDescriptorSet()
        try:
            files.ParseFromString(data)
        except DecodeError as exc:
            raise UsageError(f"{source}: not a protobuf FileDescriptorSet ({exc})") from None
        if not files.file:
            raise UsageError(f"{source}: the descriptor set holds no .proto file")
        pool = descriptor_pool.DescriptorPool()
        known = {proto.name for proto in files.file}
        added: set[str] = set()
        services: list[Service] = []
        try:
            for proto in files.file:
                for dependency in proto.dependency:
                    if dependency not in known and dependency not in added:
                        # a well-known file the set left out (protoc without --include_imports)
                        _load_well_known(dependency)
                        default = descriptor_pool.Default().FindFileByName(dependency)
                        pool.AddSerializedFile(default.serialized_pb)
                        added.add(dependency)
                built = pool.AddSerializedFile(proto.SerializeToString())
                services.extend(
                    Service(s, f"--descriptor-set {source}") for s in built.services_by_name.values()
                )
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"{source}: cannot build its descriptors: {exc}") from None
        return Catalog([*self.services, *services])

    # -- lookup ----------------------------------------------------------------------------------

    def service(self, name: str) -> Service:
        """A service by full name or unique short name.

        Raises:
            UsageError: no such service (with the closest names).
        """
        text = name.strip("/")
        for service in self.services:
            if service.name == text:
                return service
        short = [s for s in self.services if s.name.rpartition(".")[2] == text]
        if len(short) == 1:
            return short[0]
        if short:
            raise UsageError(f"service name {name!r} is ambiguous: " + ", ".join(s.name for s in short))
        raise UsageError(
            f"unknown service {name!r}" + _closest(text, [s.name for s in self.services]),
            hints=["kuasarctl agent --list shows every service and method."],
        )

    def candidates(self, name: str) -> tuple[Method, ...]:
        """Every method ``name`` may mean, in preference order.

        Raises:
            UnknownMethod: none (the message lists the closest names).
        """
        text = name[1:] if name.startswith("/") else name
        service_part, sep, method_part = text.rpartition("/")
        if not sep and "." in text:
            service_part, sep, method_part = text.rpartition(".")
        if sep:
            services = [s for s in self.services if s.name == service_part]
            if not services:
                services = [s for s in self.services if s.name.rpartition(".")[2] == service_part]
        else:
            services, method_part = list(self.services), text
        method_part = KATA_ALIASES.get(method_part, method_part)
        found = tuple(Method(m, s) for s in services for m in s.descriptor.methods if m.name == method_part)
        if not found:
            raise UnknownMethod(
                f"unknown method {name!r}" + _closest(text, self.names()),
                hints=["kuasarctl agent --list shows every service and method."],
            )
        return found

    def choose(self, name: str, candidates: Sequence[Method], kind: str | None) -> Method:
        """The one method ``name`` means on a guest of ``kind`` (``None``: not known).

        Raises:
            AmbiguousMethod: several services the guest may serve have it, none of them grpc.Health.
        """
        if len(candidates) == 1:
            return candidates[0]
        served = [m for m in candidates if m.service.served_by(kind)] or list(candidates)
        if len(served) == 1:
            return served[0]
        health = [m for m in served if m.service.name == HEALTH]
        if health:
            return health[0]
        where = f" on a {kind} guest" if kind else ""
        raise AmbiguousMethod(
            f"method name {name!r} is ambiguous{where}: " + ", ".join(m.path for m in served),
            hints=[f"Name the service, e.g. -c '{served[0].path} ...'."],
        )

    def needs_kind(self, name: str, candidates: Sequence[Method]) -> bool:
        """Whether the method :meth:`choose` picks among ``candidates`` depends on the guest kind."""
        picks: set[str] = set()
        for kind in (None, KUASAR_AGENT, VMM_TASK, KATA_AGENT):
            try:
                picks.add(self.choose(name, candidates, kind).path)
            except AmbiguousMethod:
                picks.add("")
        return len(picks) > 1 or "" in picks

    def names(self) -> list[str]:
        """Every method's full and bare name (for suggestions and completion), sorted, unique."""
        names = {m.path for s in self.services for m in s.methods}
        names |= {m.name for s in self.services for m in s.methods}
        return sorted(names | set(KATA_ALIASES))


def _load_well_known(name: str) -> None:
    """Import the stub of a ``google/protobuf/*.proto`` file, so the default pool has it."""
    import importlib

    stem = name.removeprefix("google/protobuf/").removesuffix(".proto")
    if name.startswith("google/protobuf/") and stem.isidentifier():
        with contextlib.suppress(ImportError):
            importlib.import_module(f"google.protobuf.{stem}_pb2")


def _closest(text: str, names: Sequence[str]) -> str:
    folded = {name.lower(): name for name in names}
    exact = [folded[text.lower()]] if text.lower() in folded else []
    bare = {name.rpartition("/")[2]: name for name in names}
    close = difflib.get_close_matches(text, names, n=4, cutoff=0.6)
    close += difflib.get_close_matches(text, list(bare), n=4, cutoff=0.6)
    ordered = list(dict.fromkeys(exact + close))[:4]
    return f" (did you mean: {', '.join(ordered)}?)" if ordered else ""
