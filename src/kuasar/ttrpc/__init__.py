"""Pure-asyncio ttrpc (containerd's RPC over a byte stream): client, server, unary and streaming.

Layer contract: beside ``kuasar.transport`` (never importing it): it is handed a connected
``(StreamReader, StreamWriter)``. Imports nothing from ``kuasar.transport``, ``kuasar.agent``,
``kuasar.ctl`` or ``kuasar.sandbox`` (``tests/unit/test_layers.py``). Modules, bottom up:
``codes``, ``framing`` and ``_client_core`` (sans-IO), ``service`` (handler registry types),
``_conn`` (the joined-write frame writer, inboxes, envelope), ``client`` and ``streams``,
``server``, ``health``, ``testing``, and
``blocking`` (a client without asyncio for one-shot CLI runs). The names below load their module on
first use, so ``kuasar.ttrpc.blocking`` imports neither asyncio nor protobuf.
"""

from __future__ import annotations

import sys

from kuasar.errors import RPCError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from kuasar.ttrpc.client import Client, Stream
    from kuasar.ttrpc.codes import Code
    from kuasar.ttrpc.health import health_handlers
    from kuasar.ttrpc.server import Server, ServerStream
    from kuasar.ttrpc.service import CallContext, Cardinality, Handler, merge_handlers

_HOMES = {
    "Client": "client",
    "Stream": "client",
    "Code": "codes",
    "health_handlers": "health",
    "Server": "server",
    "ServerStream": "server",
    "CallContext": "service",
    "Cardinality": "service",
    "Handler": "service",
    "merge_handlers": "service",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    __import__(f"kuasar.ttrpc.{home}")
    return getattr(sys.modules[f"kuasar.ttrpc.{home}"], name)


__all__ = [
    "CallContext",
    "Cardinality",
    "Client",
    "Code",
    "Handler",
    "RPCError",
    "Server",
    "ServerStream",
    "Stream",
    "health_handlers",
    "merge_handlers",
]
