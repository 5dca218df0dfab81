"""The vm tier: a real Linux guest under QEMU (TCG) behind our vhost-user-vsock device.

Opt-in: ``make test-vm`` (``pytest -m vm tests/vm``). Skipped with the reason when QEMU, busybox,
socat or the kernel package is not available. One guest per test module (boot ≈ 3-7 s under TCG);
never run it beside other heavy work on a 2-core machine. Measured numbers are printed at the end
of the module (run with ``-s`` to see them). ``KUASAR_VM_MACHINE=q35`` and ``KUASAR_VM_SMP=2``
boot the other shapes the facts file measured.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .guest_image import Unavailable, build
from .qemu_vm import VM, qemu_binary


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
