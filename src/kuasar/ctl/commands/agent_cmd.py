"""``kuasarctl agent``: any agent API call on any guest, kata-agent-ctl style, without its defects.

Layer contract: ``kuasar.ctl`` only. Parses flags, builds the whole plan with ``kuasar.agentctl``
(every command checked before anything is dialled: a bad one is exit 2 and nothing is sent), then
opens the guest session (``kuasar.session``: a sandbox or ``--server-address``; the probe names the
guest kind, which picks among bare method names and explains refusals, and an unreachable guest
gets its diagnosis) and runs the plan with ``kuasar.agentctl.runner`` over the session's ttrpc
client, printing what it reports. protobuf and asyncio are imported inside ``run``.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kuasar._text import printable
from kuasar.config import AGENT_PORT, DEFAULT_LIMITS
from kuasar.ctl import output
from kuasar.ctl.commands import summary
from kuasar.ctl.commands._common import SANDBOX_HELP, add_socket_dir, positive_seconds, resolve
from kuasar.ctl.commands.agent_text import DESCRIPTION, EPILOG, EXAMPLES
from kuasar.errors import ConnectError, KuasarError, UsageError

if TYPE_CHECKING:
    from collections.abc import Coroutine, Sequence

    from kuasar.address import Address
    from kuasar.agentctl.auto import Filled
    from kuasar.agentctl.catalog import Catalog, Method
    from kuasar.agentctl.plan import Planner, Step
    from kuasar.agentctl.report import CallResult
    from kuasar.session import GuestTarget, Session

_MAX_PORT = 0xFFFFFFFF


def _port(text: str) -> int:
    if not text.isdecimal() or int(text) > _MAX_PORT:
        raise argparse.ArgumentTypeError(f"not a vsock port: {text!r}")
    return int(text)


def _repeat(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value == 0 or value < -1:
        raise argparse.ArgumentTypeError(f"give a count (1, 2, ... or -1 for ever), not {text!r}")
    return value


def _duration(text: str) -> float:
    from kuasar.agentctl.plan import parse_duration

    try:
        return parse_duration(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "agent",
        help=summary("agent"),
        description=DESCRIPTION,
        epilog=EPILOG,
    )
    parser.add_argument("sandbox", metavar="SANDBOX", nargs="?", help=SANDBOX_HELP + " (or --server-address)")
    add_socket_dir(parser)
    parser.add_argument("-p", "--port", type=_port, default=AGENT_PORT, help="the guest's agent vsock port")
    where = parser.add_argument_group("direct address (instead of SANDBOX)")
    where.add_argument(
        "--server-address",
        metavar="ADDR",
        help="vsock://CID:PORT, unix:///path, unix://@name, hvsock://PATH:PORT",
    )
    where.add_argument(
        "--hybrid-vsock",
        action="store_true",
        help="unix:///path is a VMM's hybrid vsock socket (Cloud Hypervisor, Firecracker)",
    )
    where.add_argument(
        "--hybrid-vsock-port", type=_port, default=AGENT_PORT, metavar="PORT", help="the port behind it"
    )
    parser.add_argument(
        "-c",
        "--cmd",
        dest="commands",
        action="extend",
        nargs="+",
        default=[],
        metavar="CMD",
        help="a command: METHOD [name=value|json://{...}|file:///f.json]..., or a builtin (repeatable)",
    )
    parser.add_argument("-i", "--interactive", action="store_true", help="read commands at a prompt")
    parser.add_argument(
        "-n", "--no-auto-values", action="store_true", help="generate no IDs and fill no defaults"
    )
    parser.add_argument(
        "--ignore-errors", action="store_true", help="go on after a failed call (the exit code still says so)"
    )
    parser.add_argument(
        "--repeat", type=_repeat, default=1, metavar="N", help="run the -c commands N times (-1: for ever)"
    )
    parser.add_argument(
        "--timeout",
        type=_duration,
        default=DEFAULT_LIMITS.call_timeout,
        metavar="DURATION",
        help="each call's budget, e.g. 5s, 500ms; 0: none",
    )
    parser.add_argument(
        "--connect-timeout", type=positive_seconds, default=2.0, metavar="SECS", help="dial and probe budget"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per call on stdout")
    parser.add_argument(
        "--bundle-dir",
        metavar="DIR",
        help="an OCI bundle: its config.json's process for Kata's ExecProcess, its spec for CreateContainer",
    )
    parser.add_argument(
        "--descriptor-set",
        action="append",
        default=[],
        metavar="FILE",
        help="more services, from protoc --include_imports --descriptor_set_out=FILE",
    )
    parser.add_argument(
        "--list",
        nargs="?",
        const="",
        default=None,
        metavar="SERVICE|METHOD",
        help="every callable method with its request fields (no connection)",
    )
    parser.add_argument("--examples", action="store_true", help="print usage examples")
    parser.set_defaults(func=run)


@dataclass(frozen=True)
class _Where:
    """The guest to reach: a sandbox (through the session) or a direct address."""

    label: str
    address: Address
    sandbox: GuestTarget | None = None


def _catalog(paths: Sequence[str]) -> Catalog:
    from kuasar.agentctl.catalog import Catalog

    catalog = Catalog.builtin()
    for path in paths:
        try:
            with open(path, "rb") as file:
                data = file.read()
        except OSError as exc:
            raise UsageError(f"--descriptor-set {path}: {exc.strerror or exc}") from None
        catalog = catalog.with_descriptor_set(data, path)
    return catalog


def _bundle(directory: str | None) -> dict[str, Any] | None:
    """``--bundle-dir``'s config.json, checked against Kata's messages before anything is sent."""
    if directory is None:
        return None
    import json

    from kuasar.agentctl import oci
    from kuasar.proto import kata_oci_pb2

    path = os.path.join(directory, "config.json")
    try:
        with open(path, "rb") as file:
            spec = json.load(file)
    except OSError as exc:
        raise UsageError(f"--bundle-dir: cannot read {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"--bundle-dir: {path}: malformed JSON: {exc}") from None
    if not isinstance(spec, dict):
        raise UsageError(f"--bundle-dir: {path}: not an OCI runtime spec (a JSON object)")
    spec = oci.absolute_root(spec, directory)
    oci.load(kata_oci_pb2.Spec(), spec, path)
    return spec


def _where(args: argparse.Namespace) -> _Where:
    from kuasar.address import HvsockAddress, UnixAddress, parse_address, with_port
    from kuasar.session import GuestTarget

    text = args.server_address
    if args.sandbox and "://" in args.sandbox and text is None:
        text = args.sandbox
    elif args.sandbox and text is not None:
        raise UsageError("give a SANDBOX or --server-address, not both")
    if text is None:
        if not args.sandbox:
            raise UsageError("give a SANDBOX (ID or prefix) or --server-address ADDR")
        if args.hybrid_vsock:
            raise UsageError("--hybrid-vsock goes with --server-address unix:///path/to/vmm.sock")
        ref = resolve(args, args.sandbox)
        target = GuestTarget.for_socket(ref.socket, label=ref.id)
        api = HvsockAddress(ref.socket, args.port)
        return _Where(target.label, api, GuestTarget(api, target.console, target.label))
    address = parse_address(text)
    if args.hybrid_vsock:
        if not isinstance(address, UnixAddress) or address.abstract:
            raise UsageError("--hybrid-vsock needs --server-address unix:///path (the VMM's socket)")
        address = with_port(address, args.hybrid_vsock_port)
    return _Where(text, address)


def run(args: argparse.Namespace) -> int | Coroutine[Any, Any, int]:
    if args.examples:
        output.write_stdout(EXAMPLES)
        return 0
    catalog = _catalog(args.descriptor_set)
    if args.list is not None:
        from kuasar.agentctl import report

        if args.json:
            services, method = (
                report.select(catalog, args.list) if args.list else (list(catalog.services), None)
            )
            output.write_stdout(report.list_json(catalog, services, method))
        else:
            output.write_stdout(report.list_text(catalog, args.list or None))
        return 0
    from kuasar.agentctl.catalog import UnknownMethod
    from kuasar.agentctl.plan import Planner, calls

    planner = Planner(catalog)
    try:
        steps = planner.parse_all(args.commands)
    except UnknownMethod as exc:
        if args.sandbox or args.server_address or not args.commands:
            raise
        # `agent -c Check pod-abc`: one -c takes every word up to the next flag
        raise UnknownMethod(
            str(exc), hints=[*exc.hints, "SANDBOX goes before -c: kuasarctl agent SANDBOX -c ..."]
        ) from None
    if not steps and not args.interactive:
        raise UsageError("nothing to do: give -c COMMAND, -i, --list or --examples")
    args.bundle = _bundle(args.bundle_dir)
    if not calls(steps) and not args.interactive:
        return _offline(args, catalog, steps)
    return _connected(args, catalog, planner, steps, _where(args))


async def _offline(args: argparse.Namespace, catalog: Catalog, steps: list[Step]) -> int:
    """Builtins only (``-c 'echo hi' -c help``): nothing to connect to."""
    from kuasar.agentctl.auto import AutoValues
    from kuasar.agentctl.runner import Runner

    runner = Runner(_NoCaller(), catalog, None, AutoValues(), _sink(args, catalog, None))
    await runner.run(steps, repeat=args.repeat)
    return 0


class _NoCaller:
    async def call(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - no calls offline
        raise AssertionError("no call is made offline")

    def stream(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover
        raise AssertionError("no call is made offline")


async def _open(args: argparse.Namespace, where: _Where) -> Session:
    """The guest session (probed: its kind picks among bare method names and explains refusals)."""
    from kuasar.session import GuestKind, GuestTarget, Session

    target = where.sandbox or GuestTarget(where.address, where.address, where.label)
    session = await Session.open(target, probe_timeout=args.connect_timeout)
    if session.kind is GuestKind.NONE or session.client is None:
        await session.close()
        raise _unreachable(session, where, args.port)
    return session


def _unreachable(session: Session, where: _Where, port: int) -> KuasarError:
    from kuasar.errors import REASON_NO_LISTENER

    error = session.api_error
    if error is None:
        return ConnectError(f"nothing answers at {where.address}")
    if where.sandbox is None:
        return error
    if error.reason != REASON_NO_LISTENER and error.reason:
        return session.console_error(error)
    return ConnectError(
        f"nothing in the guest of {where.label} answers ttrpc on vsock port {port}",
        hints=[
            str(error),
            "The guest may still be booting (retry, or a longer --connect-timeout), or it runs no agent"
            " on that port (-p PORT).",
        ],
        reason=error.reason,
    )


async def _connected(
    args: argparse.Namespace, catalog: Catalog, planner: Planner, steps: list[Step], where: _Where
) -> int:
    from kuasar.agentctl.auto import AutoValues
    from kuasar.agentctl.plan import calls
    from kuasar.agentctl.runner import Runner

    session = await _open(args, where)
    kind = session.kind.value
    try:
        for call in calls(steps):  # an ambiguous name is a usage error before any call is made
            catalog.choose(call.name, call.candidates, kind)
        auto = AutoValues(not args.no_auto_values, bundle=args.bundle)
        timeout = args.timeout or None
        sink = _sink(args, catalog, kind)
        assert session.client is not None  # _open checked it
        runner = Runner(session.client, catalog, kind, auto, sink, timeout, args.ignore_errors)
        finished = await runner.run(steps, repeat=args.repeat)
        if args.interactive and finished:
            from kuasar.ctl.commands.agent_interactive import interact

            await interact(runner, planner, where.label, kind, json_mode=args.json)
    finally:
        await session.close()
    runner.finish()
    return 0


def _sink(args: argparse.Namespace, catalog: Catalog, kind: str | None) -> _Printer:
    return _Printer(catalog, kind, json_mode=args.json)


def note(text: str) -> None:
    """One line of log on stderr (auto values, ``--json``'s echo), escaped."""
    sys.stderr.write(printable(text) + "\n")
    sys.stderr.flush()


class _Printer:
    """Prints what the runner reports: text on stdout, or ``--json`` lines on stdout; logs on stderr."""

    def __init__(self, catalog: Catalog, kind: str | None, *, json_mode: bool) -> None:
        self.catalog = catalog
        self.kind = kind
        self.json_mode = json_mode

    def filled(self, method: Method, filled: Sequence[Filled]) -> None:
        values = ", ".join(f"{f.field}={_value(f.value)} ({f.source})" for f in filled)
        note(f"auto: {method.name}: {values}")

    def message(self, method: Method, data: dict[str, Any]) -> None:
        if not self.json_mode:
            from kuasar.agentctl.report import render_stream_message

            output.write_stdout(_safe(render_stream_message(data)))
            output.flush_stdout()

    def result(self, result: CallResult) -> None:
        from kuasar.agentctl.report import render_text

        output.write_stdout(result.json_line() if self.json_mode else _safe(render_text(result, self.kind)))
        output.flush_stdout()

    def echo(self, text: str) -> None:
        if self.json_mode:
            note(text)
        else:
            output.write_stdout(printable(text) + "\n")

    def help(self) -> None:
        from kuasar.agentctl.report import help_text

        text = help_text(self.catalog)
        if self.json_mode:
            sys.stderr.write(text)
        else:
            output.write_stdout(text)


def _value(value: Any) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value)


def _safe(text: str) -> str:
    """Multi-line text with each line made printable (JSON escapes survive: backslashes are kept)."""
    return "".join(printable(line) + "\n" for line in text.splitlines())
