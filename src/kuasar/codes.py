"""gRPC status codes as ttrpc carries them in ``Status.code``.

Layer contract: bottom leaf. Imports nothing (no ``enum`` either: it costs ``kuasarctl exec``'s
start-up ≈ 4 ms, issue 12), so any layer (``errors``, the neutral tar/copy modules, the agent, the
CLI) can name a code without importing ``kuasar.ttrpc`` and the protobuf runtime behind it. As in
``errno``, each code is a plain ``int`` attribute of :class:`Code`; :data:`CODE_NAMES` spells them.
``kuasar.ttrpc.Code`` and ``kuasar.ttrpc.codes.Code`` re-export this class.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final


class Code:
    """The gRPC status codes (same numbering as google.rpc.Code), as plain ``int`` constants."""

    OK: Final = 0
    CANCELLED: Final = 1
    UNKNOWN: Final = 2
    INVALID_ARGUMENT: Final = 3
    DEADLINE_EXCEEDED: Final = 4
    NOT_FOUND: Final = 5
    ALREADY_EXISTS: Final = 6
    PERMISSION_DENIED: Final = 7
    RESOURCE_EXHAUSTED: Final = 8
    FAILED_PRECONDITION: Final = 9
    ABORTED: Final = 10
    OUT_OF_RANGE: Final = 11
    UNIMPLEMENTED: Final = 12
    INTERNAL: Final = 13
    UNAVAILABLE: Final = 14
    DATA_LOSS: Final = 15
    UNAUTHENTICATED: Final = 16


#: Each code's name by number, in numeric order (``{5: "NOT_FOUND", ...}``).
CODE_NAMES: dict[int, str] = {value: name for name, value in vars(Code).items() if name.isupper()}
