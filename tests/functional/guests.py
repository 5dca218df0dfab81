"""Stand-ins for guests we cannot run here, behind a VMM stand-in, and the ways a VMM fails.

The project rule: peers we cannot run (a stock Kuasar vmm-task, a Kata agent) are written from the
wire facts, in the tests, independent of our own server code. The guest side lives in
``guests_peers`` (ttrpc services), ``guests_console`` (debug consoles) and ``guests_ttrpc`` (the
tests' own ttrpc server); the VMM side is ours, ``kuasar.transport.hvsock_server``, as allowed.

Layout, as Kuasar's vmm-sandboxer makes it: ``ROOT/ID/task.vsock`` (``layout="kuasarctl"``:
``task.socket``), directories 0755, the socket 0600 and owned by root when the tests run as root.
The guest-side listeners (``<port>.sock``) and the journal live in a private directory elsewhere,
so ``ROOT/ID`` holds nothing Kuasar would not create.

Kinds:

- ``vmm-task``: ttrpc on 1024 (``grpc.SandboxService``, no ``grpc.Health``); with ``console``, the
  KSR_MODE-aware debug console on 1025, started before the ttrpc listener, as vmm-task does;
- ``kata-agent``: ``grpc.Health`` on 1024; with ``console`` (the default) a plain shell on 1026;
- ``booting``: the VMM accepts, but no guest port has a listener: every CONNECT is closed unanswered;
- ``mute``: the VMM answers ``OK`` for 1024, then the guest never says a byte;
- ``hung``: the VMM socket accepts connections and never answers, not even to CONNECT;
- ``crashed`` (no process): the socket file exists and nothing listens: ECONNREFUSED;
- any kind with ``boot_delay=S``: the VMM socket is up at once, the guest listens S seconds later
  (a guest still booting; vmm-task's console listener still comes up before its ttrpc server);
- ``missing-root`` (no process): the root directory does not exist;
- not ours to open: any live stand-in's socket (0600, root's) seen by a command run through
  :func:`as_nobody` (``setpriv`` to uid/gid 65534; the test skips without root or setpriv).

Each running stand-in writes a journal (JSON lines) of what it received, read back through
:class:`Guest`: every ttrpc Request (port, service, method, payload, timeout, metadata) and every
console session (port, exec mode, the first 64 KiB the host sent, how it ended).

Use from sync tests through the fixtures (module scope) or ``run_guest()`` (a subprocess,
``python -m tests.functional.guests_vm``), from async tests also through ``guest_vm()`` (in-process).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest

from tests.functional.guests_records import ConsoleSession, ExecCall, Guest, GuestCall
from tests.functional.guests_vm import KINDS, GuestVM

__all__ = [
    "ConsoleSession",
    "ExecCall",
    "Guest",
    "GuestCall",
    "GuestVM",
    "KINDS",
    "as_nobody",
    "booting_guest",
    "crashed_vmm",
    "denied_guest",
    "guest_vm",
    "hung_vmm",
    "kata_guest",
    "missing_root",
    "mute_guest",
    "run_guest",
    "vmm_task_console_guest",
    "vmm_task_guest",
]

READY_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
REPO = Path(__file__).resolve().parents[2]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _short_dir(prefix: str, mode: int) -> str:
    path = tempfile.mkdtemp(prefix=prefix, dir="/tmp")  # short: socket paths are limited to 107 bytes
    os.chmod(path, mode)
    return path


@contextlib.asynccontextmanager
async def guest_vm(
    kind: str,
    *,
    sandbox_id: str | None = None,
    console: bool | None = None,
    console_port: int | None = None,
    layout: str = "kuasar-vmm",
    boot_delay: float = 0.0,
) -> AsyncIterator[Guest]:
    """An in-process stand-in (for async tests) in fresh directories; yields its :class:`Guest`."""
    root = _short_dir("kgr", 0o755)
    private = _short_dir("kgp", 0o700)
    vm = GuestVM(
        root,
        sandbox_id or f"{kind}-1",
        kind,
        private_dir=private,
        console=console,
        console_port=console_port,
        layout=layout,
        boot_delay=boot_delay,
    )
    try:
        async with vm:
            yield vm.guest
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(private, ignore_errors=True)


@contextlib.contextmanager
def run_guest(
    kind: str,
    *,
    sandbox_id: str | None = None,
    console: bool | None = None,
    console_port: int | None = None,
    layout: str = "kuasar-vmm",
    boot_delay: float = 0.0,
) -> Iterator[Guest]:
    """A stand-in in its own process (``python -m tests.functional.guests_vm``), stopped on exit."""
    root = _short_dir("kgr", 0o755)
    private = _short_dir("kgp", 0o700)
    sandbox_id = sandbox_id or f"{kind}-1"
    argv = [sys.executable, "-m", "tests.functional.guests_vm", "--root", root, "--id", sandbox_id]
    argv += ["--kind", kind, "--private-dir", private, "--layout", layout]
    if console is not None:
        argv.append("--console" if console else "--no-console")
    if console_port is not None:
        argv += ["--console-port", str(console_port)]
    if boot_delay > 0:
        argv += ["--boot-delay", str(boot_delay)]
    log_path = os.path.join(private, "standin.log")
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        try:
            line = _ready_line(proc)
            if not line.startswith(b"ready "):
                raise RuntimeError(f"guest stand-in did not start: {line!r}\n{Path(log_path).read_text()}")
            info = json.loads(line[len(b"ready ") :])
            yield Guest(
                kind,
                root,
                sandbox_id,
                info["socket"],
                console_port=info["console_port"],
                journal=info["journal"],
                pid=proc.pid,
            )
        finally:
            _stop(proc)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(private, ignore_errors=True)


def _ready_line(proc: subprocess.Popen[bytes]) -> bytes:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT)
    return proc.stdout.readline() if ready else b"(no ready line in time)"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()  # stdin EOF stops it too, should the SIGTERM be missed
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def _crashed() -> Iterator[Guest]:
    root = _short_dir("kgr", 0o755)
    try:
        directory = os.path.join(root, "crashed-1")
        os.mkdir(directory, 0o755)
        path = os.path.join(directory, "task.vsock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.bind(path)  # the file stays; nothing will ever listen on it
        yield Guest("crashed", root, "crashed-1", path)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def as_nobody(argv: Sequence[str]) -> list[str]:
    """``argv`` run as the unprivileged user 65534; skips the test when that is not possible here."""
    if os.geteuid() != 0:
        pytest.skip("running a command as nobody needs root")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed: cannot run a command as nobody")
    return [*NOBODY, *argv]


@pytest.fixture(scope="module")
def vmm_task_guest() -> Iterator[Guest]:
    """A stock Kuasar guest booted without ``task.debug``: ExecVMProcess only, no console."""
    with run_guest("vmm-task", console=False) as guest:
        yield guest


@pytest.fixture(scope="module")
def vmm_task_console_guest() -> Iterator[Guest]:
    """A stock Kuasar guest booted with ``task.debug``: the KSR_MODE console on 1025 too."""
    with run_guest("vmm-task", console=True) as guest:
        yield guest


@pytest.fixture(scope="module")
def kata_guest() -> Iterator[Guest]:
    """A Kata agent with ``agent.debug_console_vport=1026``."""
    with run_guest("kata-agent", console=True) as guest:
        yield guest


@pytest.fixture(scope="module")
def booting_guest() -> Iterator[Guest]:
    """The VMM accepts; no guest port has a listener yet."""
    with run_guest("booting") as guest:
        yield guest


@pytest.fixture(scope="module")
def mute_guest() -> Iterator[Guest]:
    """The VMM answers OK for 1024; the guest never answers."""
    with run_guest("mute") as guest:
        yield guest


@pytest.fixture(scope="module")
def hung_vmm() -> Iterator[Guest]:
    """The VMM accepts connections and never answers."""
    with run_guest("hung") as guest:
        yield guest


@pytest.fixture
def crashed_vmm() -> Iterator[Guest]:
    """A socket file nothing listens on (a crashed VMM): ECONNREFUSED."""
    with _crashed() as guest:
        yield guest


@pytest.fixture
def missing_root() -> Iterator[Guest]:
    """A root directory that does not exist."""
    parent = _short_dir("kgm", 0o755)
    root = os.path.join(parent, "no-such-root")
    try:
        yield Guest("missing-root", root, "pod-1", os.path.join(root, "pod-1", "task.vsock"))
    finally:
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="module")
def denied_guest() -> Iterator[Guest]:
    """A live vmm-task stand-in whose socket (0600, root's) nobody else may open; see :func:`as_nobody`."""
    if os.geteuid() != 0:
        pytest.skip("the socket is only someone else's when the tests run as root")
    with run_guest("vmm-task", sandbox_id="denied-1") as guest:
        yield guest
