"""``kuasarctl --help``, ``-h``, ``--version`` and a bare ``kuasarctl`` without ``argparse``: the root
parser's help, version and usage error rendered here, byte for byte as ``argparse`` renders them.

Layer contract: ``kuasar.ctl`` only; no imports beyond ``os`` and ``sys`` (``argparse`` loads ``re``,
``enum``, ``gettext`` and ``shutil``: ~10 ms, the whole budget of printing the root help). It copies
no text of the parser: :mod:`kuasar.ctl.main` hands over the strings ``build_parser`` is built from,
as a :class:`Root`; only the wording of the root's three flags (argparse's own ``-h`` and ``--version``,
:class:`~kuasar.ctl.parser.CommandParser` takes ``-v``'s from here) is in :data:`FLAGS`.

The layout replays ``argparse.HelpFormatter`` for exactly that parser's shape (three flags, one
subcommand positional with a list of commands) and ``textwrap``'s line breaking, including its
breaks after the hyphen of a compound word (``kuasar-`` / ``vmm``). Whenever it cannot be sure of
the same bytes, :func:`render` gives ``None`` and ``argparse`` prints instead: a word longer than its
line (``textwrap`` would cut it), a text with markup or ``%`` (``CommandParser`` rewrites those),
with non-ASCII characters or with other whitespace than single spaces. The equivalence with
``argparse`` is a property test (``tests/unit/test_quickhelp.py``).
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

#: The command lines answered here (``[]`` is the "arguments are required" usage error).
WORDS = ((), ("-h",), ("--help",), ("--version",))

#: The root's flags as its help lists them: (invocation, help), in ``parser._actions`` order.
#: The help of every parser's ``-v`` (:class:`~kuasar.ctl.parser.CommandParser` adds it).
VERBOSE_HELP = "trace connections and ttrpc calls (-vv: debug log and tracebacks)"
FLAGS = (
    ("-h, --help", "show this help message and exit"),
    ("-v, --verbose", VERBOSE_HELP),
    ("--version", "show program's version number and exit"),
)

# argparse's HelpFormatter defaults
_INDENT = 2
_MAX_HELP_POSITION = 24
_MIN_TEXT_WIDTH = 11


class Root:
    """The texts of the root parser, as ``kuasar.ctl.main.build_parser`` passes them to argparse.

    Args:
        prog: the program name.
        description, epilog: the parser's.
        version: what ``--version`` prints.
        metavar, help: the subcommand positional's.
        commands: (name, aliases, summary) of each command, in list order.
    """

    __slots__ = ("commands", "description", "epilog", "help", "metavar", "prog", "version")

    def __init__(
        self,
        *,
        prog: str,
        description: str,
        epilog: str,
        version: str,
        metavar: str,
        help: str,
        commands: Sequence[tuple[str, Sequence[str], str]],
    ) -> None:
        self.prog = prog
        self.description = description
        self.epilog = epilog
        self.version = version
        self.metavar = metavar
        self.help = help
        self.commands = commands


def terminal_columns() -> int:
    """``shutil.get_terminal_size().columns`` (``$COLUMNS``, else the terminal on stdout, else 80),
    which argparse's formatter asks for (:mod:`kuasar.ctl.parser` gives it this), without importing
    ``shutil`` (and its ``bz2``, ``lzma``)."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns > 0:
        return columns
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80


def answer(root: Root, words: Sequence[str]) -> int | None:
    """Print what ``argparse`` prints for ``words`` (one of :data:`WORDS`) to the stream it uses, and
    return the exit code it exits with; ``None``, having printed nothing, when argparse must."""
    rendered = render(root, words, terminal_columns())
    if rendered is None:
        return None
    code, text = rendered
    stream = sys.stdout if code == 0 else sys.stderr
    for part in text:  # as argparse's _print_message: a closed or broken stream is no error here
        try:  # noqa: SIM105 (contextlib.suppress: one import more)
            stream.write(part)
        except (AttributeError, OSError):
            pass
    return code


