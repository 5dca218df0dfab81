"""``kuasarctl containers`` and ``kuasarctl container create|start|stop|rm``: thin over the agent API.

Layer contract: ``kuasar.ctl`` only. Parses flags, calls ``kuasar.agent.v1.Agent`` through the
sandbox's agent connection, prints. Protobuf, ttrpc and the transport are imported lazily. Also
home of :func:`agent_client`, the connection helper that ``logs`` and ``cp`` share.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from kuasar._text import printable
from kuasar.config import DEFAULT_LIMITS
from kuasar.ctl import output
from kuasar.ctl.commands import summary
from kuasar.ctl.commands._common import (
    add_output_format,
    add_sandbox,
    add_socket_dir,
    format_age,
    positive_seconds,
    resolve,
)
from kuasar.errors import UsageError

if TYPE_CHECKING:
    from kuasar.session import Connection

SERVICE = "kuasar.agent.v1.Agent"


def add_connect_flags(parser: argparse.ArgumentParser) -> None:
    """``-d/--socket-dir`` and ``--connect-timeout``, for every command that talks to the agent."""
    add_socket_dir(parser)
    parser.add_argument(
        "--connect-timeout", type=positive_seconds, default=5.0, metavar="SECS", help="agent connect bound"
    )


@contextlib.asynccontextmanager
async def agent_client(args: argparse.Namespace, sandbox: str) -> AsyncIterator[Connection]:
    """The connection to the kuasar agent API of ``sandbox`` (ID or unique prefix), through the
    library's guest session: a guest without our API gets the session's diagnosis."""
    from kuasar.session import GuestTarget, Session

    ref = resolve(args, sandbox)
    target = GuestTarget.for_socket(ref.socket, label=ref.id)
    async with await Session.open(target, probe_timeout=args.connect_timeout) as session:
        yield session.require_api(f"kuasarctl {args.command}").client


def register(commands: Any) -> None:
    listing: argparse.ArgumentParser = commands.add_parser(
        "containers", help=summary("containers"), description="List the containers of a sandbox."
    )
    add_connect_flags(listing)
    add_output_format(listing)
    listing.add_argument("-a", "--all", action="store_true", help="include stopped containers")
    listing.add_argument("-q", "--quiet", action="store_true", help="print IDs only")
    add_sandbox(listing)
    listing.set_defaults(func=run_list)

    group: argparse.ArgumentParser = commands.add_parser(
        "container",
        help=summary("container"),
        description="Create, start, stop or remove containers inside a sandbox, through its agent API.",
    )
    actions = group.add_subparsers(
        dest="action", metavar="ACTION", required=True, help="what to do (see ACTION --help)"
    )

    create = actions.add_parser("create", help="create a container from an OCI bundle in the guest")
    add_connect_flags(create)
    create.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="add a label")
    create.add_argument("--start", action="store_true", help="start it once created")
    add_sandbox(create)
    create.add_argument("id", metavar="ID", help="the new container's ID")
    create.add_argument(
        "bundle", metavar="BUNDLE", help="bundle directory in the guest (config.json + rootfs)"
    )
    create.set_defaults(func=run_create)

    start = actions.add_parser("start", help="start a created container")
    add_connect_flags(start)
    add_sandbox(start)
    start.add_argument("ids", nargs="+", metavar="ID", help="container IDs")
    start.set_defaults(func=run_start)

    stop = actions.add_parser("stop", help="signal a container, then SIGKILL after a grace period")
    add_connect_flags(stop)
    stop.add_argument("-s", "--signal", default="TERM", metavar="SIG", help="signal name or number")
    stop.add_argument(
        "-t", "--time", type=int, default=10, metavar="SECS", help="grace period before SIGKILL"
    )
    add_sandbox(stop)
    stop.add_argument("ids", nargs="+", metavar="ID", help="container IDs")
    stop.set_defaults(func=run_stop)

    remove = actions.add_parser("rm", aliases=["remove"], help="remove a stopped container")
    add_connect_flags(remove)
    remove.add_argument("-f", "--force", action="store_true", help="kill it first if it is running")
    add_sandbox(remove)
    remove.add_argument("ids", nargs="+", metavar="ID", help="container IDs")
    remove.set_defaults(func=run_remove)


def parse_signal(text: str) -> int:
    """``TERM``, ``SIGTERM``, ``term`` or ``15`` to a signal number."""
    import signal

    if text.isdigit():
        number = int(text)
        if 0 < number < signal.NSIG:
            return number
    else:
        name = text.upper()
        name = name if name.startswith("SIG") else f"SIG{name}"
        if hasattr(signal.Signals, name):
            return int(signal.Signals[name])
    raise UsageError(f"unknown signal {text!r}", hints=["Use a name like TERM, INT, KILL or a number."])


def _labels(pairs: list[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"bad label {pair!r}: expected KEY=VALUE")
        labels[key] = value
    return labels


def info_dict(info: Any) -> dict[str, Any]:
    """A ``ContainerInfo`` message as plain JSON-ready data."""
    data: dict[str, Any] = {
        "id": info.id,
        "status": info.status,
        "pid": info.pid,
        "bundle": info.bundle,
        "created_at": info.created_at,
        "started_at": info.started_at,
        "finished_at": info.finished_at,
        "labels": dict(info.labels),
    }
    if info.HasField("exit"):
        data["exit"] = {
            "exit_code": info.exit.exit_code,
            "signal": info.exit.signal,
            "core_dumped": info.exit.core_dumped,
        }
    return data


def _status_text(data: dict[str, Any], now_ns: int) -> str:
    status = str(data["status"])
    if status == "stopped" and "exit" in data:
        exit_ = data["exit"]
        how = f"signal {exit_['signal']}" if exit_["signal"] else f"exit {exit_['exit_code']}"
        ago = format_age((now_ns - data["finished_at"]) / 1e9) if data["finished_at"] else "?"
        return f"stopped ({how}) {ago} ago"
    if status == "running" and data["started_at"]:
        return f"running {format_age((now_ns - data['started_at']) / 1e9)}"
    return status


async def run_list(args: argparse.Namespace) -> int:
    from kuasar.proto import agent_pb2 as pb

    async with agent_client(args, args.sandbox) as client:
        response = await client.call(
            SERVICE,
            "ListContainers",
            pb.ListContainersRequest(all=args.all),
            pb.ListContainersResponse,
            timeout=DEFAULT_LIMITS.call_timeout,
        )
    rows = [info_dict(info) for info in response.containers]
    if args.output == "json":
        output.write_stdout(json.dumps(rows, indent=2) + "\n")
        return 0
    if args.quiet:
        output.write_stdout("".join(f"{printable(row['id'])}\n" for row in rows))
        return 0
    now = time.time_ns()
    table: list[tuple[str, ...]] = [("ID", "STATUS", "PID", "CREATED", "BUNDLE")]
    for row in rows:
        created = format_age((now - row["created_at"]) / 1e9) + " ago" if row["created_at"] else "?"
        fields = (row["id"], _status_text(row, now), str(row["pid"] or "-"), created, row["bundle"])
        table.append(tuple(printable(field) for field in fields))
    widths = [max(len(line[col]) for line in table) for col in range(4)]
    for line in table:
        cells = [cell.ljust(width) for cell, width in zip(line[:4], widths, strict=True)]
        output.write_stdout("   ".join([*cells, line[4]]) + "\n")
    return 0


async def run_create(args: argparse.Namespace) -> int:
    from kuasar.proto import agent_pb2 as pb

    request = pb.CreateContainerRequest(id=args.id, bundle=args.bundle, labels=_labels(args.label))
    async with agent_client(args, args.sandbox) as client:
        await client.call(
            SERVICE, "CreateContainer", request, pb.ContainerInfo, timeout=DEFAULT_LIMITS.call_timeout
        )
        if args.start:
            await client.call(
                SERVICE,
                "StartContainer",
                pb.ContainerRequest(id=args.id),
                pb.ContainerInfo,
                timeout=DEFAULT_LIMITS.call_timeout,
            )
    output.write_stdout(f"{printable(args.id)}\n")
    return 0


async def run_start(args: argparse.Namespace) -> int:
    from kuasar.proto import agent_pb2 as pb

    async with agent_client(args, args.sandbox) as client:
        for container_id in args.ids:
            request = pb.ContainerRequest(id=container_id)
            await client.call(
                SERVICE, "StartContainer", request, pb.ContainerInfo, timeout=DEFAULT_LIMITS.call_timeout
            )
            output.write_stdout(f"{printable(container_id)}\n")
    return 0


async def run_stop(args: argparse.Namespace) -> int:
    from kuasar.proto import agent_pb2 as pb

    number = parse_signal(args.signal)
    if args.time < 0:
        raise UsageError("--time must not be negative")
    grace = max(1, args.time)  # 0 on the wire means the agent's default
    async with agent_client(args, args.sandbox) as client:
        for container_id in args.ids:
            request = pb.StopContainerRequest(id=container_id, signal=number, timeout_seconds=grace)
            await client.call(
                SERVICE,
                "StopContainer",
                request,
                pb.ContainerInfo,
                timeout=DEFAULT_LIMITS.call_timeout + grace,
            )
            output.write_stdout(f"{printable(container_id)}\n")
    return 0


async def run_remove(args: argparse.Namespace) -> int:
    from google.protobuf import empty_pb2

    from kuasar.proto import agent_pb2 as pb

    async with agent_client(args, args.sandbox) as client:
        for container_id in args.ids:
            request = pb.RemoveContainerRequest(id=container_id, force=args.force)
            await client.call(
                SERVICE, "RemoveContainer", request, empty_pb2.Empty, timeout=DEFAULT_LIMITS.call_timeout
            )
            output.write_stdout(f"{printable(container_id)}\n")
    return 0
