"""The exception tree's texts: plain words for a remote status, the code kept for programs."""

from __future__ import annotations

import pytest

from kuasar.codes import CODE_NAMES
from kuasar.errors import RPCError
from kuasar.ttrpc import Code


@pytest.mark.parametrize(
    ("code", "message", "text"),
    [
        (Code.UNKNOWN, "internal error", "the agent failed: internal error"),
        (Code.INTERNAL, "boom", "the agent failed: boom"),
        (Code.INVALID_ARGUMENT, "bad uid", "the agent refused: bad uid"),
        (Code.NOT_FOUND, "container 'web' not found", "the agent refused: container 'web' not found"),
        (Code.FAILED_PRECONDITION, "running", "the agent refused: running"),
        (Code.UNIMPLEMENTED, "no such method", "the agent does not support this call: no such method"),
        (Code.RESOURCE_EXHAUSTED, "too big", "the agent refused (over a limit): too big"),
        (Code.UNAVAILABLE, "", "the agent is unavailable"),
        (99, "odd", "the agent answered with status 99: odd"),
    ],
)
def test_rpc_error_speaks_plainly(code: int, message: str, text: str) -> None:
    error = RPCError(code, message)
    assert str(error) == text
    assert (error.code, error.message, error.exit_code) == (code, message, 125)


def test_no_rpc_error_text_names_a_code() -> None:
    for code, name in CODE_NAMES.items():
        if code != Code.OK:
            text = str(RPCError(code, "m"))
            assert name not in text and not text[0].isupper(), text
