"""Handler registry types: what a service hands to :class:`kuasar.ttrpc.Server`.

Layer contract: plain data; no I/O, no protobuf import (message classes are passed in by the
service). A service module exposes ``handlers() -> dict[(service, method), Handler]``; the server
merges such maps. No dispatch by attribute name.

Handler signatures by cardinality::

    UNARY             async def f(request, ctx) -> response
    SERVER_STREAMING  async def f(request, stream, ctx) -> None      # await stream.send(msg)
    CLIENT_STREAMING  async def f(stream, ctx) -> response          # async for req in stream
    BIDI              async def f(stream, ctx) -> None
"""

from __future__ import annotations

import enum
import opcode
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple


class Cardinality(enum.Enum):
    """Which sides of a call stream messages."""

    UNARY = (False, False)
    CLIENT_STREAMING = (True, False)
    SERVER_STREAMING = (False, True)
    BIDI = (True, True)

    @property
    def client_streaming(self) -> bool:
        """The client sends a stream of messages."""
        return self.value[0]

    @property
    def server_streaming(self) -> bool:
        """The server sends a stream of messages."""
        return self.value[1]

    @classmethod
    def of(cls, client_streaming: bool, server_streaming: bool) -> Cardinality:
        """The cardinality with these streaming sides."""
        return cls((client_streaming, server_streaming))


class Handler(NamedTuple):
    """One method's implementation and its message types.

    Attributes:
        func: the coroutine function (signature by cardinality, see the module docstring).
        cardinality: which sides stream.
        request_type: the protobuf message class of requests.
        response_type: the protobuf message class of responses.
    """

    func: Callable[..., Awaitable[Any]]
    cardinality: Cardinality
    request_type: Any
    response_type: Any


@dataclass(slots=True)
class CallContext:
    """What a handler knows about its call.

    Attributes:
        service: the full service name, e.g. ``grpc.Health``.
        method: the bare method name, e.g. ``Check``.
        metadata: the request's key/value pairs in wire order (repeated keys kept).
        deadline: the call's deadline in event-loop time (``loop.time()``), or ``None``.
        stream_id: the ttrpc stream id of the call.
    """

    service: str
    method: str
    metadata: list[tuple[str, str]] = field(default_factory=list)
    deadline: float | None = None
    stream_id: int = 0

    def get_all(self, key: str) -> list[str]:
        """Every value of ``key`` (compared case-insensitively, as Go's metadata does), in order."""
        key = key.lower()
        return [v for k, v in self.metadata if k.lower() == key]


HandlerMap = Mapping[tuple[str, str], Handler]


def merge_handlers(handlers: HandlerMap | Iterable[HandlerMap]) -> dict[tuple[str, str], Handler]:
    """Merge handler maps into one. A ``(service, method)`` registered twice is an error.

    Raises:
        ValueError: a duplicate registration.
        TypeError: a malformed key or handler.
    """
    maps: Iterable[HandlerMap] = [handlers] if isinstance(handlers, Mapping) else handlers
    merged: dict[tuple[str, str], Handler] = {}
    for mapping in maps:
        for key, handler in mapping.items():
            if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, str) for k in key)):
                raise TypeError(f"handler key must be (service, method), got {key!r}")
            if not isinstance(handler, Handler):
                raise TypeError(f"handler for {key!r} must be a ttrpc.Handler, got {handler!r}")
            if key in merged:
                raise ValueError(f"duplicate ttrpc handler for /{key[0]}/{key[1]}")
            merged[key] = handler
    return merged


#: Opcodes through which a coroutine's own frame can suspend (``await``, ``async with``,
#: ``async for``): all of them yield.
_SUSPENDING = frozenset(
    opcode.opmap[name]
    for name in ("YIELD_VALUE", "GET_AWAITABLE", "BEFORE_ASYNC_WITH", "GET_AITER", "GET_ANEXT", "SEND")
    if name in opcode.opmap
)
_CO_COROUTINE = 0x80


def never_suspends(func: Callable[..., Awaitable[Any]]) -> bool:
    """True if ``func`` is an ``async def`` whose body has no ``await``, ``async with`` or
    ``async for``: its coroutine runs to the end on its first step, so a server may run it inline.

    Conservative: anything else (a ``functools.partial``, a wrapper, a plain function returning
    an awaitable) is False.
    """
    code = getattr(getattr(func, "__func__", func), "__code__", None)
    if code is None or not code.co_flags & _CO_COROUTINE:
        return False
    return not any(op in _SUSPENDING for op in code.co_code[::2])
