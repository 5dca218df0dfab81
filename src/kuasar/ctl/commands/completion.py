"""``kuasarctl completion bash|zsh``: shell tab completion of commands, flags and live sandbox IDs.

Layer contract: ``kuasar.ctl`` only; stdlib plus ``kuasar.sandbox.discovery`` (filesystem only). The
third-party ``argcomplete`` is imported only on the two paths that need it: ``completion`` (to print
its shell code) and :func:`autocomplete`, which ``kuasar.ctl.main`` calls only when the shell asks for
completions (``$_ARGCOMPLETE`` set) — ``kuasarctl --help`` and every command never load it.

How it works: the snippet registers a shell function that runs ``kuasarctl`` itself with
``COMP_LINE``/``COMP_POINT``/``_ARGCOMPLETE=1``; argcomplete then walks the real parser and writes
the candidates to fd 8. Subcommands and flags come from the parser; a ``SANDBOX`` operand is
completed by :func:`sandbox_ids` from the roots ``-d/--socket-dir`` (else ``$KUASAR_SOCKET_DIR``,
else the defaults) selects. That reads directories only — no socket is opened, no guest probed — so
it is fast, and it never raises: on any error it offers nothing.
"""

from __future__ import annotations

import argparse
from typing import Any

from kuasar.ctl import output
from kuasar.ctl.commands import summary
from kuasar.sandbox.discovery import sandbox_roots, scan

#: The shells ``kuasarctl completion`` has a snippet for.
SHELLS = ("bash", "zsh")

#: The metavar of every positional that names a sandbox (``_common.add_sandbox``, ``sandbox stop``).
SANDBOX_METAVAR = "SANDBOX"

DESCRIPTION = """Print the shell code that enables tab completion of kuasarctl's commands, flags and
the IDs of the sandboxes that exist now (read from the sandbox roots; no guest is contacted).

bash: add to ~/.bashrc::

    eval "$(kuasarctl completion bash)"

zsh: add to ~/.zshrc (the first line only where compinit does not run already)::

    autoload -U compinit && compinit
    eval "$(kuasarctl completion zsh)"

A SANDBOX operand completes from the roots -d/--socket-dir selects, when -d comes before it."""


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "completion", help=summary("completion"), description=DESCRIPTION
    )
    parser.add_argument("shell", choices=SHELLS, metavar="SHELL", help="bash or zsh")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from argcomplete.shell_integration import shellcode

    output.write_stdout(shellcode(["kuasarctl"], shell=args.shell))
    return 0


def sandbox_ids(
    prefix: str = "",
    action: argparse.Action | None = None,
    parsed_args: argparse.Namespace | None = None,
    **_: Any,
) -> list[str]:
    """An argcomplete completer: the IDs of the sandboxes that start with ``prefix``, sorted.

    Args:
        prefix: what has been typed of the operand so far.
        action: the positional being completed; for one that takes several IDs (``sandbox stop``)
            the IDs already given are not offered again.
        parsed_args: the arguments parsed so far; its ``socket_dir`` (``-d``) picks the root.
        **_: the rest of argcomplete's completer arguments (``parser``), unused.

    Returns:
        The matching IDs (each once, even when several roots hold it); ``[]`` on any error.
    """
    try:
        socket_dir = getattr(parsed_args, "socket_dir", None)
        roots = sandbox_roots(socket_dir if isinstance(socket_dir, str) else None)
        given = getattr(parsed_args, action.dest, None) if action is not None else None
        taken = set(given) if isinstance(given, list) else set()
        found = {ref.id for ref in scan(roots).sandboxes if ref.id.startswith(prefix)}
        return sorted(found - taken)
    except Exception:
        return []


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and every subcommand parser below it, each once."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found.extend(_parsers(child))
    return found


def autocomplete(parser: argparse.ArgumentParser) -> None:
    """Answer the shell's completion request (``$_ARGCOMPLETE`` set) and exit; called by ``main``.

    Before handing ``parser`` to argcomplete it gives every ``SANDBOX`` positional the
    :func:`sandbox_ids` completer (instead of argcomplete's default, local file names) and
    ``-d/--socket-dir`` a directory completer.
    """
    import argcomplete
    from argcomplete.completers import DirectoriesCompleter

    directories = DirectoriesCompleter()
    for each in _parsers(parser):
        for action in each._actions:
            if action.option_strings:
                if "--socket-dir" in action.option_strings:
                    action.completer = directories  # type: ignore[attr-defined]
            elif action.metavar == SANDBOX_METAVAR:
                action.completer = sandbox_ids  # type: ignore[attr-defined]
    argcomplete.autocomplete(parser)
