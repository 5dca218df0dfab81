"""The argument parser every ``kuasarctl`` command uses: plain help text, safe errors, ``-v`` anywhere.

Layer contract: ``kuasar.ctl`` only; stdlib ``argparse`` plus ``kuasar._text``. The root parser is a
:class:`CommandParser`, and ``add_subparsers`` hands the same class to every subcommand (and to their
own subcommands), so each of them gets, without asking:

- ``-v/--verbose``, counted at every level: ``kuasarctl -v exec -v ...`` is ``-vv`` (read it with
  :func:`kuasar.ctl.quickparse.verbosity`);
- help text for terminals: docstring markup (````literal````, ``:class:`X```, a trailing ``::``)
  rendered plain, prose paragraphs re-wrapped, indented paragraphs (examples, tables) kept verbatim,
  and each option's default shown when it has a meaningful one;
- usage errors with control characters escaped (``printable``), as every other message.
"""

from __future__ import annotations

import argparse
import re
import textwrap

from kuasar._text import printable
from kuasar.ctl.quickhelp import VERBOSE_HELP, terminal_columns
from kuasar.ctl.quickparse import VERBOSE_DEST

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

_ROLE = re.compile(r":[a-z]+:`~?(?:[\w.]*\.)?([^`]+)`")
_LITERAL = re.compile(r"``(.+?)``")


def plain(text: str) -> str:
    """``text`` with reST inline markup removed: ````x```` → ``x``, ``:class:`~a.B``` → ``B``."""
    text = _ROLE.sub(r"\1", text)
    text = _LITERAL.sub(r"\1", text)
    return re.sub(r"::$", ":", text, flags=re.MULTILINE)


class HelpFormatter(argparse.HelpFormatter):
    """Plain-text help: markup removed, prose wrapped, indented blocks verbatim, defaults shown."""

    def __init__(
        self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None
    ) -> None:
        # argparse's own default width: the terminal's columns less 2
        width = terminal_columns() - 2 if width is None else width
        super().__init__(prog, indent_increment, max_help_position, width)

    def _format_text(self, text: str) -> str:
        if "%(prog)" in text:
            text = text % {"prog": self._prog}
        width = max(self._width - self._current_indent, 11)
        indent = " " * self._current_indent
        blocks = []
        for paragraph in re.split(r"\n\s*\n", plain(text).strip("\n")):
            lines = paragraph.splitlines()
            if any(line[:1].isspace() for line in lines):
                blocks.append("\n".join(indent + line.rstrip() for line in lines))
            else:
                blocks.append(
                    textwrap.fill(
                        " ".join(line.strip() for line in lines),
                        width,
                        initial_indent=indent,
                        subsequent_indent=indent,
                    )
                )
        return "\n\n".join(blocks) + "\n\n"

    def _expand_help(self, action: argparse.Action) -> str:
        return plain(super()._expand_help(action))

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help
        if text is None or "default" in text or action.default in (None, False, "", [], argparse.SUPPRESS):
            return text
        if not action.option_strings and action.nargs not in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return text
        return text + " (default: %(default)s)"


class CommandParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with kuasarctl's help formatter, ``-v`` and escaped errors.

    Args:
        *args: as for ``argparse.ArgumentParser``.
        verbose_dest: where this level's ``-v`` count goes (the root uses :data:`VERBOSE_DEST`;
            subcommands default to ``verbose:<prog>``).
        **kwargs: as for ``argparse.ArgumentParser``; ``formatter_class`` defaults to
            :class:`HelpFormatter`.
    """

    def __init__(self, *args: Any, verbose_dest: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.add_argument(
            "-v",
            "--verbose",
            dest=verbose_dest or f"{VERBOSE_DEST}:{self.prog}",
            action="count",
            default=0,
            help=VERBOSE_HELP,
        )

    def error(self, message: str) -> NoReturn:
        """Print the usage and ``message`` (escaped) to stderr, then exit with status 2."""
        super().error(printable(message))
