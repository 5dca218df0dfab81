"""The command line of a one-shot command without ``argparse``: its options declared once, parsed
here when the words are plain, registered with ``argparse`` otherwise.

Layer contract: ``kuasar.ctl`` only; no imports beyond ``sys`` (this is ``kuasarctl exec``'s
start-up path: ``argparse`` with the ``re``, ``gettext`` and ``shutil`` it loads, and building its
parser, cost more than the rest of a run). A command declares its flags as :class:`Option` rows;
:func:`register` adds the same rows to an ``argparse`` parser (``--help``, errors, completion), and
:func:`parse` reads a command line made of exactly spelled options, then the first positional, then
the rest verbatim (``argparse.REMAINDER``), into the namespace ``argparse`` would build. Anything
else — an abbreviation, ``--flag=value``, an attached ``-pVALUE``, a value that looks like an option,
a value its type refuses, two members of a mutually exclusive group, ``-h``, a missing operand —
gives ``None``, and ``argparse`` parses the words instead (and says what is wrong). Its
equivalence with ``argparse`` is a property test (``tests/unit/test_quickparse.py``).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Mapping, Sequence
    from types import SimpleNamespace
    from typing import Any

    #: What a command's ``func`` gets: argparse's namespace, or this module's with the same names.
    Namespace = argparse.Namespace | SimpleNamespace
else:  # ``types.SimpleNamespace``, as ``types`` itself defines it, without importing that module
    SimpleNamespace = type(sys.implementation)

#: Namespace attribute of the root ``-v`` count; each subcommand level counts into its own
#: ``verbose:<prog>`` attribute (argparse copies a subcommand's namespace over its parent's).
VERBOSE_DEST = "verbose"
#: The root parser's ``prog`` (``kuasarctl exec``'s prog is ``kuasarctl exec``).
PROG = "kuasarctl"
#: What an :class:`Option` does with its words (``argparse`` actions of the same names).
FLAG, VALUE, APPEND = "store_true", "store", "append"


class Option:
    """One option of a command: its spellings, its ``argparse`` action and its help.

    Args:
        flags: the spellings (``"-e", "--env"``).
        dest: the namespace attribute.
        action: :data:`FLAG`, :data:`VALUE` or :data:`APPEND`.
        default: the value when it is not given (a list default is copied per parse).
        type: converts a value (``argparse``'s ``type``); an exception means ``argparse`` decides.
        choices: the values allowed.
        group: the name of the group it is registered in (``None``: the parser itself).
        metavar, help: as for ``argparse``.
    """

    __slots__ = ("action", "choices", "default", "dest", "flags", "group", "help", "metavar", "type")

    def __init__(
        self,
        *flags: str,
        dest: str,
        action: str = VALUE,
        default: object = None,
        type: Callable[[str], object] | None = None,
        choices: tuple[str, ...] | None = None,
        group: str | None = None,
        metavar: str | None = None,
        help: str | None = None,
    ) -> None:
        self.flags = flags
        self.dest = dest
        self.action = action
        self.default = False if action == FLAG else default
        self.type = type
        self.choices = choices
        self.group = group
        self.metavar = metavar
        self.help = help

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of its ``add_argument``."""
        kwargs: dict[str, Any] = {"dest": self.dest, "action": self.action, "help": self.help}
        if self.action != FLAG:
            kwargs.update(default=self.default, metavar=self.metavar)
            if self.type is not None:
                kwargs["type"] = self.type
            if self.choices is not None:
                kwargs["choices"] = self.choices
        return kwargs


def register(
    parser: argparse.ArgumentParser,
    options: Sequence[Option],
    groups: Mapping[str, argparse._ActionsContainer],
) -> None:
    """Add ``options`` to ``parser`` (or to the group each names, from ``groups``), in order."""
    for option in options:
        target = parser if option.group is None else groups[option.group]
        target.add_argument(*option.flags, **option.kwargs())


def parse(
    words: Sequence[str],
    command: str,
    options: Sequence[Option],
    *,
    positional: str,
    rest: str,
    exclusive: str | None = None,
    **defaults: object,
) -> SimpleNamespace | None:
    """``words`` (``kuasarctl``'s, starting with ``command``) as ``argparse`` would read them, or
    ``None`` when they are not plain enough to be sure (see the module docstring).

    Args:
        words: the command line after the program name.
        command: the subcommand name ``words`` must start with (no root option before it).
        options: the command's options.
        positional: the dest of its one required positional.
        rest: the dest of the words after it (``argparse.REMAINDER``).
        exclusive: the group whose members are mutually exclusive.
        **defaults: the parser's ``set_defaults`` (``func``).
    """
    if not words or words[0] != command:
        return None
    values: dict[str, object] = {VERBOSE_DEST: 0, "command": None}
    verbose = 0
    by_flag: dict[str, Option] = {}
    for option in options:
        values[option.dest] = option.default
        for flag in option.flags:
            by_flag[flag] = option
    exclusive_seen: set[str] = set()
    index = 1
    while index < len(words):
        word = words[index]
        index += 1
        if not word.startswith("-") or word == "-":
            remainder = list(words[index:])
            if remainder[:1] == ["--"]:  # argparse's positional takes the "--" after it, and drops it
                if remainder[1:2] == ["--"]:
                    return None
                del remainder[0]
            values[positional], values[rest] = word, remainder
            break
        if word in ("-v", "--verbose"):
            verbose += 1
            continue
        named = _named(word, by_flag)
        if named is None:
            return None  # unknown, abbreviated, -h, --flag=value, -pVALUE
        for option in named:
            if option.group is not None and option.group == exclusive:
                exclusive_seen.add(option.dest)
            if option.action == FLAG:
                values[option.dest] = True
                continue
            if index == len(words) or words[index].startswith("-"):
                return None
            value = _convert(option, words[index])
            index += 1
            if value is _REFUSED:
                return None
            if option.action == APPEND:
                values[option.dest] = [*values[option.dest], value]  # type: ignore[misc]
            else:
                values[option.dest] = value
    else:
        return None  # no positional: argparse says it is required
    if len(exclusive_seen) > 1:
        return None
    values[f"{VERBOSE_DEST}:{PROG} {command}"] = verbose
    values.update(defaults)
    return SimpleNamespace(**values)


_REFUSED = object()


def _named(word: str, by_flag: dict[str, Option]) -> list[Option] | None:
    """The options ``word`` names: one spelled exactly, or the flags of combined short ones (``-it``)."""
    option = by_flag.get(word)
    if option is not None:
        return [option]
    if word.startswith("--"):
        return None
    flags = [by_flag.get("-" + char) for char in word[1:]]
    named = [flag for flag in flags if flag is not None and flag.action == FLAG]
    return named if len(named) == len(flags) else None


def _convert(option: Option, text: str) -> object:
    try:
        value = text if option.type is None else option.type(text)
    except Exception:
        return _REFUSED
    if option.choices is not None and value not in option.choices:
        return _REFUSED
    return value


def verbosity(args: Namespace) -> int:
    """How many ``-v`` were given, before and after the subcommand names together."""
    return sum(
        value
        for key, value in vars(args).items()
        if key == VERBOSE_DEST or key.startswith(VERBOSE_DEST + ":")
    )
