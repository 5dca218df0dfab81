"""gRPC status codes as ttrpc carries them in ``Status.code``.

Layer contract: bottom leaf. Imports nothing from kuasar (and no protobuf, no asyncio), so any layer
(``errors``, the neutral tar/copy modules, the agent, the CLI) can name a code without importing
``kuasar.ttrpc`` and the protobuf runtime behind it. ``kuasar.ttrpc.Code`` and
``kuasar.ttrpc.codes.Code`` re-export this class.
"""

from __future__ import annotations

import enum


class Code(enum.IntEnum):
    """The gRPC status codes (same numbering as google.rpc.Code)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16
