"""Limits and timeouts, in one frozen, validated record passed down explicitly.

Layer contract: bottom layer; imports only ``kuasar.errors``. Every size and every wait of
kuasar-py has its one home here. Nothing reads globals for a limit: whoever needs one takes a
``Limits`` argument (default ``DEFAULT_LIMITS``) and passes it on to what it calls.
"""

from __future__ import annotations

import sys

from kuasar._record import Record
from kuasar.errors import UsageError

#: ttrpc's maximum message data length (Go and Rust: ``4 << 20``); exactly this many bytes is allowed.
TTRPC_MAX_MESSAGE = 4 << 20

#: vsock port of the agent API (ttrpc) and of the debug console, as Kuasar's vmm-task uses them.
AGENT_PORT = 1024
#: The listen backlog of every listener (agent API and console, hybrid vsock servers, the vsock
#: device's host socket): a burst of connects must fit — a guest whose accept queue is full answers
#: RST, a UNIX listener EAGAIN. The kernel caps it at net.core.somaxconn.
LISTEN_BACKLOG = 4096
CONSOLE_PORT = 1025


#: The shortest lines the wire needs room for: ``CONNECT 4294967295\n`` and ``KSR_MODE exec\n``.
_SHORTEST_HANDSHAKE_LINE = len(b"CONNECT 4294967295\n")
_SHORTEST_CONSOLE_HEADER = len(b"KSR_MODE exec\n")


