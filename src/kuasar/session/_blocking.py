"""The blocking driver of the guest session, for one-shot CLI runs: dial a guest's debug console
with the same diagnosis as the asyncio session, without an event loop.

Layer contract: ``kuasar.transport.blocking`` (dial) and the sans-IO ``_diagnose`` / ``_target``;
no asyncio, no protobuf (``kuasarctl exec --console``'s fast path).
"""

from __future__ import annotations

import socket

from kuasar.config import CONSOLE_PORT, DEFAULT_LIMITS, Limits
from kuasar.errors import TransportError
from kuasar.session._diagnose import unreachable
from kuasar.session._target import GuestTarget


def open_console(
    target: GuestTarget, *, connect_timeout: float | None = None, limits: Limits = DEFAULT_LIMITS
) -> socket.socket:
    """Dial ``target``'s debug console (retried within ``connect_timeout`` while nothing listens:
    without a probe the guest may still be booting). Returns a connected blocking socket.

    Raises:
        KuasarError: the diagnosis of what the VMM socket did (see ``kuasar.session._diagnose``).
    """
    from kuasar.transport import blocking

    try:
        return blocking.dial(target.console, limits=limits, connect_timeout=connect_timeout)
    except TransportError as exc:
        port = getattr(target.console, "port", CONSOLE_PORT)
        raise unreachable(target.label, None, exc, (0, port)) from exc
