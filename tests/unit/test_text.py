"""``printable``: nothing that came from outside reaches the terminal raw; normal text is untouched."""

from __future__ import annotations

import os

import pytest

from kuasar._text import printable
from kuasar.ctl import output
from kuasar.errors import KuasarError, SandboxNotFound


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[2J\x1b]0;pwned\x07", "\\x1b[2J\\x1b]0;pwned\\x07"),
        ("a\nb\rc\td", "a\\nb\\rc\\td"),
        ("\x00\x01\x1f\x7f", "\\x00\\x01\\x1f\\x7f"),
        ("\x85\x9b31m", "\\x85\\x9b31m"),  # C1: NEL and CSI
        ("ab\u2028cd\u202eef", "ab\\u2028cd\\u202eef"),  # line separator, right-to-left override
        (os.fsdecode(b"a\xff\xfeb"), "a\\xff\\xfeb"),  # invalid UTF-8 as os.listdir / sys.argv give it
        ("\ud800", "\\ud800"),
    ],
)
def test_controls_and_bad_bytes_become_visible_escapes(raw: str, shown: str) -> None:
    assert printable(raw) == shown
    assert printable(printable(raw)) == shown  # its own fixed point: escaping twice changes nothing


@pytest.mark.parametrize("text", ["pod-abc-123", "pod é ü 日本 🚀", "C:\\path\\x1b", "", "a b  c"])
def test_normal_text_is_unchanged(text: str) -> None:
    assert printable(text) == text


def test_bytes_are_decoded_with_surrogateescape() -> None:
    assert printable(b"ok \xc3\xa9 \xff\x1b") == "ok é \\xff\\x1b"


def test_print_error_is_the_last_line_of_defence(capsys: pytest.CaptureFixture[str]) -> None:
    output.print_error(KuasarError("bad \x1b[2Jid\nsecond", hints=["  a\x07b", "tab\there"]))
    assert capsys.readouterr().err == "Error: bad \\x1b[2Jid\\nsecond\n  a\\x07b\ntab\\there\n"


def test_print_internal_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    output.print_internal_error(ValueError("x\ny\x1b"), with_traceback=False)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "Error: internal error: ValueError: x\\ny\\x1b"
    assert len(lines) == 2 and "-vv" in lines[1]


def test_discovery_messages_are_escaped_when_built(tmp_path: object) -> None:
    from kuasar.sandbox.discovery import resolve_sandbox

    root = os.path.join(str(tmp_path), "root")
    os.makedirs(os.path.join(root, "pod\x1bx"))
    open(os.path.join(root, "pod\x1bx", "task.socket"), "w").close()
    with pytest.raises(SandboxNotFound) as info:
        resolve_sandbox("q\n\x1b[2J", [root])
    assert str(info.value) == 'No pod found with prefix "q\\n\\x1b[2J". Available pods:'
    assert info.value.hints == ("  pod\\x1bx",)
