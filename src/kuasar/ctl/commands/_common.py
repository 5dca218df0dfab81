"""Flags and helpers shared by several subcommands.

Layer contract: ``kuasar.ctl`` only; no asyncio, no protobuf at import time.
"""

from __future__ import annotations

from kuasar.ctl.quickparse import Option
from kuasar.errors import UsageError
from kuasar.sandbox.discovery import SandboxRef, resolve_sandbox, sandbox_roots

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

    from kuasar.ctl.quickparse import Namespace
    from kuasar.session import GuestTarget

#: What a ``SANDBOX`` operand may be, for every command's help.
SANDBOX_HELP = "sandbox ID, unique prefix, or sandbox directory"


def _type_error(message: str) -> Exception:
    """argparse's error for a value its ``type`` refuses (argparse is imported only then)."""
    import argparse

    return argparse.ArgumentTypeError(message)


def non_empty(text: str) -> str:
    """argparse type for a path or name that must not be empty (``-d ''`` is a usage error)."""
    if not text:
        raise _type_error("must not be empty")
    return text


def positive_int(text: str) -> int:
    """argparse type for a count or size that must be a positive integer (``--cpus 2``)."""
    try:
        value = int(text)
    except ValueError:
        raise _type_error(f"not an integer: {text!r}") from None
    if value <= 0:
        raise _type_error(f"must be positive: {text!r}")
    return value


#: ``-d/--socket-dir DIR``: the one sandbox root to search (it must exist).
SOCKET_DIR = Option(
    "-d",
    "--socket-dir",
    dest="socket_dir",
    metavar="DIR",
    type=non_empty,
    help="sandbox root to search (default: $KUASAR_SOCKET_DIR, else /run/kuasar and /run/kuasar-vmm)",
)


def add_socket_dir(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    """:data:`SOCKET_DIR` on ``parser``, or with ``help``'s meaning."""
    kwargs = SOCKET_DIR.kwargs()
    parser.add_argument(*SOCKET_DIR.flags, **{**kwargs, "help": help or kwargs["help"]})


def add_sandbox(parser: argparse.ArgumentParser) -> None:
    """The ``SANDBOX`` positional (an ID, a unique prefix, or an absolute sandbox directory)."""
    parser.add_argument("sandbox", metavar="SANDBOX", help=SANDBOX_HELP)


def add_output_format(parser: argparse.ArgumentParser) -> None:
    """``-o/--output table|json``."""
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table", help="output format")


def resolve(args: Namespace, query: str) -> SandboxRef:
    """The sandbox ``query`` names in the roots ``args.socket_dir`` selects (see ``resolve_sandbox``)."""
    return resolve_sandbox(query, sandbox_roots(args.socket_dir))


def guest_target(args: Namespace, query: str, *, console_port: int | None = None) -> tuple[GuestTarget, str]:
    """What ``query`` names — a sandbox (ID, prefix, directory) in the roots ``args.socket_dir``
    selects, or an address (``scheme://...``) — as a guest target, and its name for output."""
    from kuasar.session import GuestTarget

    if "://" in query:
        return GuestTarget.for_address(query, console_port=console_port), query
    ref = resolve(args, query)
    return GuestTarget.for_socket(ref.socket, console_port=console_port, label=ref.id), ref.id


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
        raise _type_error(f"not a duration: {text!r} (e.g. 5, 0.5, 2s, 1m)") from None
    if not value > 0 or value == float("inf"):
        raise _type_error(f"duration must be positive: {text!r}")
    return value


def check_user_spec(spec: str) -> str:
    """Refuse a bad ``-u`` (malformed, or a uid/gid outside 0 … 2^32-2) before anything connects.

    Returns:
        ``spec`` unchanged.

    Raises:
        UsageError: one line naming what is wrong (exit 2).
    """
    if not spec:  # no -u: nothing to check (and no userspec module to load)
        return spec
    from kuasar.userspec import InvalidUserSpec, parse_user_spec

    try:
        parse_user_spec(spec)
    except InvalidUserSpec as exc:
        raise UsageError(str(exc)) from None
    return spec


def format_age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
