"""A local sandbox's state record (``sandbox.json``) and what it says about the sandbox's health.

Layer contract: host side, neutral: stdlib only, filesystem and ``/proc`` only (no sockets, no
asyncio), nothing from kuasar. The supervisor writes the record; ``kuasar.sandbox.local``
and ``kuasarctl ps`` read it through :func:`read_state` and :func:`sandbox_status`, never through the
supervisor's internals.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from dataclasses import asdict, dataclass

STATE_FILE = "sandbox.json"
#: The token in a supervisor's command line (``python -m kuasar.sandbox.supervisor``).
SUPERVISOR_MODULE = "kuasar.sandbox.supervisor"


@dataclass(frozen=True, slots=True)
class SandboxState:
    """What ``sandbox.json`` records about a local sandbox.

    Attributes:
        id: the sandbox ID.
        kind: ``"local"`` (an agent process), or ``"qemu"`` (a real kernel under QEMU).
        supervisor_pid: the supervisor (the VMM stand-in) process.
        agent_pid: the guest's host process: the ``kuasar-agent`` process, or QEMU.
        created: when it started (``time.time()``).
        debug_console: whether the agent serves the debug console.
        agent_api: whether the agent serves its API.
        namespaces: whether the agent runs in its own namespaces.
        agent_exit_status: the agent's exit status once it exited on its own (else None).
        agent_exit_signal: the signal that killed the agent (else None).
        agent_exited: when the agent exited (``time.time()``), or None while it runs.
        accel: a QEMU guest's accelerator (``tcg`` or ``kvm``); empty for local sandboxes.
        device_pid: a QEMU guest's vsock device process (0: none).
        kernel: a QEMU guest's kernel release.
        starting: True in the record the supervisor writes before its guest is up (so ``stop`` can
            find the supervisor during a VM's boot); the ready record replaces it.
        vsock_cid: a QEMU guest's CID when it has the kernel's vhost-vsock device (``vsock://CID:PORT``
            reaches it directly; ``task.socket`` is then a proxy to it); 0 behind our own device.
    """

    id: str
    kind: str
    supervisor_pid: int
    agent_pid: int
    created: float
    debug_console: bool
    agent_api: bool
    namespaces: bool
    agent_exit_status: int | None = None
    agent_exit_signal: int | None = None
    agent_exited: float | None = None
    accel: str = ""
    device_pid: int = 0
    kernel: str = ""
    vsock_cid: int = 0
    starting: bool = False


_FIELDS = frozenset(field.name for field in dataclasses.fields(SandboxState))


def write_state(directory: str, state: SandboxState) -> None:
    """Replace ``directory``'s record atomically (write, then rename)."""
    path = os.path.join(directory, STATE_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as file:
        json.dump(asdict(state), file)
    os.replace(tmp, path)


def read_state(directory: str) -> SandboxState | None:
    """The recorded state, or None when there is none or it does not parse.

    Keys this version does not know are ignored, and fields added since a record was written take
    their defaults, so records survive upgrades in both directions.
    """
    try:
        with open(os.path.join(directory, STATE_FILE), encoding="utf-8") as file:
            data = json.load(file)
        return SandboxState(**{key: value for key, value in data.items() if key in _FIELDS})
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def is_supervisor(pid: int) -> bool:
    """True when ``pid`` is a live local-sandbox supervisor (its command line says so: no stale PID)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return SUPERVISOR_MODULE.encode() in file.read()
    except OSError:
        return False


def exit_text(status: int | None, signal_number: int | None, kind: str = "local") -> str:
    """``agent exited with status 137``; a death by signal N reads as status 128+N plus its name.
    For a QEMU guest it is QEMU's exit (status 0: the guest powered off, or panicked)."""
    who = "QEMU" if kind == "qemu" else "agent"
    if signal_number:
        try:
            name = signal.Signals(signal_number).name
        except ValueError:
            name = f"signal {signal_number}"
        return f"{who} exited with status {128 + signal_number} (killed by {name})"
    if kind == "qemu" and status == 0:
        return "QEMU exited with status 0 (the guest powered off or its kernel panicked)"
    return f"{who} exited with status {status}"


@dataclass(frozen=True, slots=True)
class SandboxStatus:
    """One sandbox's health as ``kuasarctl ps`` shows it.

    Attributes:
        kind: ``"local"``, ``"qemu (tcg)"`` / ``"qemu (kvm)"``, or the directory layout when there is
            no record (``"kuasar-vmm"``...).
        state: ``starting`` (the supervisor waits for its guest), ``running``, ``unresponsive``
            (the VMM accepts, the guest does not answer), ``agent-exited`` (the VMM runs, its agent
            is gone), ``vm-exited`` (a QEMU guest's QEMU exited; the supervisor waits to be
            stopped) or ``dead`` (nothing accepts).
        reason: why it is not running, in words (empty when it is).
        created: when it started (the record's time, else the directory's mtime), or None.
        supervisor_pid: the local sandbox's supervisor, when recorded.
        agent_pid: the local sandbox's agent, when recorded.
    """

    kind: str
    state: str
    reason: str
    created: float | None
    supervisor_pid: int | None
    agent_pid: int | None


def sandbox_status(directory: str, layout: str, reachable: str) -> SandboxStatus:
    """Combine ``directory``'s record (if any) and ``/proc`` with a probe's verdict.

    Args:
        directory: the sandbox directory.
        layout: its layout when it has no record (``SandboxRef.layout``).
        reachable: the probe of the agent API port: ``"yes"`` (the guest accepted), ``"vmm"`` (the VMM
            accepted, the guest did not) or ``"no"`` (the socket refused).

    Returns:
        The status; it never raises.
    """
    record = read_state(directory)
    created: float | None
    if record is not None:
        created = record.created
    else:
        try:
            created = os.stat(directory).st_mtime
        except OSError:
            created = None
    state, reason = "running", ""
    if record is not None and not is_supervisor(record.supervisor_pid):
        state, reason = "dead", f"the sandbox supervisor (PID {record.supervisor_pid}) is not running"
    elif record is not None and record.starting:
        state, reason = (
            "starting",
            "the guest is booting" if record.kind == "qemu" else "the agent is starting",
        )
    elif record is not None and record.agent_exited is not None:
        state = "vm-exited" if record.kind == "qemu" else "agent-exited"
        reason = exit_text(record.agent_exit_status, record.agent_exit_signal, record.kind)
    elif reachable == "vmm" and record is not None and not record.agent_api:
        reason = "console only (started with --no-agent-api)"
    elif reachable == "vmm":
        state, reason = "unresponsive", "the VMM accepts, but nothing answers on the agent's vsock port"
    elif reachable == "no":
        state, reason = "dead", "the sandbox socket refuses connections"
    return SandboxStatus(
        kind=(f"{record.kind} ({record.accel})" if record.accel else record.kind) if record else layout,
        state=state,
        reason=reason,
        created=created,
        supervisor_pid=record.supervisor_pid if record is not None else None,
        agent_pid=record.agent_pid if record is not None else None,
    )
