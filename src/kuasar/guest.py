"""A sandbox's guest agent API (ttrpc on vsock port 1024), probed in one quick try.

Layer contract: middle layer; ``kuasar.session`` (the probe), ``kuasar.ttrpc`` (client), the generated
``agent_pb2`` and ``kuasar.remote_process``. No terminals, no printing, no exit codes.

``Guest.connect`` is the guest session's probe (``kuasar.session``) for callers that want only our
agent API: one dial, no retry (a console-only guest — a stock Kuasar vmm-task, whose VMM closes
``CONNECT 1024`` without a reply — answers at once), short per-call timeouts. On failure it raises
:class:`AgentUnavailable`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from google.protobuf import empty_pb2

from kuasar.address import Address, HvsockAddress
from kuasar.config import AGENT_PORT, DEFAULT_LIMITS, Limits
from kuasar.errors import RPCError, TransportError
from kuasar.proto import agent_pb2
from kuasar.remote_process import SERVICE, CompletedProcess, RemoteProcess, run
from kuasar.ttrpc import Client, Code

#: Default budget of the one-try probe (dial + handshake + ``grpc.Health/Check``).
PROBE_TIMEOUT = DEFAULT_LIMITS.probe_timeout


class AgentUnavailable(TransportError):
    """The sandbox does not serve the agent API (or not in time)."""


def agent_address(socket_path: str, port: int = AGENT_PORT) -> HvsockAddress:
    """The hybrid vsock address of a sandbox's agent API."""
    return HvsockAddress(socket_path, port)


class Guest:
    """A connection to a guest's agent API. Use ``async with await Guest.connect(addr) as guest``.

    Args:
        client: a ttrpc client on a connection to the agent.
        address: where it is connected (for messages).
        limits: message limits for streams.
    """

    def __init__(self, client: Client, address: Address, *, limits: Limits = DEFAULT_LIMITS) -> None:
        self.client = client
        self.address = address
        self.limits = limits

    @classmethod
    async def connect(
        cls,
        address: Address,
        *,
        probe_timeout: float = PROBE_TIMEOUT,
        limits: Limits = DEFAULT_LIMITS,
    ) -> Guest:
        """Dial ``address`` once and check, with the guest session's probe, that our agent API
        answers there (``grpc.Health/Check`` SERVING and ``kuasar.agent.v1.Agent/Ping``).

        Args:
            address: the agent API address (an ``HvsockAddress`` with port 1024 for sandboxes;
                a plain address without a port gets :data:`AGENT_PORT` where one is needed).
            probe_timeout: the budget for the dial and for each probe call.
            limits: message limits.

        Raises:
            AgentUnavailable: no kuasar agent API there (refused, closed, silent, or another
                guest); its ``__cause__`` says why when the transport failed.
        """
        from kuasar.session import GuestTarget, Session

        session = await Session.open(
            GuestTarget(address, address, str(address)), probe_timeout=probe_timeout, limits=limits
        )
        if session.guest is not None:
            return session.guest
        await session.close()
        if session.api_error is not None:
            raise AgentUnavailable(f"no agent API at {address}: {session.api_error}") from session.api_error
        raise AgentUnavailable(f"no kuasar agent API at {address} ({session.kind.value} answers there)")

    @classmethod
    async def probe(
        cls, address: Address, *, probe_timeout: float = PROBE_TIMEOUT, limits: Limits = DEFAULT_LIMITS
    ) -> Guest | None:
        """:meth:`connect`, or ``None`` when there is no agent API."""
        try:
            return await cls.connect(address, probe_timeout=probe_timeout, limits=limits)
        except AgentUnavailable:
            return None

    async def __aenter__(self) -> Guest:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()

    def close(self) -> None:
        """Close the connection (running remote processes are killed by the agent)."""
        self.client.close()

    async def wait_closed(self) -> None:
        await self.client.wait_closed()

    # -- API -------------------------------------------------------------------------------------

    async def ping(self, message: str = "", *, timeout: float = 10.0) -> agent_pb2.PingResponse:  # noqa: ASYNC109
        """``Agent/Ping``: ``("pong[: message]", agent version)``."""
        return await self.client.call(
            SERVICE, "Ping", agent_pb2.PingRequest(message=message), agent_pb2.PingResponse, timeout=timeout
        )

    async def system_info(self, *, timeout: float = 10.0) -> agent_pb2.SystemInfo:  # noqa: ASYNC109
        """``Agent/GetSystemInfo``."""
        return await self.client.call(
            SERVICE, "GetSystemInfo", empty_pb2.Empty(), agent_pb2.SystemInfo, timeout=timeout
        )

    def exec(self, argv: Sequence[str], **options: Any) -> RemoteProcess:
        """A :class:`RemoteProcess` (use ``async with``); options as its constructor takes."""
        options.setdefault("limits", self.limits)
        return RemoteProcess(self.client, argv, **options)

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        check: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109
        env: Mapping[str, str] | None = None,
        cwd: str = "",
        user: str = "",
        container_id: str = "",
        on_output: Callable[[int, bytes], Awaitable[None]] | None = None,
    ) -> CompletedProcess:
        """Run ``argv`` and collect (or stream) its output (see :func:`kuasar.remote_process.run`)."""
        return await run(
            self.client,
            argv,
            input=input,
            check=check,
            timeout=timeout,
            env=env,
            cwd=cwd,
            user=user,
            container_id=container_id,
            limits=self.limits,
            on_output=on_output,
        )


def is_unimplemented(exc: BaseException) -> bool:
    """True for the status an agent without our ``kuasar.agent.v1.Agent`` service answers."""
    return isinstance(exc, RPCError) and exc.code == Code.UNIMPLEMENTED


__all__ = ["AgentUnavailable", "Guest", "agent_address", "is_unimplemented"]
