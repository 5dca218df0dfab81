"""Arguments, environment and cwd that are not UTF-8 reach the command byte-exact (agent API path)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from kuasar import ttrpc
from kuasar.agent.services.exec import decode_start, exec_handlers
from kuasar.errors import CommandNotFound
from kuasar.proto import agent_pb2 as pb
from kuasar.remote_process import exec_start, run
from kuasar.ttrpc.testing import client_server_pair
from tests.functional.cli_helpers import KUASARCTL, LocalSandbox, local_sandbox

ARG = b"a\xff\xfeb"
VALUE = b"\xff"
SCRIPT = b'printf "%s|%s|" "$1" "$A"; pwd'


@pytest.fixture
def odd_dir() -> Iterator[bytes]:
    parent = tempfile.mkdtemp(prefix="ksr-bytes-").encode()
    path = os.path.join(parent, b"d\xff\xfe\x01")
    os.mkdir(path)
    try:
        yield path
    finally:
        os.rmdir(path)
        os.rmdir(parent)


@pytest_asyncio.fixture
async def client() -> AsyncIterator[ttrpc.Client]:
    async with client_server_pair([exec_handlers()]) as (client, _server):
        yield client


@pytest.mark.asyncio
async def test_non_utf8_argv_env_and_cwd_arrive_exactly(client: ttrpc.Client, odd_dir: bytes) -> None:
    # As sys.argv and os.environ hold them: str with the undecodable bytes as surrogate escapes.
    argv = ["sh", "-c", os.fsdecode(SCRIPT), "sh", os.fsdecode(ARG)]
    result = await run(client, argv, env={"A": os.fsdecode(VALUE)}, cwd=os.fsdecode(odd_dir))
    assert (result.exit_status, result.stderr) == (0, b"")
    assert result.stdout == ARG + b"|" + VALUE + b"|" + odd_dir + b"\n"


@pytest.mark.asyncio
async def test_printf_of_non_utf8_argument_is_byte_exact(client: ttrpc.Client) -> None:
    result = await run(client, ["printf", "%s", os.fsdecode(ARG)])
    assert result.stdout == ARG
    missing = os.fsdecode(b"no-such-\xff")  # the "not found" status can still be sent
    with pytest.raises(CommandNotFound, match="command not found"):
        await run(client, [missing])


def test_utf8_requests_keep_their_string_fields_for_older_agents() -> None:
    start = exec_start(["echo", "héllo"], {"K": "v"}, "/tmp")
    assert (list(start.argv), dict(start.env), start.cwd) == (["echo", "héllo"], {"K": "v"}, "/tmp")
    assert list(start.argv_bytes) == [b"echo", "héllo".encode()]
    odd = exec_start(["printf", os.fsdecode(ARG)], {"A": os.fsdecode(VALUE)}, "")
    assert list(odd.argv) == [] and list(odd.argv_bytes) == [b"printf", ARG]
    assert list(odd.env_bytes) == [b"A=" + VALUE]
    # An older client sends only the string fields: the agent still reads them.
    old = decode_start(pb.ExecStart(argv=["echo", "x"], env={"K": "v"}, cwd="/tmp"))
    assert (old.argv, old.env, old.cwd) == (["echo", "x"], {"K": "v"}, "/tmp")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[LocalSandbox]:
    with local_sandbox("pod-cli-bytes") as sandbox:
        yield sandbox


def test_kuasarctl_exec_passes_non_utf8_bytes(sandbox: LocalSandbox, odd_dir: bytes) -> None:
    command = [*KUASARCTL, "exec", "-d", sandbox.root, "-e", b"A=" + VALUE, "-w", odd_dir, sandbox.id]
    result = subprocess.run(
        [*command, "sh", "-c", SCRIPT, "sh", ARG], capture_output=True, timeout=60, check=False
    )
    assert (result.returncode, result.stderr) == (0, b""), result
    assert result.stdout == ARG + b"|" + VALUE + b"|" + odd_dir + b"\n"
    printed = subprocess.run(
        [*KUASARCTL, "exec", "-d", sandbox.root, sandbox.id, "printf", "%s\n", ARG],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert (printed.returncode, printed.stdout, printed.stderr) == (0, ARG + b"\n", b"")
