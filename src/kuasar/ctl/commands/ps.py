"""``kuasarctl ps``: every sandbox in the roots, whether it answers, its state, and how old it is.

Layer contract: ``kuasar.ctl`` only. Finds sandboxes with ``kuasar.sandbox.discovery.scan``, probes
them all concurrently (each bounded by ``--probe-timeout``) and reads each one's health through
``kuasar.sandbox.state.sandbox_status`` (a local sandbox's record plus ``/proc``).

REACHABLE is ``yes`` when the guest accepts ``CONNECT 1024`` (its agent API port), ``vmm`` when the
VMM socket accepts but the guest does not answer there, ``no`` when the socket itself refuses. STATE
is ``running``, ``unresponsive``, ``agent-exited`` or ``dead``, and REASON says why in words.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from kuasar._text import printable
from kuasar.config import AGENT_PORT
from kuasar.ctl import output
from kuasar.ctl.commands import summary
from kuasar.ctl.commands._common import add_output_format, add_socket_dir, format_age, positive_seconds
from kuasar.sandbox.discovery import SandboxRef, sandbox_roots, scan
from kuasar.sandbox.state import sandbox_status

COLUMNS = ("ID", "KIND", "GUEST", "REACHABLE", "AGE", "STATE", "REASON", "SOCKET")
DESCRIPTION = """List every sandbox in the roots, probe whether it answers, and say why when it does not.

GUEST: what answers on the agent port (kuasar-agent, vmm-task for a stock Kuasar guest, kata-agent,
ttrpc for another ttrpc server, none). REACHABLE: yes (the guest answers its agent API port), vmm
(the VMM socket accepts, the guest does not answer), no (the socket refuses). STATE: running,
unresponsive, agent-exited (the VMM runs, its agent is gone) or dead; REASON says why in words,
e.g. "agent exited with status 137".
-o json adds the PIDs of a local sandbox's supervisor and agent.

Exit status: 0; 125 when the root given with -d/$KUASAR_SOCKET_DIR does not exist, or (after the
listing) when a root or sandbox directory may not be read (run as root)."""


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "ps",
        aliases=["ls"],
        help=summary("ps"),
        description=DESCRIPTION,
        epilog="examples:\n"
        "  kuasarctl ps\n"
        "  kuasarctl ps -d /tmp/ksr -o json\n"
        "  kuasarctl ps -q --no-headers | xargs -n1 kuasarctl sandbox stop",
    )
    add_socket_dir(parser)
    add_output_format(parser)
    parser.add_argument(
        "--probe-timeout", type=positive_seconds, default=0.5, metavar="SECS", help="per-sandbox probe bound"
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="IDs only (with -o json: a JSON list of IDs)"
    )
    parser.add_argument("--no-headers", action="store_true", help="omit the table's header line")
    parser.set_defaults(func=run)


async def _probe(ref: SandboxRef, bound: float) -> tuple[str, str]:
    """(REACHABLE, GUEST) of one sandbox, through the library's guest probe."""
    from kuasar.address import HvsockAddress
    from kuasar.errors import REASON_DENIED, REASON_MISSING, REASON_REFUSED
    from kuasar.session import identify

    kind, error = await identify(HvsockAddress(ref.socket, AGENT_PORT), timeout=bound)
    if error is None:
        return "yes", kind.value
    if error.reason in (REASON_REFUSED, REASON_MISSING, REASON_DENIED):
        return "no", "-"
    return "vmm", "-"


def describe(ref: SandboxRef, probed: tuple[str, str], now: float) -> dict[str, Any]:
    """One ``ps -o json`` row: the sandbox, the probe's verdict, its state and why, its PIDs."""
    reachable, guest = probed
    status = sandbox_status(ref.directory, ref.layout, reachable)
    created = status.created if status.created is not None else now
    return {
        "id": ref.id,
        "kind": status.kind,
        "socket": ref.socket,
        "reachable": reachable,
        "guest": guest,
        "state": status.state,
        "reason": status.reason,
        "created": created,
        "age_seconds": round(now - created, 3),
        "root": ref.root,
        "supervisor_pid": status.supervisor_pid,
        "agent_pid": status.agent_pid,
    }


def render_table(rows: list[dict[str, Any]], *, headers: bool = True) -> str:
    """The aligned table (every cell escaped with ``printable``); the last column is not padded."""
    lines: list[tuple[str, ...]] = [COLUMNS] if headers else []
    for row in rows:
        cells = (
            row["id"],
            row["kind"],
            row["guest"],
            row["reachable"],
            format_age(row["age_seconds"]),
            row["state"],
        )
        lines.append((*cells, row["reason"] or "-", row["socket"]))
    table = [[printable(cell) for cell in line] for line in lines]
    if not table:
        return ""
    widths = [max(len(line[col]) for line in table) for col in range(len(COLUMNS) - 1)]
    return "".join(
        "   ".join([*(cell.ljust(width) for cell, width in zip(line, widths, strict=False)), line[-1]]) + "\n"
        for line in table
    )


async def run(args: argparse.Namespace) -> int:
    """List the sandboxes; exit 125 after the listing when some could not be read (permission)."""
    import asyncio

    found = scan(sandbox_roots(args.socket_dir))
    found.check_roots()
    refs = list(found.sandboxes)
    reachable = await asyncio.gather(*(_probe(ref, args.probe_timeout) for ref in refs))
    now = time.time()
    rows = [describe(ref, verdict, now) for ref, verdict in zip(refs, reachable, strict=True)]
    if args.output == "json":
        data: list[Any] = [row["id"] for row in rows] if args.quiet else rows
        output.write_stdout(json.dumps(data, indent=2) + "\n")
    elif args.quiet:
        output.write_stdout("".join(f"{printable(row['id'])}\n" for row in rows))
    else:
        output.write_stdout(render_table(rows, headers=not args.no_headers))
    denied = found.permission_error()
    if denied is not None:
        raise denied
    return 0
