"""``kuasarctl info SANDBOX [-o json]``: the guest's system information from the agent API.

Layer contract: ``kuasar.ctl`` only. Resolves the sandbox, reaches it through the library's guest
session (``kuasar.session``, imported lazily: protobuf stays off ``kuasarctl --help``), calls
``Agent/GetSystemInfo`` and prints a two-column table or JSON. A guest without the agent API is a
clear error (exit 125).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from kuasar._text import printable
from kuasar.config import DEFAULT_LIMITS
from kuasar.ctl import output
from kuasar.ctl.commands import summary
from kuasar.ctl.commands._common import (
    add_output_format,
    add_sandbox,
    add_socket_dir,
    format_age,
    guest_target,
    positive_seconds,
)


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "info", help=summary("info"), description="Show the guest's system information."
    )
    add_socket_dir(parser)
    add_output_format(parser)
    parser.add_argument(
        "--connect-timeout", type=positive_seconds, default=2.0, metavar="SECS", help="agent connect bound"
    )
    add_sandbox(parser)
    parser.set_defaults(func=run)


def _size(value: int) -> str:
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{value} B"  # pragma: no cover


def as_dict(sandbox_id: str, info: Any) -> dict[str, Any]:
    """The JSON form of a ``SystemInfo`` message (stable keys, numbers as numbers)."""
    return {
        "sandbox": sandbox_id,
        "hostname": info.hostname,
        "kernel_version": info.kernel_version,
        "os_name": info.os_name,
        "os_version": info.os_version,
        "arch": info.arch,
        "cpu_count": info.cpu_count,
        "total_memory": info.total_memory,
        "available_memory": info.available_memory,
        "load_average": [round(value, 2) for value in info.load_average],
        "uptime": info.uptime,
        "ip_addresses": list(info.ip_addresses),
        "agent_version": info.agent_version,
    }


def render_table(data: dict[str, Any]) -> str:
    """``FIELD  value`` lines, human units."""
    os_text = " ".join(part for part in (data["os_name"], data["os_version"]) if part) or "-"
    rows = [
        ("Sandbox", data["sandbox"]),
        ("Hostname", data["hostname"] or "-"),
        ("OS", os_text),
        ("Kernel", data["kernel_version"] or "-"),
        ("Arch", data["arch"] or "-"),
        ("CPUs", str(data["cpu_count"])),
        ("Memory", f"{_size(data['available_memory'])} available of {_size(data['total_memory'])}"),
        ("Load", " ".join(f"{value:.2f}" for value in data["load_average"]) or "-"),
        ("Uptime", format_age(data["uptime"])),
        ("Addresses", ", ".join(data["ip_addresses"]) or "-"),
        ("Agent", data["agent_version"] or "-"),
    ]
    width = max(len(name) for name, _ in rows)
    return "".join(f"{name + ':':<{width + 2}}{printable(value)}\n" for name, value in rows)


async def run(args: argparse.Namespace) -> int:
    from kuasar.session import Session

    target, name = guest_target(args, args.sandbox)
    async with await Session.open(target, probe_timeout=args.connect_timeout) as session:
        guest = session.require_api("info (GetSystemInfo)")
        info = await guest.system_info(timeout=DEFAULT_LIMITS.call_timeout)
    data = as_dict(name, info)
    if args.output == "json":
        output.write_stdout(json.dumps(data, indent=2) + "\n")
    else:
        output.write_stdout(render_table(data))
    return 0
