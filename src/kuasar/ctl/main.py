"""``kuasarctl``: the host CLI's root parser and its one error boundary.

Layer contract: top layer. The only place that calls ``asyncio.run`` (once), turns exceptions into a
stderr line plus hints, and chooses the exit code (``exit_code_for``). Its boundary (``dispatch``)
catches everything: an unexpected exception is one ``Error: internal error: ...`` line and exit 125,
never a traceback (unless ``-vv``). Subcommand modules in
``kuasar.ctl.commands`` declare their flags and return an ``int`` (or a coroutine producing one);
they import their heavy dependencies lazily so ``kuasarctl exec`` on the console path never loads
protobuf. When the shell asks for completions (``$_ARGCOMPLETE`` set), ``commands.completion``
answers before anything is parsed and exits; only then is ``argcomplete`` imported. The root's
help, version and usage error (``--help``, ``-h``, ``--version``, no words) come from
:mod:`kuasar.ctl.quickhelp`, with argparse's bytes, before argparse is imported (``quick_root``).
"""

from __future__ import annotations

import os
import sys

from kuasar import __version__
from kuasar.ctl import output
from kuasar.ctl.commands import COMMANDS
from kuasar.ctl.quickparse import PROG, VERBOSE_DEST, verbosity
from kuasar.errors import Interrupted, KuasarError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Coroutine, Sequence
    from typing import Any, NoReturn

    from kuasar.ctl.quickparse import Namespace

#: exit code for a remote process killed by signal N is 128 + N (shells and docker agree).
SIGNAL_EXIT_BASE = 128

#: The root parser's texts: :func:`build_parser` gives them to argparse, :func:`quick_root` to
#: :mod:`kuasar.ctl.quickhelp`, which prints the same help without argparse.
DESCRIPTION = "Reach inside Kuasar / Kata-style microVM sandboxes: exec, ps, local sandboxes."
EPILOG = (
    "Sandboxes are found under -d/--socket-dir, $KUASAR_SOCKET_DIR, or /run/kuasar and "
    "/run/kuasar-vmm. An ID may be a unique prefix. -v works before or after the command name."
)
VERSION = f"{PROG} {__version__}"
COMMAND_METAVAR = "COMMAND"
COMMAND_HELP = "run 'kuasarctl COMMAND --help' for its flags"


def exit_code_for(
    *, error: BaseException | None = None, exit_status: int | None = None, signal_number: int | None = None
) -> int:
    """The one mapping from an outcome to kuasarctl's exit code (design.md "Exit codes").

    A remote command's own status wins; death by signal N gives 128+N; our own failures carry their
    code (124 timeout, 125 kuasarctl failed, 126/127 not executable/not found, 130 Ctrl-C).
    """
    if error is not None:
        if isinstance(error, KuasarError):
            return error.exit_code
        if isinstance(error, KeyboardInterrupt):
            return Interrupted.exit_code
        return KuasarError.exit_code
    if signal_number:
        return SIGNAL_EXIT_BASE + signal_number
    if exit_status is not None:
        return exit_status & 0xFF
    return 0


