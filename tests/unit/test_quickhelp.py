"""``kuasarctl --help``, ``-h``, ``--version`` and a bare ``kuasarctl`` answered by
:mod:`kuasar.ctl.quickhelp` against argparse: the same bytes on the same stream with the same exit
code at every terminal width it answers at, and nothing (argparse answers) below that width."""

from __future__ import annotations

import contextlib
import io
import shutil
import string
import textwrap

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from kuasar.ctl import main as ctl_main
from kuasar.ctl import quickhelp

QUICK_WORDS = [[], ["-h"], ["--help"], ["--version"]]
#: The narrowest terminal the quick help answers on: the epilog's ``$KUASAR_SOCKET_DIR,`` (19
#: characters) needs a 19-column line, COLUMNS 21; on a narrower one textwrap cuts it.
MIN_COLUMNS = 21

#: (exit code, stdout, stderr)
Answer = tuple[object, str, str]


def argparse_answer(words: list[str], columns: int) -> Answer:
    """What ``kuasarctl WORDS`` printed before the quick path: argparse's answer."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COLUMNS", str(columns))
        with (
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            pytest.raises(SystemExit) as exit,
        ):
            ctl_main.build_parser(words).parse_args(words)
    return exit.value.code, out.getvalue(), err.getvalue()


def quick_answer(words: list[str], columns: int) -> Answer | None:
    """What ``main()``'s quick path prints, or ``None`` when it leaves ``words`` to argparse."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COLUMNS", str(columns))
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = ctl_main.quick_root(words)
    if code is None:
        assert (out.getvalue(), err.getvalue()) == ("", ""), "it fell back after printing"
        return None
    return code, out.getvalue(), err.getvalue()


@given(columns=st.integers(MIN_COLUMNS, 300), words=st.sampled_from(QUICK_WORDS))
@example(columns=MIN_COLUMNS, words=["--help"])
@example(columns=80, words=["--help"])
@example(columns=300, words=["-h"])
@example(columns=52, words=[])  # the usage line wraps below 53
def test_the_quick_answer_is_argparses(columns: int, words: list[str]) -> None:
    assert quick_answer(words, columns) == argparse_answer(words, columns)


def test_below_the_narrowest_width_argparse_prints_the_help() -> None:
    for columns in range(1, MIN_COLUMNS):
        assert quick_answer(["--help"], columns) is None, columns
        assert quick_answer(["-h"], columns) is None, columns
        for words in ([], ["--version"]):  # no word to cut: answered at every width
            assert quick_answer(words, columns) == argparse_answer(words, columns), (words, columns)


def test_the_wide_help_is_the_one_line_list() -> None:
    answer = quick_answer(["--help"], 300)
    assert answer is not None
    code, out, err = answer
    assert (code, err) == (0, "")
    assert out.startswith("usage: kuasarctl [-h] [-v] [--version] COMMAND ...\n\n")
    assert "    ps (ls)      list sandboxes\n" in out


@pytest.mark.parametrize(
    "words",
    [
        ["-v"],
        ["--vers"],
        ["--help", "ps"],
        ["-h", "-v"],
        ["-v", "--help"],
        ["--help=x"],
        ["ps"],
        ["exec", "-h"],
    ],
)
def test_any_other_command_line_goes_to_argparse(words: list[str]) -> None:
    assert quick_answer(words, 80) is None


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("DESCRIPTION", "Reach ``inside`` sandboxes."),  # CommandParser removes the markup
        ("DESCRIPTION", "Reach :class:`Sandbox` objects."),
        ("EPILOG", "Ends with a list::"),
        ("EPILOG", "100% of %(prog)s"),  # argparse interpolates it
        ("EPILOG", "two  spaces"),
        ("EPILOG", "two\n\nparagraphs"),
        ("EPILOG", "  indented example"),
        ("COMMAND_HELP", "caf\u00e9 au lait"),  # non-ASCII: textwrap's classes are Unicode ones
        ("COMMAND_METAVAR", "[COMMAND]"),
    ],
)
def test_texts_argparse_rewrites_go_to_argparse(
    name: str, text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ctl_main, name, text)
    assert quick_answer(["--help"], 80) is None


_WORD = st.text(string.ascii_letters + string.digits + "-.,'!?&()/$_:\"", min_size=1, max_size=8).filter(
    lambda word: "::" not in word
)
_TEXT = st.lists(_WORD, min_size=1, max_size=30).map(" ".join)
_NAME = st.text(string.ascii_lowercase + string.digits + "-_", min_size=0, max_size=29).map(
    lambda tail: "c" + tail
)


@st.composite
def _commands(draw: st.DrawFn) -> tuple[tuple[str, tuple[str, ...], str, str], ...]:
    names = draw(st.lists(_NAME, min_size=1, max_size=12, unique=True))
    return tuple(
        (name, (name.upper(),) if draw(st.booleans()) else (), "module", draw(_TEXT)) for name in names
    )


@given(
    columns=st.integers(40, 200),
    description=_TEXT,
    epilog=_TEXT,
    command_help=_TEXT,
    metavar=st.text(string.ascii_uppercase, min_size=1, max_size=20),
    commands=_commands(),
)
def test_the_layout_is_argparses_for_other_texts(
    *,
    columns: int,
    description: str,
    epilog: str,
    command_help: str,
    metavar: str,
    commands: tuple[tuple[str, tuple[str, ...], str, str], ...],
) -> None:
    """Long and short names, wrapped help, hyphenated words: the layout, not only today's texts."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ctl_main, "DESCRIPTION", description)
        patch.setattr(ctl_main, "EPILOG", epilog)
        patch.setattr(ctl_main, "COMMAND_HELP", command_help)
        patch.setattr(ctl_main, "COMMAND_METAVAR", metavar)
        patch.setattr(ctl_main, "COMMANDS", commands)
        for words in (["--help"], []):
            assert quick_answer(words, columns) == argparse_answer(words, columns)


@given(st.text("ab_Z9-- \t\n.,'!?\"&(/:$", max_size=40))
@example("Look, goof-ball -- use the -b option!")
@example("kata-agent-ctl -d/--socket-dir a-b-c ab--cd a--b (-vv: x--")
@example("ab-c-de x-y-zz __-a_-bc 9a-bc")  # a one-letter part between hyphens
def test_chunks_are_textwraps(text: str) -> None:
    assert quickhelp.chunks(text) == textwrap.TextWrapper()._split(text)


@given(_TEXT, st.integers(1, 60))
def test_wrap_is_textwraps_unless_it_would_cut_a_word(text: str, width: int) -> None:
    lines = quickhelp.wrap(text, width)
    if max(map(len, quickhelp.chunks(text))) > width:
        assert lines is None
    else:
        assert lines == textwrap.wrap(text, width)


@given(
    st.one_of(
        st.none(), st.sampled_from(["", "0", "-3", " 42", "abc", "1e3", "7", "300"]), st.text(max_size=4)
    )
)
def test_terminal_columns_is_shutils(columns: str | None) -> None:
    with pytest.MonkeyPatch.context() as patch:
        if columns is None:
            patch.delenv("COLUMNS", raising=False)
        elif "\0" in columns:
            return  # not a possible environment value
        else:
            patch.setenv("COLUMNS", columns)
        assert quickhelp.terminal_columns() == shutil.get_terminal_size().columns
