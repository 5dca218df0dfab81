"""The guest session: one object that probes a guest once, knows what it is talking to (our
``kuasar-agent``, a stock Kuasar ``vmm-task``, a Kata agent, or nothing), and reaches it by whichever
path it has — our agent API, the debug console, or ``ExecVMProcess`` — with a diagnosis an operator
can act on when none answers.

Layer contract: above ``kuasar.transport``, ``kuasar.ttrpc``, ``kuasar.console`` and ``kuasar.guest``;
below ``kuasar.sandbox`` and ``kuasar.ctl``. Protocol decisions live in the sans-IO modules
(``_probe``: guest kinds and the probe; ``_diagnose``: what to say; ``_vm_process``: ExecVMProcess's
command and errors); ``_async`` drives them on asyncio. Importing this package imports no asyncio
and no protobuf: the names below load their driver on first use.
"""

from __future__ import annotations

from kuasar.session._probe import ExecPath, GuestKind, GuestTarget

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from kuasar.session._async import Session, identify
    from kuasar.ttrpc import Client as Connection  # the type of Session.guest.client (typing only)
    from kuasar.ttrpc.blocking import BlockingClient as AgentConnection  # BlockingSession's

__all__ = ["ExecPath", "GuestKind", "GuestTarget", "Session", "identify"]
if TYPE_CHECKING:
    __all__ += ["AgentConnection", "Connection"]


def __getattr__(name: str) -> Any:
    if name in ("Session", "identify"):
        from kuasar.session import _async

        return getattr(_async, name)
    raise AttributeError(f"module 'kuasar.session' has no attribute {name!r}")
