"""The vm tier: a real Linux guest under QEMU (TCG) behind our vhost-user-vsock device.

Two kinds of guest: ``vm`` (tests/vm/guest_image.py: socat services, for the device itself) and
``qemu_sandbox`` (the product: ``kuasarctl sandbox run --vmm qemu``, kuasar-agent as PID 1).

Opt-in: ``make test-vm`` (``pytest -m vm tests/vm``). Skipped with the reason when QEMU, busybox,
socat or the kernel package is not available. One guest per test module (boot ≈ 3-7 s under TCG);
never run it beside other heavy work on a 2-core machine. Measured numbers are printed at the end
of the module (run with ``-s`` to see them). ``KUASAR_VM_MACHINE=q35`` and ``KUASAR_VM_SMP=2``
boot the other shapes the facts file measured.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from tests.functional.cli_helpers import kuasarctl, short_tmpdir
from tests.functional.tmux_helpers import tmux

from .guest_image import Unavailable, build
from .qemu_vm import VM, qemu_binary

__all__ = ["QemuSandbox", "kill_supervisor", "process_gone", "qemu_sandbox", "tmux", "vm"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Opt-in: without ``-m vm`` (a bare ``pytest``), the tier is skipped, not booted."""
    if "vm" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="the vm tier is opt-in: make test-vm (pytest -m vm tests/vm)")
    for item in items:
        if item.get_closest_marker("vm") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def vm() -> Iterator[VM]:
    try:
        qemu_binary()
        image = build()
    except Unavailable as exc:
        pytest.skip(f"no guest VM: {exc}")
    with tempfile.TemporaryDirectory(prefix="kvm") as directory:
        machine = VM(
            image,
            Path(directory),
            machine=os.environ.get("KUASAR_VM_MACHINE", "pc"),
            smp=int(os.environ.get("KUASAR_VM_SMP", "1")),
        )
        try:
            machine.start()
            yield machine
        finally:
            machine.stop()


class QemuSandbox:
    """A ``kuasarctl sandbox run --vmm qemu`` guest in a root of its own."""

    def __init__(self, root: str, sandbox_id: str) -> None:
        self.root = root
        self.id = sandbox_id
        self.directory = os.path.join(root, sandbox_id)

    def ctl(self, *args: str, input: bytes | None = None, timeout: float = 120) -> CompletedProcess[bytes]:
        """``kuasarctl ARGS`` with ``-d ROOT`` (``{id}`` in an argument is this sandbox's ID)."""
        return kuasarctl(
            *(arg.replace("{id}", self.id) for arg in args),
            input=input,
            timeout=timeout,
            env={**os.environ, "KUASAR_SOCKET_DIR": self.root},
        )

    def sh(self, script: str, *, timeout: float = 120) -> str:
        """Run ``sh -c script`` in the guest over the API; its stdout (exit 0 asserted)."""
        done = self.ctl("exec", "-t", self.id, "sh", "-c", script, timeout=timeout)
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout.decode()


def start_qemu_sandbox(name: str, *flags: str) -> QemuSandbox:
    """Boot one; skips the module when QEMU or the kernel package cannot be had here."""
    try:
        qemu_binary()
    except Unavailable as exc:
        pytest.skip(f"no guest VM: {exc}")
    root = short_tmpdir("kq")
    sandbox = QemuSandbox(root, name)
    done = sandbox.ctl("sandbox", "run", "--vmm", "qemu", "--name", name, *flags, timeout=600)
    if done.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        said = done.stderr.decode()
        if "apt-get" in said or "not found" in said:
            pytest.skip(f"no guest image: {said.strip()}")
        raise AssertionError(f"sandbox run --vmm qemu failed ({done.returncode}):\n{said}")
    return sandbox


def kill_supervisor(directory: str) -> None:
    """Kill the process group of the supervisor ``directory``'s record names (a test that failed
    half-way must not leave a QEMU behind)."""
    try:
        with open(os.path.join(directory, "sandbox.json"), encoding="utf-8") as file:
            pid = int(json.load(file)["supervisor_pid"])
    except (OSError, ValueError, KeyError):
        return
    if not process_gone(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def stop_qemu_sandbox(sandbox: QemuSandbox) -> None:
    if os.path.isdir(sandbox.directory):
        sandbox.ctl("sandbox", "stop", sandbox.id, timeout=120)
        kill_supervisor(sandbox.directory)  # only when stop failed: then it is still there
    shutil.rmtree(sandbox.root, ignore_errors=True)


@pytest.fixture(scope="module")
def qemu_sandbox() -> Iterator[QemuSandbox]:
    """One product guest per test module (``vm-1``), stopped afterwards."""
    sandbox = start_qemu_sandbox("vm-1")
    try:
        yield sandbox
    finally:
        stop_qemu_sandbox(sandbox)


def process_gone(pid: int) -> bool:
    """``pid`` no longer runs (gone, or a zombie its parent has yet to reap)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as file:
            return file.read().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True
