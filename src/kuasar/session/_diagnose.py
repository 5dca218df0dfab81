"""Why a guest cannot be reached, in words an operator can act on, sans-IO.

Layer contract: bottom of ``kuasar.session``; ``kuasar.errors`` and ``kuasar.session._probe`` only.
The drivers hand in the transport errors of the agent port and of the console port (their
``reason``), the guest kind the probe found, and what the user asked for; these functions return the
one :class:`~kuasar.errors.KuasarError` to raise, its first line naming the cause and its hints the
fix.
"""

from __future__ import annotations

from kuasar.errors import (
    REASON_DENIED,
    REASON_MISSING,
    REASON_NO_LISTENER,
    REASON_REFUSED,
    REASON_SILENT,
    ConnectError,
    KuasarError,
    TransportError,
)
from kuasar.session._probe import GuestKind

#: Kata's documented ``agent.debug_console_vport``.
KATA_CONSOLE_PORT = 1026
_ADD_TASK_DEBUG = "is the debug console enabled? add task.debug to the kernel parameters"
#: What the VMM socket itself did, most telling first: (first line, the fix).
_SOCKET_LEVEL = {
    REASON_MISSING: (
        "the sandbox socket of {label} is missing",
        "Is the sandbox (its VMM) running? `kuasarctl ps` lists them.",
    ),
    REASON_DENIED: (
        "permission denied opening the sandbox socket of {label}",
        "Run as root / with sudo: VMM sockets belong to root.",
    ),
    REASON_REFUSED: (
        "the VMM of {label} does not accept connections: the sandbox has crashed or is stopping",
        "`kuasarctl ps` shows its state; `kuasarctl sandbox stop` cleans it up.",
    ),
    REASON_SILENT: (
        "the VMM of {label} accepts connections but never answers CONNECT (hung VMM?)",
        "Check the VMM process; a slow host may need a longer --connect-timeout.",
    ),
}


def unreachable(
    label: str, api: TransportError | None, console: TransportError, ports: tuple[int, int]
) -> KuasarError:
    """Neither the agent port nor the console answered: say what the VMM socket did.

    Args:
        label: the sandbox or address, for the message.
        api: why the agent port failed (``None``: the target has no agent port).
        console: why the console port failed.
        ports: (agent port, console port), for the message.
    """
    reasons = {console.reason} | ({api.reason} if api is not None else set())
    for reason, (first, fix) in _SOCKET_LEVEL.items():
        if reason in reasons:
            return ConnectError(first.format(label=label), hints=[str(api or console), fix], reason=reason)
    if console.reason != REASON_NO_LISTENER:
        return console  # the transport's own words (e.g. a socket path too long) say it best
    return ConnectError(
        f"the VMM of {label} answers, but nothing in the guest listens on vsock port "
        + (f"{ports[0]} or {ports[1]}" if api is not None else f"{ports[1]}"),
        hints=[
            "The guest may still be booting (retry, or give a longer --connect-timeout),"
            " or it runs no agent.",
            _ADD_TASK_DEBUG,
        ],
        reason=REASON_NO_LISTENER,
    )


def console_closed(label: str, kind: GuestKind, port: int, error: TransportError) -> KuasarError:
    """The agent port answered (so the guest is up) but the console port did not."""
    if error.reason != REASON_NO_LISTENER:
        return error
    if kind is GuestKind.KATA_AGENT and port != KATA_CONSOLE_PORT:
        return ConnectError(
            f"no debug console on vsock port {port} of {label} (a Kata agent)",
            hints=[
                "A Kata agent's console listens on agent.debug_console_vport"
                f" ({KATA_CONSOLE_PORT} in Kata's docs): use -p {KATA_CONSOLE_PORT}.",
            ],
            reason=REASON_NO_LISTENER,
        )
    hints = [_ADD_TASK_DEBUG] if kind in (GuestKind.VMM_TASK, GuestKind.KUASAR_AGENT) else []
    return ConnectError(
        f"no debug console on vsock port {port} of {label} ({kind.value} answers on its agent port)",
        hints=hints,
        reason=REASON_NO_LISTENER,
    )


def interactive_needs_console(label: str) -> KuasarError:
    """A stock vmm-task without a console offers only ExecVMProcess, which has no terminal."""
    return ConnectError(
        f"an interactive shell needs the debug console: add task.debug to the kernel parameters ({label})",
        hints=[
            "Without it, one command still runs through ExecVMProcess: kuasarctl exec -t SANDBOX CMD...",
        ],
    )


def needs_api(label: str, kind: GuestKind, why: str) -> KuasarError:
    """``why`` (a flag) needs our agent API, which this guest does not serve."""
    served = "nothing answers on its agent port" if kind is GuestKind.NONE else f"it runs {kind.value}"
    return ConnectError(
        f"{why} need(s) the kuasar agent API, and {label} does not serve it ({served})",
        hints=[
            "A console-only or stock guest (Kuasar vmm-task, Kata) has no kuasar.agent.v1 service.",
            "Drop --agent/-u/--container/--tty to exec over the debug console (or ExecVMProcess).",
        ],
    )


def console_error(
    label: str, kind: GuestKind, api_error: TransportError | None, error: TransportError, port: int
) -> KuasarError:
    """The diagnosis for a console dial that failed with ``error``, knowing what the probe found."""
    if kind is GuestKind.NONE:
        return unreachable(label, api_error, error, (1024, port))
    return console_closed(label, kind, port, error)
