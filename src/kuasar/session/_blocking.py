"""The blocking driver of the guest session, for one-shot CLI runs: the same probe, paths and
diagnosis as the asyncio :class:`kuasar.session.Session`, on plain sockets.

Layer contract: ``kuasar.transport.blocking`` (dial), ``kuasar.ttrpc.blocking`` (calls) and the
sans-IO ``_probe`` / ``_diagnose`` / ``_vm_process``. No asyncio, no protobuf
(``kuasarctl exec``'s fast path).
"""

from __future__ import annotations

from kuasar.config import CONSOLE_PORT, DEFAULT_LIMITS, Limits
from kuasar.errors import DeadlineExceeded, KuasarError, RPCError, TransportError
from kuasar.session._probe import (
    Call,
    ExecPath,
    GuestKind,
    GuestProbe,
    GuestTarget,
    console_dial,
    exec_paths,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    import _socket
    from collections.abc import Mapping, Sequence

    from kuasar.remote_exec import CompletedProcess
    from kuasar.session._process import BlockingProcess
    from kuasar.ttrpc.blocking import BlockingClient
    from kuasar.wire import ExecStart


class BlockingSession:
    """One guest, probed once, on blocking sockets. Use ``with BlockingSession.open(target) as s``.

    Attributes:
        target: where the guest is.
        kind: what answered on its agent port.
        api_error: why nothing answered there (``kind`` is ``NONE``), else ``None``.
        client: the connection to the agent port, when something answered ttrpc there.
    """

    def __init__(
        self,
        target: GuestTarget,
        kind: GuestKind,
        *,
        client: BlockingClient | None = None,
        api_error: TransportError | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.target = target
        self.kind = kind
        self.client = client
        self.api_error = api_error
        self.limits = limits
        self._process: BlockingProcess | None = None

    @classmethod
    def open(
        cls,
        target: GuestTarget,
        *,
        probe_timeout: float | None = None,
        limits: Limits = DEFAULT_LIMITS,
        exec_start: ExecStart | None = None,
    ) -> BlockingSession:
        """Probe ``target``'s agent port once (no retry), as :meth:`Session.open` does.

        Args:
            exec_start: the Exec to run if the guest turns out to be our agent: it is sent with the
                probe's first calls, saving the round trip :meth:`api_process` would cost, and
                dropped when another kind of guest answers (for whom it is an unknown method).
        """
        from kuasar.transport import blocking
        from kuasar.ttrpc.blocking import BlockingClient

        budget = limits.probe_timeout if probe_timeout is None else probe_timeout
        if target.api is None:
            return cls(target, GuestKind.NONE, limits=limits)
        try:
            sock = blocking.dial(target.api, limits=limits, connect_timeout=budget, retry=False)
        except TransportError as exc:
            return cls(target, GuestKind.NONE, api_error=exc, limits=limits)
        client = BlockingClient(sock, limits=limits)
        try:
            probe, process = _probe(client, budget, exec_start)
        except BaseException:
            client.close()
            raise
        assert probe.kind is not None
        if probe.kind is not GuestKind.KUASAR_AGENT and process is not None:
            process.abandon()
            process = None
        if probe.kind is GuestKind.NONE:
            client.close()
            return cls(target, probe.kind, api_error=probe.error, limits=limits)
        session = cls(target, probe.kind, client=client, limits=limits)
        session._process = process
        return session

    def api_process(self, start: ExecStart) -> BlockingProcess:
        """The Exec of ``start`` over the agent API: the one :meth:`open` sent beside the probe
        (``start`` is that one), else a new one on :attr:`client`."""
        process, self._process = self._process, None
        if process is not None:
            return process
        from kuasar.session._process import BlockingProcess

        assert self.client is not None
        return BlockingProcess(self.client, start)

    def __enter__(self) -> BlockingSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self.client is not None:
            self.client.close()

    def paths(self) -> tuple[ExecPath, ...]:
        """The exec paths this guest may offer, best first."""
        return exec_paths(self.kind)

    def require_api(self, why: str) -> BlockingClient:
        """The connection to our agent API, or the error saying why ``why`` needs it."""
        if self.kind is not GuestKind.KUASAR_AGENT or self.client is None:
            from kuasar.session import _diagnose

            raise _diagnose.needs_api(self.target.label, self.kind, why)
        return self.client

    def interactive_needs_console(self) -> KuasarError:
        """The error for ``exec -it`` on a guest whose only path is ExecVMProcess."""
        from kuasar.session import _diagnose

        return _diagnose.interactive_needs_console(self.target.label)

    def open_console(self, *, connect_timeout: float | None = None) -> _socket.socket:
        """Dial the debug console: retried only while the guest may still be booting (nothing
        answered its agent port), one try otherwise.

        Raises:
            KuasarError: the diagnosis that fits (see ``kuasar.session._diagnose``).
        """
        from kuasar.transport import blocking

        budget, retry = console_dial(self.kind, connect_timeout)
        try:
            return blocking.dial(self.target.console, limits=self.limits, connect_timeout=budget, retry=retry)
        except TransportError as exc:
            from kuasar.session import _diagnose

            port = getattr(self.target.console, "port", CONSOLE_PORT)
            raise _diagnose.console_error(self.target.label, self.kind, self.api_error, exc, port) from exc

    def exec_vm_process(
        self,
        argv: Sequence[str | bytes],
        *,
        input: bytes = b"",
        timeout: float | None = None,
        env: Mapping[str, str | bytes] | None = None,
        cwd: str | bytes = "",
    ) -> CompletedProcess:
        """Run ``argv`` through a stock vmm-task's ExecVMProcess (output when it ends).

        Raises:
            DeadlineExceeded: ``timeout`` expired.
            KuasarError: no SandboxService there, or the call failed otherwise.
        """
        from kuasar.session._vm_process import METHOD, SERVICE, vm_process_request, vm_process_result

        if self.client is None:
            from kuasar.session import _diagnose

            raise _diagnose.needs_api(self.target.label, self.kind, "ExecVMProcess")
        command, request = vm_process_request(argv, input=input, env=env, cwd=cwd)
        try:
            reply = self.client.call(SERVICE, METHOD, request, timeout=timeout)
        except RPCError as exc:
            return vm_process_result(argv, command, error=exc, timeout=timeout)
        except DeadlineExceeded:
            raise DeadlineExceeded(f"timed out after {timeout:g} s") from None
        return vm_process_result(argv, command, reply=reply)


def _probe(
    client: BlockingClient, budget: float, exec_start: ExecStart | None
) -> tuple[GuestProbe, BlockingProcess | None]:
    """Run the probe's calls on ``client`` (each one's likely successor sent with it); with
    ``exec_start``, open that Exec beside the first ones. Returns the finished probe and the Exec."""
    probe = GuestProbe()
    process = None
    sent: dict[Call, int] = {}  # the calls sent ahead of their turn: their stream ids
    while (call := probe.next_call()) is not None:
        try:
            if call not in sent:
                sent[call] = client.start(call.service, call.method, timeout=budget)
            if (guess := probe.ahead()) is not None and guess not in sent:
                sent[guess] = client.start(guess.service, guess.method, timeout=budget)
        except KuasarError as exc:
            probe.receive_error(exc)
            continue
        if exec_start is not None and process is None:  # its frames leave with the calls above
            from kuasar.session._process import BlockingProcess

            process = BlockingProcess(client, exec_start)
        try:
            reply = client.result(sent.pop(call))
        except KuasarError as exc:
            probe.receive_error(exc)
            continue
        probe.receive_reply(reply)
    for stream_id in sent.values():
        client.abandon(stream_id)
    return probe, process


def open_console(
    target: GuestTarget, *, connect_timeout: float | None = None, limits: Limits = DEFAULT_LIMITS
) -> _socket.socket:
    """Dial ``target``'s debug console without probing (``exec --console``): retried within
    ``connect_timeout`` while nothing listens, as the guest may still be booting.

    Raises:
        KuasarError: the diagnosis of what the VMM socket did.
    """
    return BlockingSession(target, GuestKind.NONE, limits=limits).open_console(
        connect_timeout=connect_timeout
    )
