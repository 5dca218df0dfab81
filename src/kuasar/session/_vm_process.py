"""``grpc.SandboxService/ExecVMProcess`` (a stock Kuasar vmm-task's one-shot exec), sans-IO: the
command string we send and how a failure's status message gives back the exit code and stderr.

Layer contract: bottom of ``kuasar.session``; ``kuasar.console`` (the same exact argv quoting as the
console path) and ``kuasar.errors`` only.

vmm-task runs ``/bin/bash -c <command>`` with the optional stdin and answers ``out`` (stdout) when
the command exits 0. Any other exit is status UNKNOWN whose message is the Rust ``Debug`` text of
its error value: ``Others("Other: cmd <command> failed with exit code N and error message
<stderr>")`` — the inner string escaped as Rust escapes a ``str`` (``\\"``, ``\\\\``, ``\\n``, ``\\t``,
``\\r``, ``\\0``, ``\\u{..}``). Stdout of a failed command is lost; that is vmm-task's contract.
"""

from __future__ import annotations

import functools

from kuasar import wire
from kuasar._record import Record
from kuasar.console import shell_command
from kuasar.errors import DeadlineExceeded, RPCError
from kuasar.remote_exec import CompletedProcess

TYPE_CHECKING = False
if TYPE_CHECKING:
    import re
    from collections.abc import Mapping, Sequence

SERVICE = "grpc.SandboxService"
_DEADLINE_EXCEEDED = 4  # the gRPC status code
METHOD = "ExecVMProcess"

_SIMPLE = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", '"': '"', "'": "'"}


@functools.cache
def _patterns() -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    """(Rust ``Debug`` string, its escapes, vmm-task's failure text), compiled on first use
    (``import re`` is not on exec's start-up path)."""
    import re

    return (
        re.compile(r'^\s*\w+\("(?P<inner>.*)"\)\s*$', re.DOTALL),
        re.compile(r"\\(u\{[0-9a-fA-F]{1,6}\}|.)", re.DOTALL),
        re.compile(r"failed with exit code (?P<code>-?\d+) and error message (?P<stderr>.*)\Z", re.DOTALL),
    )


class VmProcessFailure(Record):
    """A failed ExecVMProcess, read from its status message.

    Attributes:
        exit_code: the command's exit code as vmm-task reports it (128+N for a signal).
        stderr: what the command wrote to stderr (vmm-task decoded it lossily as UTF-8).
    """

    exit_code: int
    stderr: bytes


def vm_process_command(
    argv: Sequence[str | bytes], *, env: Mapping[str, str | bytes] | None = None, cwd: str | bytes = ""
) -> str:
    """The ``command`` field that makes ``bash -c`` run exactly ``argv``."""
    return shell_command(argv, env=env, cwd=cwd)


def unescape_debug(text: str) -> str:
    """Undo Rust's ``Debug`` escaping of a string's contents."""

    def replace(match: re.Match[str]) -> str:
        escape = match.group(1)
        if escape.startswith("u{"):
            return chr(int(escape[2:-1], 16))
        return _SIMPLE.get(escape, escape)

    return _patterns()[1].sub(replace, text)


def parse_failure(message: str, command: str = "") -> VmProcessFailure | None:
    """The exit code and stderr in an UNKNOWN status message, or ``None`` if it is not one of
    ExecVMProcess's "failed with exit code" errors (then the message is the whole story).

    Args:
        message: the status message.
        command: the command that was sent: the search starts after it, so a command that itself
            contains "failed with exit code" cannot confuse the parse.
    """
    debug = _patterns()[0].match(message)
    inner = unescape_debug(debug.group("inner")) if debug else message
    start = inner.find(command) + len(command) if command and command in inner else 0
    failed = _patterns()[2].search(inner, start)
    if failed is None:
        return None
    return VmProcessFailure(int(failed.group("code")), failed.group("stderr").encode("utf-8", "replace"))


def vm_process_request(
    argv: Sequence[str | bytes],
    *,
    input: bytes = b"",
    env: Mapping[str, str | bytes] | None = None,
    cwd: str | bytes = "",
) -> tuple[str, bytes]:
    """(the command string, the encoded ``ExecVMProcessRequest``) for ``argv``."""
    command = vm_process_command(argv, env=env, cwd=cwd)
    return command, wire.ExecVMProcessRequest(command=command, stdin=input).encode()


def vm_process_result(
    argv: Sequence[str | bytes],
    command: str,
    *,
    reply: bytes | None = None,
    error: RPCError | None = None,
    timeout: float | None = None,
) -> CompletedProcess:
    """The outcome of an ExecVMProcess call from its reply payload or its error status.

    Raises:
        DeadlineExceeded: ``error`` is DEADLINE_EXCEEDED and the call had ``timeout``: the guest
            enforced that very timeout (it got it as ``timeout_nano``), a hair before the caller's
            own clock would have; the same outcome as when it expires here.
        RPCError: ``error`` when it is not one of ExecVMProcess's "failed with exit code" errors.
    """
    names = tuple(arg if isinstance(arg, str) else arg.decode(errors="surrogateescape") for arg in argv)
    if error is not None and error.code == _DEADLINE_EXCEEDED and timeout is not None:
        raise DeadlineExceeded(f"timed out after {timeout:g} s") from None
    if error is not None:
        failure = parse_failure(error.message, command)
        if failure is None:
            raise error
        return CompletedProcess(names, failure.exit_code, stderr=failure.stderr)
    out = wire.ExecVMProcessResponse.decode(reply or b"").out
    return CompletedProcess(names, 0, stdout=out.encode("utf-8", "surrogateescape"))