def render(root: Root, words: Sequence[str], columns: int) -> tuple[int, tuple[str, ...]] | None:
    """The exit code and the writes ``argparse`` makes for ``words`` on a terminal ``columns`` wide
    (stdout when the code is 0, stderr otherwise), or ``None`` when only argparse can tell."""
    words = tuple(words)
    if words not in WORDS or not _plain(root):
        return None
    width = columns - 2  # argparse's HelpFormatter: the terminal's columns less 2
    if not words:
        message = f"{root.prog}: error: the following arguments are required: {root.metavar}\n"
        return 2, (_usage(root, width), message)
    if words == ("--version",):
        try:
            return 0, (_text(root.version, width) + "\n",)
        except _WouldCut:
            return None
    try:
        return 0, (_help(root, width),)
    except _WouldCut:
        return None


def _plain(root: Root) -> bool:
    """Whether every text of ``root`` reaches argparse's wrapping unchanged: ASCII, single spaces,
    no markup or ``%`` for ``CommandParser`` to rewrite; names and metavar single plain words."""
    texts = [root.description, root.epilog, root.version, root.help]
    texts += [summary for _, _, summary in root.commands]
    for text in texts:
        if not text.isascii() or text != " ".join(text.split()) or not text:
            return False
        if "`" in text or "::" in text or "%" in text:
            return False
    names = [root.prog, root.metavar]
    for name, aliases, _ in root.commands:
        names += [name, *aliases]
    if not all(name and name.isascii() and name.isprintable() and " " not in name for name in names):
        return False
    return all(char.isalnum() or char == "_" for char in root.metavar)  # one usage part, unbracketed


def _usage(root: Root, width: int) -> str:
    """``format_usage()``'s "usage: ..." line(s), ``_format_usage`` and its ``get_lines`` replayed."""
    prefix = "usage: "
    prog = root.prog
    opt_parts = [f"[{invocation.split(',')[0]}]" for invocation, _ in FLAGS]
    pos_parts = [root.metavar, "..."]
    usage = " ".join([prog, *opt_parts, *pos_parts])
    text_width = width
    if len(prefix) + len(usage) <= text_width:
        return prefix + usage + "\n"

    def get_lines(parts: list[str], indent: str, prefix: str | None = None) -> list[str]:
        lines = []
        line: list[str] = []
        line_len = len(prefix) - 1 if prefix is not None else len(indent) - 1
        for part in parts:
            if line_len + 1 + len(part) > text_width and line:
                lines.append(indent + " ".join(line))
                line = []
                line_len = len(indent) - 1
            line.append(part)
            line_len += len(part) + 1
        if line:
            lines.append(indent + " ".join(line))
        if prefix is not None:
            lines[0] = lines[0][len(indent) :]
        return lines

    if len(prefix) + len(prog) <= 0.75 * text_width:
        indent = " " * (len(prefix) + len(prog) + 1)
        lines = get_lines([prog, *opt_parts], indent, prefix)
        lines.extend(get_lines(pos_parts, indent))
    else:
        indent = " " * len(prefix)
        lines = get_lines(opt_parts + pos_parts, indent)
        if len(lines) > 1:
            lines = get_lines(opt_parts, indent) + get_lines(pos_parts, indent)
        lines = [prog, *lines]
    return prefix + "\n".join(lines) + "\n"


class _WouldCut(Exception):
    """textwrap would cut a word: only argparse can tell what it prints."""


def _lines(text: str, width: int) -> list[str]:
    lines = wrap(text, width)
    if lines is None:
        raise _WouldCut
    return lines


def _text(text: str, width: int) -> str:
    """A description, epilog or version at indent 0 as ``_format_text`` fills it (no final newline)."""
    return "\n".join(_lines(text, max(width, _MIN_TEXT_WIDTH)))


