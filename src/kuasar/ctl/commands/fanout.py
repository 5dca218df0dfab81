"""``kuasarctl exec --all``: one command in many sandboxes at once, each by its own best path.

Layer contract: ``kuasar.ctl`` only; the library's guest session (``kuasar.session``) reaches each
guest, discovery (``kuasar.sandbox.discovery``) lists them. Output lines are prefixed with the
sandbox ID and written whole (one write per line, so lines of different sandboxes never mix
mid-line); ``-o json`` prints one record per sandbox as it finishes. The exit code is the highest.
Its flags are rows of ``exec``'s options (``kuasar.ctl.commands.exec_cmd.OPTIONS``, group ``all``).
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Sequence
from typing import Any

from kuasar._fdio import write_all_blocking
from kuasar._text import printable
from kuasar.errors import KuasarError, UsageError
from kuasar.sandbox.discovery import SandboxRef, sandbox_roots, scan

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kuasar.ctl.quickparse import Namespace

STDOUT, STDERR = 1, 2


class _Lines:
    """One sandbox's output on one fd: whole lines out, each with the prefix, in one write."""

    def __init__(self, fd: int, prefix: bytes) -> None:
        self.fd = fd
        self.prefix = prefix
        self.pending = bytearray()

    def feed(self, chunk: bytes) -> None:
        self.pending += chunk
        end = self.pending.rfind(b"\n")
        if end < 0:
            return
        lines = bytes(self.pending[: end + 1])
        del self.pending[: end + 1]
        if self.prefix:
            lines = b"".join(self.prefix + line for line in lines.splitlines(keepends=True))
        write_all_blocking(self.fd, lines)

    def flush(self) -> None:
        if self.pending:
            self.feed(b"\n")


def _text_or_base64(key: str, data: bytes) -> dict[str, str]:
    try:
        return {key: data.decode()}
    except UnicodeDecodeError:
        return {f"{key}_base64": base64.b64encode(data).decode()}


async def _one(ref: SandboxRef, argv: Sequence[str], args: Namespace, env: dict[str, str]) -> dict[str, Any]:
    from kuasar.ctl.main import exit_code_for
    from kuasar.session import GuestTarget, Session

    json_mode = args.output == "json"
    prefix = b"" if args.no_prefix else printable(ref.id).encode() + b": "
    streams = {STDOUT: _Lines(STDOUT, prefix), STDERR: _Lines(STDERR, prefix)}
    record: dict[str, Any] = {"id": ref.id, "guest": None, "path": None}

    async def on_output(fd: int, chunk: bytes) -> None:
        streams[fd].feed(chunk)

    try:
        async with await Session.open(GuestTarget.for_socket(ref.socket, label=ref.id)) as session:
            record["guest"] = session.kind.value
            path, result = await session.run(
                argv,
                timeout=args.timeout,
                env=env,
                cwd=args.workdir,
                connect_timeout=args.connect_timeout,
                on_output=None if json_mode else on_output,
            )
        record["path"] = path.value
        record["exit"] = exit_code_for(exit_status=result.exit_status, signal_number=result.signal)
        record |= _text_or_base64("stdout", result.stdout) | _text_or_base64("stderr", result.stderr)
    except KuasarError as exc:
        record["exit"] = exc.exit_code
        record["error"] = str(exc)
        if not json_mode:
            write_all_blocking(STDERR, prefix + printable(f"Error: {exc}").encode() + b"\n")
    finally:
        for lines in streams.values():
            lines.flush()
    if json_mode:
        write_all_blocking(STDOUT, json.dumps(record).encode() + b"\n")
    return record


async def run_all(args: Namespace, argv: Sequence[str], env: dict[str, str]) -> int:
    """Run ``argv`` in every sandbox (matching ``--prefix``); the highest exit code."""
    if args.interactive:
        raise UsageError("--all runs one-shot commands: -i/-it cannot be used with it")
    if not argv:
        raise UsageError("no command given", hints=["kuasarctl exec --all -- CMD..."])
    unsupported = [
        flag
        for flag, on in (("-u", args.user), ("--container", args.container), ("--tty", args.force_tty))
        if on
    ]
    if unsupported:
        raise UsageError(f"{', '.join(unsupported)} cannot be used with --all")
    if args.parallel < 1:
        raise UsageError(f"-P must be at least 1, not {args.parallel}")
    import asyncio

    found = scan(sandbox_roots(args.socket_dir), prefix=args.prefix)
    found.check_roots()
    refs = list(found.sandboxes)
    if not refs:
        where = f' with prefix "{printable(args.prefix)}"' if args.prefix else ""
        raise KuasarError(f"no sandboxes{where} in {', '.join(sandbox_roots(args.socket_dir))}")
    limit = asyncio.Semaphore(args.parallel)

    async def bounded(ref: SandboxRef) -> dict[str, Any]:
        async with limit:
            return await _one(ref, argv, args, env)

    records = await asyncio.gather(*(bounded(ref) for ref in refs))
    sys.stdout.flush()
    return max(int(record["exit"]) for record in records)
