"""How ``kuasarctl`` ends: a one-shot command skips the interpreter's teardown (``os._exit`` once its
output is flushed), and a run that loaded something needing that teardown gets it.

The teardown is observed through an object with a ``__del__`` that a ``sitecustomize`` on
``PYTHONPATH`` leaves in ``sys`` (without importing ``atexit``, ``threading`` or ``weakref``): the
interpreter's finalization deletes it, and it writes ``TEARDOWN`` to stderr; ``os._exit`` does not.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.functional.cli_helpers import KUASARCTL, LocalSandbox, local_sandbox

HOOK = """
import os, sys
class _Probe:
    def __del__(self, write=os.write):
        write(2, b"TEARDOWN\\n")
sys.teardown_probe = _Probe()
"""


@pytest.fixture(scope="module")
def sandbox() -> Iterator[LocalSandbox]:
    with local_sandbox("exit-path") as started:
        yield started


def run(tmp_path: Path, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    (tmp_path / "sitecustomize.py").write_text(HOOK)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    return subprocess.run(
        [*KUASARCTL, *args], input=input, capture_output=True, timeout=60, check=False, env=env
    )


def test_the_hook_sees_a_normal_teardown(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(HOOK)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", "pass"], capture_output=True, env=env, check=False)
    assert result.stderr == b"TEARDOWN\n"


def test_exec_leaves_without_teardown_and_loses_no_output(sandbox: LocalSandbox, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    result = run(
        tmp_path, "exec", "-i", "-d", sandbox.root, sandbox.id, "sh", "-c", "cat; exit 7", input=data
    )
    assert (result.returncode, result.stdout) == (7, data)
    assert b"TEARDOWN" not in result.stderr


def test_buffered_text_output_is_flushed_first(tmp_path: Path) -> None:
    result = run(tmp_path, "--help")
    assert result.returncode == 0 and result.stdout.startswith(b"usage: kuasarctl"), result.stderr
    assert result.stdout.endswith(b"command name.\n") and b"TEARDOWN" not in result.stderr


def test_a_run_with_logging_gets_the_teardown(sandbox: LocalSandbox, tmp_path: Path) -> None:
    """``-vv`` loads logging (an atexit handler, threading): the interpreter ends as usual."""
    result = run(tmp_path, "-vv", "exec", "-t", "-d", sandbox.root, sandbox.id, "echo", "hi")
    assert (result.returncode, result.stdout) == (0, b"hi\n"), result.stderr
    assert result.stderr.endswith(b"TEARDOWN\n")