def _help(root: Root, width: int) -> str:
    """``format_help()``: usage, description, the two argument sections, epilog."""
    commands = [
        (name + (f" ({', '.join(aliases)})" if aliases else ""), summary)
        for name, aliases, summary in root.commands
    ]
    # _action_max_length: every invocation counts at the section's indent, a subcommand's too
    invocations = [invocation for invocation, _ in FLAGS] + [root.metavar] + [name for name, _ in commands]
    longest = max(map(len, invocations)) + _INDENT
    help_position = min(longest + 2, _MAX_HELP_POSITION, max(width - 20, _INDENT * 2))
    help_width = max(width - help_position, _MIN_TEXT_WIDTH)

    def action(indent: int, header: str, text: str) -> str:
        action_width = help_position - indent - 2
        if len(header) <= action_width:
            first = " " * indent + header.ljust(action_width) + "  "
            indent_first = 0
        else:
            first = " " * indent + header + "\n"
            indent_first = help_position
        lines = _lines(text, help_width)
        parts = [first, " " * indent_first + lines[0] + "\n"]
        parts += [" " * help_position + line + "\n" for line in lines[1:]]
        return "".join(parts)

    positionals = [action(_INDENT, root.metavar, root.help)]
    positionals += [action(2 * _INDENT, name, summary) for name, summary in commands]
    options = [action(_INDENT, invocation, text) for invocation, text in FLAGS]
    page = "".join(
        [
            "\n",
            _usage(root, width) + "\n",
            _text(root.description, width) + "\n\n",
            "\npositional arguments:\n" + "".join(positionals) + "\n",
            "\noptions:\n" + "".join(options) + "\n",
            _text(root.epilog, width) + "\n\n",
            "\n",
        ]
    )
    while "\n\n\n" in page:  # argparse's _long_break_matcher: \n\n\n+ becomes \n\n
        page = page.replace("\n\n\n", "\n\n")
    return page.strip("\n") + "\n"


# textwrap's classes of characters (its wordsep_re), for ASCII text
_WHITESPACE = "\t\n\x0b\x0c\r "
_WORD_PUNCT = "!\"'&.,?"


def _letter(char: str) -> bool:  # [^\d\W]
    return char.isalpha() or char == "_"


def _word(char: str) -> bool:  # \w
    return char.isalnum() or char == "_"


def _dashes_then_word(text: str, start: int) -> bool:
    """``-{2,}(?=\\w)`` matches at ``start``."""
    end = start
    while end < len(text) and text[end] == "-":
        end += 1
    return end - start >= 2 and end < len(text) and _word(text[end])


def chunks(text: str) -> list[str]:
    """``textwrap.TextWrapper()._split(text)`` for ASCII ``text``: whitespace runs, em-dashes between
    words, and words, each cut after the hyphen of a compound (``goof-`` ``ball``)."""
    found = []
    size = len(text)
    at = 0

    def letter(index: int) -> bool:
        return 0 <= index < size and _letter(text[index])

    def punct(index: int) -> bool:
        return 0 <= index < size and (_word(text[index]) or text[index] in _WORD_PUNCT)

    while at < size:
        if text[at] in _WHITESPACE:  # whitespace+
            end = at
            while end < size and text[end] in _WHITESPACE:
                end += 1
        elif punct(at - 1) and _dashes_then_word(text, at):  # (?<=wp) -{2,} (?=\w)
            end = at
            while text[end] == "-":
                end += 1
        else:  # nowhitespace+? then: a compound's hyphen | the word's end | an em-dash after it
            end = at + 1
            while True:
                if (
                    end < size
                    and text[end] == "-"
                    and (
                        (letter(end - 2) and letter(end - 1))
                        or (letter(end - 3) and text[end - 2] == "-" and letter(end - 1))
                    )
                    and letter(end + 1)
                    and (letter(end + 2) or (end + 2 < size and text[end + 2] == "-" and letter(end + 3)))
                ):
                    end += 1
                    break
                if end == size or text[end] in _WHITESPACE:
                    break
                if punct(end - 1) and _dashes_then_word(text, end):
                    break
                end += 1
        found.append(text[at:end])
        at = end
    return found


def wrap(text: str, width: int) -> list[str] | None:
    """``textwrap.wrap(text, width)`` for ASCII ``text`` with single spaces, or ``None`` where
    textwrap would cut a word longer than ``width`` (``width`` >= 1)."""
    pending = chunks(text)
    pending.reverse()
    lines: list[str] = []
    while pending:
        line: list[str] = []
        length = 0
        if lines and pending[-1].isspace():
            del pending[-1]
        while pending and length + len(pending[-1]) <= width:
            length += len(pending[-1])
            line.append(pending.pop())
        if pending and len(pending[-1]) > width:
            return None
        if line and line[-1].isspace():
            del line[-1]
        if line:
            lines.append("".join(line))
    return lines
