"""Helpers to drive the real ``kuasarctl`` CLI against real local sandboxes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

KUASARCTL = [sys.executable, "-m", "kuasar.ctl"]

#: (remote command, kuasarctl exit code) — the same over the console and over the agent API.
EXIT_CASES = [
    (["true"], 0),
    (["false"], 1),
    (["sh", "-c", "exit 42"], 42),
    (["no-such-command-ksr"], 127),
    (["sh", "-c", "kill -KILL $$"], 137),
    (["sh", "-c", "kill -TERM $$"], 143),
    (["sh", "-c", "kill -USR1 $$"], 128 + signal.SIGUSR1),
]


def kuasarctl(
    *args: str, input: bytes | None = None, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run kuasarctl to completion; stdin is /dev/null unless ``input`` is given."""
    return subprocess.run(
        [*KUASARCTL, *args],
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
        env=env,
    )


def kuasarctl_as_nobody(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    """Run kuasarctl as the unprivileged user 65534 (``setpriv``); skips unless we are root."""
    import pytest

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run kuasarctl as an unprivileged user")
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *KUASARCTL, *args],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )


@dataclass(frozen=True)
class LocalSandbox:
    root: str
    id: str

    def exec(
        self, *command: str, flags: Sequence[str] = (), input: bytes | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[bytes]:
        return kuasarctl("exec", *flags, "-d", self.root, self.id, *command, input=input, timeout=timeout)


def short_tmpdir(prefix: str = "ksr") -> str:
    """A directory under /tmp with a short path: UNIX socket paths are limited to 107 bytes."""
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


@contextmanager
def local_sandbox(name: str = "pod-abc-123", *extra: str) -> Iterator[LocalSandbox]:
    root = short_tmpdir()
    try:
        started = kuasarctl("sandbox", "run", "-d", root, "--name", name, *extra)
        assert started.returncode == 0, started.stderr.decode()
        assert started.stdout.decode().strip() == name
        yield LocalSandbox(root, name)
    finally:
        kuasarctl("sandbox", "stop", "-d", root, name)
        shutil.rmtree(root, ignore_errors=True)


def pids_with_cmdline(token: str) -> list[int]:
    """Host PIDs whose command line contains ``token``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as file:
                if token.encode() in file.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


#: Runs ``kuasar.ctl.main.main(argv)`` as ``kuasarctl`` does, then writes every loaded module's name.
DUMP_MODULES = """
import sys
from kuasar.ctl.main import main
try:
    code = main(sys.argv[2:])
except SystemExit as exit:  # --help
    code = exit.code
finally:
    with open(sys.argv[1], "w") as file:
        file.write("\\n".join(sorted(sys.modules)))
sys.exit(code)
"""
