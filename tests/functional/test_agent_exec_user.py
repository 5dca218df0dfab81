"""``ExecStart.user`` through a real agent Exec handler: ids out of range never mean root."""

from __future__ import annotations

import logging
import os
import pwd
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from kuasar import ttrpc
from kuasar.agent.services.exec import exec_handlers
from kuasar.errors import RPCError
from kuasar.remote_process import run
from kuasar.ttrpc.testing import client_server_pair


def _listed(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


UNLISTED_UID = next(uid for uid in range(40000, 50000) if not _listed(uid))
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


@pytest_asyncio.fixture
async def client() -> AsyncIterator[ttrpc.Client]:
    async with client_server_pair([exec_handlers()]) as (client, _server):
        yield client


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("user", "words"),
    [
        ("4294967295", "uid 4294967295 is out of range (0 to 4294967294)"),
        ("99999999999", "uid 99999999999 is out of range"),
        ("0:99999999999", "gid 99999999999 is out of range"),
        ("0:4294967295", "gid 4294967295 is out of range"),
        ("-1", "out of range"),
        ("no-such-user-ksr", "unknown user 'no-such-user-ksr'"),
        ("0:no-such-group-ksr", "unknown group 'no-such-group-ksr'"),
        ("root:no-such-group-ksr", "unknown group 'no-such-group-ksr'"),
        ("root:", "is empty"),
        ("a\x00b", "invalid user name"),
    ],
)
async def test_bad_user_is_invalid_argument_without_traceback(
    client: ttrpc.Client, caplog: pytest.LogCaptureFixture, user: str, words: str
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(RPCError) as caught:
        await run(client, ["id", "-u"], user=user)
    assert caught.value.code == ttrpc.Code.INVALID_ARGUMENT, caught.value
    assert words in caught.value.message
    logged = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not logged, [r.getMessage() for r in logged]


@pytest.mark.asyncio
@needs_root
@pytest.mark.parametrize(
    ("user", "expected"),
    [
        (str(UNLISTED_UID), f"{UNLISTED_UID} 0\n".encode()),  # no passwd entry: gid 0, as docker
        ("4294967294", b"4294967294 0\n"),  # the largest uid that is a user, not "unchanged"
        ("0:4294967294", b"0 4294967294\n"),
        ("12345:54321", b"12345 54321\n"),
    ],
)
async def test_ids_up_to_the_limit_are_used_exactly(client: ttrpc.Client, user: str, expected: bytes) -> None:
    result = await run(client, ["sh", "-c", 'echo "$(id -u) $(id -g)"'], user=user)
    assert (result.exit_status, result.stdout) == (0, expected), result.stderr
