"""The asyncio driver: run the steps of a plan over a ttrpc connection, reporting each call.

Layer contract: ``kuasar.agentctl``; asyncio, ``kuasar.errors``, and whatever has the
:class:`Caller` shape (``kuasar.ttrpc.Client``), handed in — never imported, never dialled here.
Nothing is printed: every outcome goes to the :class:`Sink` the caller passes.

Per call: the template request is copied, auto values fill it (``auto``), and the call runs by its
shape — unary; server-streaming (each message reported as it arrives); client-streaming (every
message sent, then the one response); bidi (sending and receiving at once, the sending side closed
after the last message). Policy:

- A call answered with a non-OK status is reported and ends the run, unless ``ignore_errors``.
- ``--timeout`` expiring (locally or as the agent's DEADLINE_EXCEEDED) is the same, but the run's
  error is :class:`~kuasar.errors.DeadlineExceeded` (exit 124).
- A dropped connection ends the run whatever ``ignore_errors`` says (exit 125).

:meth:`Runner.finish` turns the failures into the one error to raise (``CallFailed``, exit 1).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from kuasar.agentctl.plan import FOREVER, Call, Echo, Help, Quit, Sleep, Step
from kuasar.agentctl.report import CallResult, message_json
from kuasar.codes import Code
from kuasar.errors import DeadlineExceeded, KuasarError, ProtocolError, RPCError, TransportError

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from kuasar.agentctl.auto import AutoValues, Filled
    from kuasar.agentctl.catalog import Catalog, Method


class Caller(Protocol):
    """The two operations of ``kuasar.ttrpc.Client`` the runner uses."""

    async def call(
        self,
        service: str,
        method: str,
        request: Any,
        response_type: Any,
        *,
        timeout: float | None = ...,  # noqa: ASYNC109 - the ttrpc deadline, sent on the wire
    ) -> Any: ...

    def stream(
        self,
        service: str,
        method: str,
        response_type: Any,
        *,
        client_streaming: bool = ...,
        server_streaming: bool = ...,
        request: Any = ...,
        timeout: float | None = ...,
    ) -> Any: ...


class Sink(Protocol):
    """Where the runner reports (the CLI prints)."""

    def filled(self, method: Method, filled: Sequence[Filled]) -> None: ...

    def message(self, method: Method, data: dict[str, Any]) -> None: ...

    def result(self, result: CallResult) -> None: ...

    def echo(self, text: str) -> None: ...

    def help(self) -> None: ...


class CallFailed(KuasarError):
    """A call was answered with a non-OK status (exit 1)."""

    exit_code = 1


@dataclass
class Runner:
    """Runs steps on one connection; keep it for the whole session (``-i`` runs line by line).

    Attributes:
        caller: the ttrpc client.
        catalog: resolves method names on this guest.
        kind: the guest kind (``None``: not probed).
        auto: the run's auto values.
        sink: where outcomes go.
        timeout: each call's budget (``None``: none).
        ignore_errors: keep going after a failed call.
    """

    caller: Caller
    catalog: Catalog
    kind: str | None
    auto: AutoValues
    sink: Sink
    timeout: float | None = None
    ignore_errors: bool = False
    results: list[CallResult] = field(default_factory=list)
    quit: bool = False

    @property
    def failures(self) -> list[CallResult]:
        return [result for result in self.results if not result.ok]

    async def run(self, steps: Sequence[Step], *, repeat: int = 1) -> bool:
        """Run ``steps`` (``repeat`` times; ``FOREVER``: until a failure, ``quit`` or Ctrl-C).

        Returns:
            ``False`` when the run stopped early (a failure without ``ignore_errors``, or ``quit``).

        Raises:
            TransportError: the connection failed (after the call is reported).
        """
        rounds = 0
        while repeat == FOREVER or rounds < repeat:
            rounds += 1
            for step in steps:
                if not await self._step(step):
                    return False
        return True

    async def _step(self, step: Step) -> bool:
        done = 0
        while step.count == FOREVER or done < step.count:
            done += 1
            if isinstance(step, Quit):
                self.quit = True
                return False
            if isinstance(step, Echo):
                self.sink.echo(step.text)
            elif isinstance(step, Help):
                self.sink.help()
            elif isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)
            elif isinstance(step, Call):
                result = await self.call(step)
                if not result.ok and not self.ignore_errors:
                    return False
        return True

    async def call(self, step: Call) -> CallResult:
        """Make ``step``'s call once and report it.

        Raises:
            TransportError: the connection failed (the call is reported first).
        """
        method = self.catalog.choose(step.name, step.candidates, self.kind)
        template = step.request_for(method)
        messages = [_copy(m) for m in template.messages]
        filled = self.auto.fill(template, messages)
        if filled:
            self.sink.filled(method, filled)
        result = CallResult(method, requests=[message_json(m) for m in messages], auto=filled)
        loop = asyncio.get_running_loop()
        start = loop.time()
        failure: TransportError | ProtocolError | None = None
        try:
            await self._make(method, messages, result)
        except RPCError as exc:
            result.code, result.message = exc.code, exc.message
        except DeadlineExceeded as exc:
            result.code, result.message, result.local = Code.DEADLINE_EXCEEDED, str(exc), True
        except (TransportError, ProtocolError) as exc:
            result.code, result.message, result.local = Code.UNAVAILABLE, str(exc), True
            failure = exc
        result.elapsed = loop.time() - start
        self.results.append(result)
        self.sink.result(result)
        if failure is not None:
            raise failure
        return result

    async def _make(self, method: Method, messages: list[Message], result: CallResult) -> None:
        service, name, response_type = method.service.name, method.name, method.response_type()
        if not method.client_streaming and not method.server_streaming:
            reply = await self.caller.call(service, name, messages[0], response_type, timeout=self.timeout)
            result.responses.append(message_json(reply))
            return
        stream = self.caller.stream(
            service,
            name,
            response_type,
            client_streaming=method.client_streaming,
            server_streaming=method.server_streaming,
            request=None if method.client_streaming else messages[0],
            timeout=self.timeout,
        )
        async with stream:
            if not method.server_streaming:
                for message in messages:
                    await stream.send(message)
                result.responses.append(message_json(await stream.response()))
                return
            sender = asyncio.create_task(_send_all(stream, messages)) if method.client_streaming else None
            try:
                while (reply := await stream.recv()) is not None:
                    data = message_json(reply)
                    result.responses.append(data)
                    self.sink.message(method, data)
                if sender is not None:
                    await sender
            finally:
                if sender is not None and not sender.done():
                    sender.cancel()
                    with contextlib.suppress(asyncio.CancelledError, KuasarError):
                        await sender

    def finish(self) -> None:
        """Raise the run's error, if a call failed.

        Raises:
            DeadlineExceeded: a call ran out of time (exit 124).
            CallFailed: a call was answered with a non-OK status (exit 1).
        """
        failures = self.failures
        if not failures:
            return
        first = failures[0]
        total = len(self.results)
        what = f"{first.method.path}: {first.status}" + (f": {first.message}" if first.message else "")
        count = f"{len(failures)} of {total} calls failed; first: " if total > 1 else ""
        if any(r.code == Code.DEADLINE_EXCEEDED for r in failures):
            raise DeadlineExceeded(
                f"{count}{what}", hints=["A longer --timeout (0: none) gives it more time."]
            )
        raise CallFailed(f"{count}{what}")


async def _send_all(stream: Any, messages: Sequence[Message]) -> None:
    for message in messages:
        await stream.send(message)
    await stream.close_send()


def _copy(message: Message) -> Message:
    fresh = type(message)()
    fresh.CopyFrom(message)
    return fresh