def chosen_command(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names: its first word that is not a root option (none takes a value)."""
    return next((word for word in argv if not word.startswith("-")), None)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The root parser; every subcommand parser is a :class:`~kuasar.ctl.parser.CommandParser` too.

    Args:
        argv: the command line about to be parsed: only the module of the command it names is
            imported and registered in full, and no other; when it names none (``kuasarctl
            --help``, a typo) every command is a placeholder with its summary, for the list and
            the "invalid choice" message. ``None``: register everything (completion, tests).
    """
    import importlib

    from kuasar.ctl.parser import CommandParser

    parser = CommandParser(prog=PROG, description=DESCRIPTION, epilog=EPILOG, verbose_dest=VERBOSE_DEST)
    parser.add_argument("--version", action="version", version=VERSION)
    commands = parser.add_subparsers(
        dest="command", metavar=COMMAND_METAVAR, required=True, help=COMMAND_HELP
    )
    chosen = None if argv is None else chosen_command(argv)
    wanted = {module for name, aliases, module, _ in COMMANDS if argv is None or chosen in (name, *aliases)}
    registered: set[str] = set()
    for name, aliases, module, summary in COMMANDS:
        if module not in wanted:
            if not wanted:  # --help, a typo: the list of commands (each parser costs ~0.5 ms)
                commands.add_parser(name, aliases=list(aliases), help=summary, add_help=False)
        elif module not in registered:
            registered.add(module)
            importlib.import_module(f"kuasar.ctl.commands.{module}").register(commands)
    return parser


def _run(result: int | Coroutine[Any, Any, int]) -> int:
    if isinstance(result, int):
        return result
    import asyncio

    return asyncio.run(result)


def _unwrap(exc: Exception) -> Exception:
    """The one exception inside (nested) single-member exception groups, e.g. from a TaskGroup."""
    while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def quick_parse(words: Sequence[str]) -> Namespace | None:
    """``words`` parsed by their command's own quick parser (``exec`` has one: see
    :mod:`kuasar.ctl.quickparse`), without argparse; ``None`` when argparse must parse them."""
    if words and words[0] == "exec":
        from kuasar.ctl.commands import exec_cmd

        return exec_cmd.parse(list(words))
    return None


def quick_root(words: Sequence[str]) -> int | None:
    """``kuasarctl --help``, ``-h``, ``--version`` or a bare ``kuasarctl`` printed as argparse prints
    them, without argparse (:mod:`kuasar.ctl.quickhelp`): the exit code, or ``None`` (nothing
    printed) when argparse must answer."""
    if len(words) > 1 or (words and not words[0].startswith("-")):
        return None
    from kuasar.ctl import quickhelp

    root = quickhelp.Root(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EPILOG,
        version=VERSION,
        metavar=COMMAND_METAVAR,
        help=COMMAND_HELP,
        commands=[(name, aliases, summary) for name, aliases, _, summary in COMMANDS],
    )
    return quickhelp.answer(root, words)


def dispatch(args: Namespace) -> int:
    """Run the parsed command behind the one error boundary; returns the exit code.

    A :class:`~kuasar.errors.KuasarError` prints its line and hints and gives its exit code; Ctrl-C
    gives 130; a closed stdout (``| head``) gives 141 quietly; anything else is a bug and becomes one
    line, ``Error: internal error: <Type>: <message>``, exit 125 (the traceback with ``-vv``).
    """
    verbose = verbosity(args)
    try:
        code = _run(args.func(args))
        output.flush_stdout()
    except KeyboardInterrupt as interrupt:
        return exit_code_for(error=interrupt)
    except Exception as caught:
        error = _unwrap(caught)
        if isinstance(error, KuasarError):
            output.print_error(error)
        elif isinstance(error, BrokenPipeError):
            # stdout went away (e.g. `| head`): not our failure to report.
            from kuasar._signals import SIGPIPE

            output.silence_stdout()
            return SIGNAL_EXIT_BASE + SIGPIPE
        else:
            output.print_internal_error(error, with_traceback=verbose >= 2)
        return exit_code_for(error=error)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``kuasarctl`` command line (``sys.argv[1:]`` by default); returns its exit code."""
    words = sys.argv[1:] if argv is None else list(argv)
    completing = "_ARGCOMPLETE" in os.environ  # the shell asks for completions: answer and exit
    if not completing:
        code = quick_root(words)
        if code is not None:
            return code
    args = None if completing else quick_parse(words)
    if args is None:
        parser = build_parser(None if completing else words)
        if completing:
            from kuasar.ctl.commands import completion

            completion.autocomplete(parser)
        args = parser.parse_args(words)
    output.configure_logging(verbosity(args))
    return dispatch(args)


#: Modules whose presence means the interpreter's teardown has work to do: threads to join, atexit
#: handlers (logging's flush, asyncio's executors) or weakref finalizers (tempfile's cleanup).
_NEEDS_TEARDOWN = frozenset({"threading", "atexit", "weakref"})
#: Allocations between collections of the youngest generation (CPython's default: 700). Start-up
#: makes tens of thousands of long-lived objects (modules, classes, functions); the default would
#: scan them again and again for cycles that are not there.
GC_THRESHOLD = 20_000


def run() -> NoReturn:
    """The ``kuasarctl`` console script (and ``python -m kuasar.ctl``): :func:`main`, then exit.

    A one-shot command has written and flushed everything when :func:`main` returns; the
    interpreter's teardown would then free every module and object one by one (≈ 2.5 ms at
    ``exec``'s size, a quarter of its budget, issue 12) for nothing. So when nothing needing that
    teardown was loaded (see ``_NEEDS_TEARDOWN``: true on exec's blocking paths), the process
    leaves with ``os._exit`` once stdout and stderr are flushed; otherwise, or when a flush fails,
    through ``sys.exit`` as any program.
    """
    import gc

    gc.set_threshold(GC_THRESHOLD)
    code = main()
    if _NEEDS_TEARDOWN.isdisjoint(sys.modules):
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # the interpreter's own exit reports it, as for any program
        else:
            os._exit(code)
    sys.exit(code)