class Limits(Record):
    """Every bound of kuasar-py: sizes read from the wire, and every wait, host and guest side.

    One frozen record, validated on construction and passed down explicitly (no module keeps a
    timeout of its own). Sizes are in bytes or messages, waits in seconds.

    Attributes:
        max_message: largest ttrpc message data length accepted or sent.
        handshake_line: longest hybrid vsock ``OK ...`` / ``CONNECT ...`` line, newline included.
        console_header: longest ``KSR_MODE`` header line the debug console sniffs for.
        stream_queue: messages buffered per ttrpc stream before the connection's reader pauses.
        connect_timeout: total budget for dialing, including hvsock retries while the guest is not
            listening yet.
        handshake_timeout: how long a VMM-side server waits for a client's ``CONNECT`` line.
        shutdown_grace: how long a server drains in-flight calls (and a connection its unsent
            bytes) when it is closed.
        probe_timeout: how long ``kuasarctl`` waits for a guest to answer the agent API probe
            before it takes the debug console.
        call_timeout: budget of one agent API call of ``kuasarctl`` that has no ``--timeout``
            (container commands, ``info``).
        interrupt_grace: after Ctrl-C, how long ``kuasarctl exec`` waits for the remote command to
            end before it gives up on it.
        signal_send_timeout: how long sending a signal or a cancellation to the agent may take when
            a call is being abandoned.
        sandbox_start_timeout: how long ``kuasarctl sandbox run`` waits for a local sandbox to
            report ready.
        sandbox_stop_timeout: how long ``kuasarctl sandbox stop`` waits for a local sandbox's
            supervisor to exit after SIGTERM, before SIGKILL.
        agent_ready_timeout: how long a local sandbox's supervisor waits for its agent's ``ready``.
        agent_stop_grace: how long the supervisor waits for its agent after SIGTERM (or after a bad
            ready line), before SIGKILL.
        console_sniff: how long the debug console waits for a ``KSR_MODE`` line before starting a
            plain shell.
        exec_start_timeout: how long the agent waits for an ``Exec`` call's ``start`` message.
        output_drain: after a process exits, how long descendants still holding its output may keep
            it open before the agent stops reading.
        kill_timeout: how long anything waits for a process to die after SIGKILL.
        runc_timeout: bound on one ``runc`` invocation (create, start, kill, delete, state), and on
            ``runc exec`` starting its command.
        console_handover: how long ``runc create`` may take to hand a container's PTY over.
        container_stop_grace: how long ``StopContainer`` waits after its signal, before SIGKILL,
            when the request gives no timeout.
        exec_vm_timeout: how long an ``ExecVMProcess`` command may run when the call has no
            deadline.
        exec_vm_linger: after an ``ExecVMProcess`` command exits, how long to wait for output from
            processes it left holding its pipes (then its session is killed).
        guest_command_timeout: how long each ``ip`` command of ``SandboxService`` may take.
        orphan_scan_delay: as PID 1, how long after SIGCHLD the agent scans for orphans to reap.
        console_start_timeout: how long ``kuasarctl exec`` over the debug console waits for the
            command's start marker (a console that is not a shell, or a hung one, ends there).
        vm_boot_timeout: how long a QEMU sandbox may take from launch until its guest accepts on the
            agent port (TCG on a loaded 2-core host boots in 10-30 s).
        kvm_probe_timeout: how long a KVM guest may take to reach ``/init`` before KVM is judged
            unusable on this host and the boot is redone under TCG.
        vm_poweroff_grace: after ctrl-alt-delete, how long a QEMU guest has to power off before QEMU
            is told to quit (then killed).
        vsock_buf_alloc: the vsock device's receive buffer per stream (the credit it grants the
            guest), in bytes.
        vsock_request_timeout: how long the vsock device waits for the guest's answer to a host
            ``CONNECT`` before it gives up on it (the host client sees a close without reply).
        vsock_max_streams: the most streams (and host clients in handshake) the vsock device keeps
            at once; more are refused.
    """

    max_message: int = TTRPC_MAX_MESSAGE
    handshake_line: int = 64
    console_header: int = 1024
    stream_queue: int = 64
    connect_timeout: float = 10.0
    handshake_timeout: float = 10.0
    shutdown_grace: float = 5.0
    probe_timeout: float = 0.4
    call_timeout: float = 30.0
    interrupt_grace: float = 2.0
    signal_send_timeout: float = 1.0
    sandbox_start_timeout: float = 20.0
    sandbox_stop_timeout: float = 8.0
    agent_ready_timeout: float = 15.0
    agent_stop_grace: float = 3.0
    console_sniff: float = 0.1
    exec_start_timeout: float = 30.0
    output_drain: float = 2.0
    kill_timeout: float = 10.0
    runc_timeout: float = 60.0
    console_handover: float = 5.0
    container_stop_grace: float = 10.0
    exec_vm_timeout: float = 600.0
    exec_vm_linger: float = 0.5
    guest_command_timeout: float = 10.0
    orphan_scan_delay: float = 0.5
    console_start_timeout: float = 30.0
    vm_boot_timeout: float = 300.0
    kvm_probe_timeout: float = 20.0
    vm_poweroff_grace: float = 10.0
    vsock_buf_alloc: int = 256 * 1024
    vsock_request_timeout: float = 5.0
    vsock_max_streams: int = 1024

    def __post_init__(self) -> None:
        kinds = type(self).__annotations__
        for name in self.field_names():
            _check(name, getattr(self, name), integer=kinds[name] in ("int", int))
        if self.max_message > TTRPC_MAX_MESSAGE:
            raise UsageError(
                f"limit max_message {self.max_message} exceeds ttrpc's maximum of {TTRPC_MAX_MESSAGE}"
            )
        if self.handshake_line < _SHORTEST_HANDSHAKE_LINE:
            raise UsageError(f"limit handshake_line must be at least {_SHORTEST_HANDSHAKE_LINE}")
        if self.console_header < _SHORTEST_CONSOLE_HEADER:
            raise UsageError(f"limit console_header must be at least {_SHORTEST_CONSOLE_HEADER}")

    def replace(self, **changes: float) -> Limits:
        """A copy with some fields changed (validated again)."""
        return super().replace(**changes)


def _check(name: str, value: object, *, integer: bool) -> None:
    """A limit is a positive, finite number; a size is an ``int`` (``bool`` is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        kind = "an integer" if integer else "a number"
        raise UsageError(f"limit {name} must be {kind}, got {value!r}")
    if not value <= sys.float_info.max or value <= 0:  # no ``math`` at start-up; NaN and inf fail
        raise UsageError(f"limit {name} must be positive and finite, got {value!r}")


DEFAULT_LIMITS = Limits()

#: A tighter profile for tests: small buffers, short waits, so a bug shows as a failure, not a hang.
TEST_LIMITS = Limits(
    max_message=64 * 1024,
    connect_timeout=2.0,
    handshake_timeout=1.0,
    stream_queue=8,
    shutdown_grace=1.0,
)
