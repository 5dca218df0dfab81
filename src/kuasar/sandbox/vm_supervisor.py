"""The QEMU half of the sandbox supervisor (``--vmm qemu``): a real kernel behind ``task.socket``.

Layer contract: supervisor layer (host side, asyncio; run inside ``python -m
kuasar.sandbox.supervisor``). It adapts :class:`kuasar.vmm.qemu_guest.QemuGuest` to the
supervisor's guest protocol (``start`` → a state record, ``wait`` → QEMU's exit status, ``stop``),
so ``ps``, ``stop`` and crash handling work as for local sandboxes. The guest runs the host's
``sys.executable`` (this process's interpreter, so the installed project) as PID 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from kuasar.config import Limits
from kuasar.errors import UsageError
from kuasar.sandbox.state import SandboxState
from kuasar.vmm import image
from kuasar.vmm.qemu import VmSpec
from kuasar.vmm.qemu_guest import QemuGuest

__all__ = ["VmGuest"]


class VmGuest:
    """A QEMU guest as the supervisor sees it."""

    def __init__(self, directory: str, args: argparse.Namespace, log_fd: int, limits: Limits) -> None:
        self.directory, self.args, self.log_fd, self.limits = directory, args, log_fd, limits
        self.guest: QemuGuest | None = None

    async def start(self) -> SandboxState:
        args = self.args
        if not args.kernel or not args.initrd:
            raise UsageError("--vmm qemu needs --kernel and --initrd (kuasar.vmm.image)")
        spec = VmSpec(
            name=args.id,
            directory=self.directory,
            kernel=args.kernel,
            initrd=args.initrd,
            python=_interpreter(),
            memory_mib=args.memory,
            cpus=args.cpus,
            debug_console=args.debug_console,
            log_level=args.log_level,
        )
        self.guest = QemuGuest(
            spec,
            accel=args.accel,
            cache=image.cache_dir(),
            release=args.kernel_release,
            log_fd=self.log_fd,
            limits=self.limits.replace(vm_boot_timeout=args.boot_timeout),
        )
        await self.guest.start()
        qemu, device = self.guest.qemu, self.guest.device
        assert qemu is not None
        return SandboxState(
            id=self.args.id,
            kind="qemu",
            supervisor_pid=os.getpid(),
            agent_pid=qemu.pid,
            created=time.time(),
            debug_console=self.args.debug_console,
            agent_api=True,
            namespaces=False,
            accel=self.guest.accel,
            device_pid=device.pid if device is not None else 0,
            kernel=self.args.kernel_release,
        )

    async def wait(self) -> int:
        assert self.guest is not None
        return await self.guest.wait()

    async def stop(self) -> None:
        if self.guest is not None:
            await self.guest.stop()


def _interpreter() -> str:
    """The interpreter the guest runs: this one, by the path it was started as (a venv's ``python``
    keeps its ``pyvenv.cfg``; the guest resolves symlinks in the host's root itself)."""
    return os.path.abspath(sys.executable)
