"""``kuasarctl logs``: a container's stored output, optionally followed, as ``docker logs`` prints it.

Layer contract: ``kuasar.ctl`` only. Calls the agent's server-streaming ``Logs``; the container's
stdout goes to our stdout and its stderr to our stderr, bytes unchanged (``--timestamps`` adds an
RFC 3339 prefix per line). ``-f`` ends with exit 0 when the container stops and its log is drained;
Ctrl-C ends it with exit 130, as ``docker logs -f`` does (it dies of SIGINT).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from datetime import datetime
from typing import Any

from kuasar.ctl.commands import summary
from kuasar.ctl.commands._common import add_sandbox
from kuasar.ctl.commands.containers import SERVICE, add_connect_flags, agent_client
from kuasar.errors import UsageError

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h|d)")
_UNITS = {
    "ns": 1,
    "us": 1_000,
    "ms": 1_000_000,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
    "d": 86400 * 10**9,
}


def parse_time(text: str, now_ns: int | None = None) -> int:
    """``--since``/``--until`` to unix ns, as docker reads them.

    Accepts a duration back from now (``10m``, ``1h30m``, ``2.5s``), unix seconds (``1700000000`` or
    with a fraction), or an RFC 3339 time (``2026-11-22T10:00:00Z``, ``...+01:00``, nanoseconds ok;
    a date and time without an offset is local time).
    """
    now = time.time_ns() if now_ns is None else now_ns
    stripped = text.strip()
    parts = _DURATION.findall(stripped)
    if parts and "".join(f"{n}{u}" for n, u in parts) == stripped:
        return now - int(sum(float(n) * _UNITS[u] for n, u in parts))
    if re.fullmatch(r"\d+(\.\d{1,9})?", stripped):
        seconds, _, frac = stripped.partition(".")
        return int(seconds) * 10**9 + int((frac + "000000000")[:9])
    match = re.fullmatch(
        r"(\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?)?)(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})?", stripped
    )
    if match:
        head, frac, zone = match.groups()
        iso = head + (("+00:00" if zone == "Z" else zone) if zone else "")
        try:
            moment = datetime.fromisoformat(iso)
        except ValueError:
            moment = None
        if moment is not None:
            if moment.tzinfo is None:
                moment = moment.astimezone()
            nanos = int((frac or "").ljust(9, "0")[:9])
            return int(moment.timestamp()) * 10**9 + nanos
    raise UsageError(
        f"bad time {text!r}",
        hints=[
            "Use a duration back from now (10m, 1h30m), unix seconds, or RFC 3339 (2026-11-22T10:00:00Z)."
        ],
    )


def _tail(text: str) -> int | None:
    if text == "all":
        return None
    if text.isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(f"--tail takes a number of lines or 'all', not {text!r}")


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "logs",
        help=summary("logs"),
        description="Print a container's stored stdout and stderr (stderr to stderr).",
    )
    add_connect_flags(parser)
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
    parser.add_argument(
        "-n", "--tail", type=_tail, default=None, metavar="N", help="only the last N lines (or all)"
    )
    parser.add_argument("--since", metavar="T", help="only lines since T (10m, unix seconds, RFC 3339)")
    parser.add_argument("--until", metavar="T", help="only lines before T")
    parser.add_argument("-t", "--timestamps", action="store_true", help="prefix each line with its time")
    parser.add_argument("--stdout", action="store_true", help="only stdout (default: both)")
    parser.add_argument("--stderr", action="store_true", help="only stderr (default: both)")
    add_sandbox(parser)
    parser.add_argument("container", metavar="CONTAINER", help="the container whose output to print")
    parser.set_defaults(func=run)


async def run(args: argparse.Namespace) -> int:
    from kuasar.logtime import format_time
    from kuasar.proto import agent_pb2 as pb

    now = time.time_ns()
    request = pb.LogsRequest(
        container_id=args.container,
        follow=args.follow,
        stdout=args.stdout,
        stderr=args.stderr,
        since=parse_time(args.since, now) if args.since else 0,
        until=parse_time(args.until, now) if args.until else 0,
        timestamps=args.timestamps,
    )
    if args.tail is not None:
        request.tail = args.tail
    outputs = {"stdout": sys.stdout.buffer, "stderr": sys.stderr.buffer}
    async with (
        agent_client(args, args.sandbox) as client,
        client.stream(SERVICE, "Logs", pb.LogEntry, server_streaming=True, request=request) as stream,
    ):
        async for entry in stream:
            out = outputs.get(entry.stream, sys.stdout.buffer)
            if args.timestamps:
                out.write(format_time(entry.timestamp).encode() + b" ")
            out.write(entry.data)
            if args.follow:
                out.flush()
    sys.stdout.flush()
    return 0
