"""Pure-asyncio ttrpc (containerd's RPC over a byte stream): client, server, unary and streaming.

Layer contract: beside ``kuasar.transport`` (never importing it): it is handed a connected
``(StreamReader, StreamWriter)``. Imports nothing from ``kuasar.transport``, ``kuasar.agent``,
``kuasar.ctl`` or ``kuasar.sandbox`` (``tests/unit/test_layers.py``). Modules, bottom up:
``codes`` and ``framing`` (sans-IO), ``service`` (handler registry types), ``_conn`` (writer lock,
inboxes, envelope), ``client``, ``server``, ``health``, ``testing``.
"""

from kuasar.errors import RPCError
from kuasar.ttrpc.client import Client, Stream
from kuasar.ttrpc.codes import Code
from kuasar.ttrpc.health import health_handlers
from kuasar.ttrpc.server import Server, ServerStream
from kuasar.ttrpc.service import CallContext, Cardinality, Handler, merge_handlers

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
