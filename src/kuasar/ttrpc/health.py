"""``grpc.Health`` (``Check`` and ``Version``), as Kata's agent serves it.

Layer contract: a service module of ``kuasar.ttrpc``: returns a handler map for
:class:`kuasar.ttrpc.Server`; imports only ``kuasar`` (for the version) and the generated
``kuasar.proto.health_pb2``. kuasar-agent serves it on ``--api`` so operators and tests can probe.
"""

from __future__ import annotations

import kuasar
from kuasar.proto import health_pb2
from kuasar.ttrpc.service import CallContext, Cardinality, Handler

SERVICE = "grpc.Health"
#: Reported as ``grpc_version``: the agent API protocol version.
API_VERSION = "0.0.1"


def health_handlers(agent_version: str = kuasar.__version__) -> dict[tuple[str, str], Handler]:
    """Handlers for ``grpc.Health/Check`` (always ``SERVING``) and ``grpc.Health/Version``.

    Args:
        agent_version: reported as ``agent_version`` by ``Version``.
    """

    async def check(request: health_pb2.CheckRequest, ctx: CallContext) -> health_pb2.HealthCheckResponse:
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    async def version(request: health_pb2.CheckRequest, ctx: CallContext) -> health_pb2.VersionCheckResponse:
        return health_pb2.VersionCheckResponse(grpc_version=API_VERSION, agent_version=agent_version)

    unary = Cardinality.UNARY
    return {
        (SERVICE, "Check"): Handler(check, unary, health_pb2.CheckRequest, health_pb2.HealthCheckResponse),
        (SERVICE, "Version"): Handler(
            version, unary, health_pb2.CheckRequest, health_pb2.VersionCheckResponse
        ),
    }
