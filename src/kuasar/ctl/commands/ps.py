"""``kuasarctl ps``: every sandbox in the roots, whether it answers, and how old it is.

Layer contract: ``kuasar.ctl`` only. Probes all sandboxes concurrently, each bounded by
``--probe-timeout``: REACHABLE is ``yes`` when the guest accepts ``CONNECT 1024`` (its agent API
port), ``vmm`` when the VMM socket accepts but the guest does not answer there, ``no`` when the
socket itself refuses (a crashed sandbox).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from typing import Any

from kuasar.config import AGENT_PORT
from kuasar.ctl.commands._common import add_output_format, add_socket_dir, format_age, positive_seconds
from kuasar.sandbox.discovery import SandboxRef, list_sandboxes, sandbox_roots


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "ps",
        aliases=["ls"],
        help="list sandboxes",
        description=__doc__.split("\n\n", 1)[0] if __doc__ else None,
    )
    add_socket_dir(parser)
    add_output_format(parser)
    parser.add_argument(
        "--probe-timeout", type=positive_seconds, default=0.5, metavar="SECS", help="per-sandbox probe bound"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print IDs only")
    parser.set_defaults(func=run)


async def _probe(ref: SandboxRef, bound: float) -> str:
    from kuasar import transport
    from kuasar.address import HvsockAddress
    from kuasar.errors import ConnectError, KuasarError

    try:
        _, writer = await transport.dial(
            HvsockAddress(ref.socket, AGENT_PORT), connect_timeout=bound, retry=False
        )
    except ConnectError:
        return "no"
    except (KuasarError, TimeoutError):
        return "vmm"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return "yes"


def _describe(ref: SandboxRef, reachable: str, now: float) -> dict[str, Any]:
    from kuasar.sandbox.supervisor import read_state

    state = read_state(ref.directory)
    if state is not None:
        created = state.created
        kind = state.kind
    else:
        try:
            created = os.stat(ref.directory).st_mtime
        except OSError:
            created = now
        kind = ref.layout
    return {
        "id": ref.id,
        "kind": kind,
        "socket": ref.socket,
        "reachable": reachable,
        "created": created,
        "age_seconds": round(now - created, 3),
        "root": ref.root,
    }


async def run(args: argparse.Namespace) -> int:
    import asyncio

    refs = list_sandboxes(sandbox_roots(args.socket_dir))
    reachable = await asyncio.gather(*(_probe(ref, args.probe_timeout) for ref in refs))
    now = time.time()
    rows = [_describe(ref, state, now) for ref, state in zip(refs, reachable, strict=True)]
    if args.output == "json":
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    elif args.quiet:
        sys.stdout.write("".join(f"{row['id']}\n" for row in rows))
    else:
        table = [("ID", "KIND", "REACHABLE", "AGE", "SOCKET")]
        table += [
            (r["id"], r["kind"], r["reachable"], format_age(r["age_seconds"]), r["socket"]) for r in rows
        ]
        widths = [max(len(row[col]) for row in table) for col in range(4)]
        for row in table:
            cells = [cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)]
            sys.stdout.write("   ".join([*cells, row[4]]) + "\n")
    return 0
