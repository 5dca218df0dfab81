"""What ``kuasarctl`` writes to stderr: one-line errors with hints, and ``-v`` trace lines.

Layer contract: top layer (``kuasar.ctl`` only); stdlib plus ``kuasar._text``. This is the last line
of defence for the operator's terminal: every message and hint goes through ``printable``, so no
control character from an ID, a path or a guest reaches the terminal raw, and an error's first line
stays one line.
"""

from __future__ import annotations

import os
import sys

from kuasar import _tracing
from kuasar._text import printable
from kuasar.errors import KuasarError


def _write(lines: list[str]) -> None:
    sys.stderr.write("".join(printable(line) + "\n" for line in lines))
    sys.stderr.flush()


def print_error(exc: KuasarError) -> None:
    """``Error: <message>`` then each hint on its own line, as the original tool printed them."""
    _write([f"Error: {exc}", *exc.hints])


def print_internal_error(exc: BaseException, *, with_traceback: bool) -> None:
    """One line for an exception nobody expected (a bug): ``Error: internal error: <Type>: <msg>``.

    Args:
        exc: the exception.
        with_traceback: also print its traceback (``-vv``), after the line; otherwise a hint says how
            to get it.
    """
    detail = str(exc)
    line = f"Error: internal error: {type(exc).__name__}" + (f": {detail}" if detail else "")
    if not with_traceback:
        _write([line, "Run again with -vv for the traceback, and please report it."])
        return
    _write([line])
    import traceback

    sys.stderr.write("".join(traceback.format_exception(exc)))
    sys.stderr.flush()


def silence_stdout() -> None:
    """Point fd 1 at /dev/null, so the interpreter's final flush of stdout cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _stdout_failed(exc: OSError) -> KuasarError:
    silence_stdout()
    return KuasarError(f"cannot write to standard output: {exc.strerror or exc}")


def write_stdout(text: str) -> None:
    """Write a command's output; a full disk or an I/O error is one plain error (a closed pipe is not).

    Raises:
        KuasarError: ``cannot write to standard output: <reason>``.
        BrokenPipeError: the reader went away (``| head``); the boundary exits quietly.
    """
    try:
        sys.stdout.write(text)
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise _stdout_failed(exc) from exc


def write_stdout_bytes(data: bytes) -> None:
    """:func:`write_stdout` for bytes that must reach stdout unchanged (a log, a guest's console)."""
    try:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise _stdout_failed(exc) from exc


def flush_stdout() -> None:
    """Flush stdout at the end of a command, with :func:`write_stdout`'s error mapping."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise _stdout_failed(exc) from exc


def _print_trace(line: str) -> None:
    sys.stderr.write(printable(f"* {line}") + "\n")
    sys.stderr.flush()


def configure_logging(verbosity: int) -> None:
    """``-v`` prints trace lines (``* CONNECT 1025 -> OK ...``, ``* ttrpc /grpc.Health/Check stream 1
    -> OK ...``), ``-vv`` the debug log too. Without ``-v`` nothing imports ``logging`` here:
    library warnings then reach stderr through logging's last-resort handler, as before."""
    _tracing.set_sink(_print_trace if verbosity >= 1 else None)
    if verbosity < 2:
        return
    import logging

    class _Formatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return printable(f"{record.levelname.lower()}: {record.name}: {record.getMessage()}")

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG)
