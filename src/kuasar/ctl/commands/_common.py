"""Flags and helpers shared by several subcommands.

Layer contract: ``kuasar.ctl`` only; no asyncio, no protobuf at import time.
"""

from __future__ import annotations

import argparse

from kuasar.sandbox.discovery import SandboxRef, resolve_sandbox, sandbox_roots


def add_socket_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-d",
        "--socket-dir",
        metavar="DIR",
        help="sandbox root to search (default: $KUASAR_SOCKET_DIR, else /run/kuasar and /run/kuasar-vmm)",
    )


def add_output_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table", help="output format")


def resolve(args: argparse.Namespace, query: str) -> SandboxRef:
    return resolve_sandbox(query, sandbox_roots(args.socket_dir))


def positive_seconds(text: str) -> float:
    """argparse type for a timeout in seconds (``5``, ``0.5``, ``2s``, ``1m``)."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    number, scale = text, 1.0
    for suffix in ("ms", "s", "m", "h"):
        if text.endswith(suffix):
            number, scale = text[: -len(suffix)], units[suffix]
            break
    try:
        value = float(number) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 5, 0.5, 2s, 1m)") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"duration must be positive: {text!r}")
    return value


def format_age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
