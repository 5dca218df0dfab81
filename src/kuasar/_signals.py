"""Signal numbers and handlers for the CLI's start-up paths, without ``signal``'s enums.

Layer contract: bottom leaf; imports only ``_signal``, the C module behind ``signal``. ``import
signal`` converts every constant into an ``IntEnum`` and so loads ``enum``, ``functools`` and
``collections`` (≈ 4 ms of the ≈ 10 ms ``kuasarctl exec`` may spend over the interpreter's own
start, issue 12). The blocking drivers need only the numbers, ``signal()`` and ``set_wakeup_fd``,
which ``_signal`` provides with the same behaviour; type checkers see the ``signal`` module's
declarations. Code off those paths keeps importing ``signal``.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _impl
else:
    import _signal as _impl

SIGHUP = _impl.SIGHUP
SIGINT = _impl.SIGINT
SIGKILL = _impl.SIGKILL
SIGPIPE = _impl.SIGPIPE
SIGQUIT = _impl.SIGQUIT
SIGTERM = _impl.SIGTERM
SIGWINCH = _impl.SIGWINCH
set_wakeup_fd = _impl.set_wakeup_fd
signal = _impl.signal
