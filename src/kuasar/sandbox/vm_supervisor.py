"""The QEMU half of the sandbox supervisor (``--vmm qemu``): a real kernel behind ``task.socket``.

Layer contract: supervisor layer (host side, asyncio; run inside ``python -m
kuasar.sandbox.supervisor``). It adapts :class:`kuasar.vmm.qemu_guest.QemuGuest` to the
supervisor's guest protocol (``start`` → a state record, ``wait`` → QEMU's exit status, ``stop``),
so ``ps``, ``stop`` and crash handling work as for local sandboxes. The guest runs the host's
``sys.executable`` (this process's interpreter, so the installed project) as PID 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import zlib

from kuasar.address import VsockAddress
from kuasar.config import Limits
from kuasar.errors import UsageError
from kuasar.sandbox.state import SandboxState
from kuasar.sandbox.supervisor import SOCKET_FILE, sandbox_record
from kuasar.transport.hvsock_server import HvsockServer
from kuasar.vmm import image
from kuasar.vmm.qemu import VmSpec, vhost_vsock_device
from kuasar.vmm.qemu_guest import BootError, QemuGuest

#: Guest CIDs start here (0-2 are reserved: hypervisor, local, host).
FIRST_GUEST_CID = 3
#: A sandbox's first CID is spread over this many by its ID, so two sandboxes rarely collide.
_CID_SPREAD = 1 << 20
_CID_TRIES = 8

log = logging.getLogger("kuasar.sandbox.vm")

__all__ = ["VmGuest"]


class VmGuest:
    """A QEMU guest as the supervisor sees it.

    Its vsock is our vhost-user device behind ``task.socket`` — unless ``/dev/vhost-vsock`` works:
    then the kernel's ``vhost-vsock-pci`` gets a CID of its own (the next one tried when QEMU finds
    it taken), the state records it (``vsock://CID:PORT`` dials the guest directly, Kuasar's QEMU
    layout), and this process serves ``task.socket`` as a hybrid vsock proxy to it, so every host
    client works the same.
    """

    def __init__(self, directory: str, args: argparse.Namespace, log_fd: int, limits: Limits) -> None:
        self.directory, self.args, self.log_fd, self.limits = directory, args, log_fd, limits
        self.guest: QemuGuest | None = None
        self.proxy: HvsockServer | None = None

    def _spec(self, guest_cid: int) -> VmSpec:
        args = self.args
        if not args.kernel or not args.initrd:
            raise UsageError("--vmm qemu needs --kernel and --initrd (kuasar.vmm.image)")
        return VmSpec(
            name=args.id,
            directory=self.directory,
            kernel=args.kernel,
            initrd=args.initrd,
            python=_interpreter(),
            memory_mib=args.memory,
            cpus=args.cpus,
            debug_console=args.debug_console,
            log_level=args.log_level,
            guest_cid=guest_cid,
        )

    async def _boot(self, guest_cid: int) -> QemuGuest:
        guest = QemuGuest(
            self._spec(guest_cid),
            accel=self.args.accel,
            cache=image.cache_dir(),
            release=self.args.kernel_release,
            log_fd=self.log_fd,
            limits=self.limits.replace(vm_boot_timeout=self.args.boot_timeout),
        )
        self.guest = guest
        await guest.start()
        return guest

    async def start(self) -> SandboxState:
        if not vhost_vsock_device():
            guest = await self._boot(0)
        else:
            guest = await self._boot_with_a_free_cid()
            cid = guest.spec.guest_cid
            self.proxy = HvsockServer(
                os.path.join(self.directory, SOCKET_FILE),
                lambda port: VsockAddress(cid, port),
                limits=self.limits,
            )
            await self.proxy.start()
        assert guest.qemu is not None
        return sandbox_record(
            self.args,
            guest.qemu.pid,
            accel=guest.accel,
            device_pid=guest.device.pid if guest.device is not None else 0,
            kernel=self.args.kernel_release,
            vsock_cid=guest.spec.guest_cid,
        )

    async def _boot_with_a_free_cid(self) -> QemuGuest:
        first = FIRST_GUEST_CID + zlib.crc32(self.args.id.encode()) % _CID_SPREAD
        for attempt in range(_CID_TRIES):
            try:
                return await self._boot(first + attempt)
            except BootError as exc:
                if "Address already in use" not in str(exc) or attempt == _CID_TRIES - 1:
                    raise
                log.info("guest CID %d is taken: trying the next", first + attempt)
        raise AssertionError("unreachable")

    async def wait(self) -> int:
        assert self.guest is not None
        return await self.guest.wait()

    async def stop(self) -> None:
        if self.guest is not None:
            await self.guest.stop()
        if self.proxy is not None:
            self.proxy.close()
            await self.proxy.wait_closed()


def _interpreter() -> str:
    """The interpreter the guest runs: this one, by the path it was started as (a venv's ``python``
    keeps its ``pyvenv.cfg``; the guest resolves symlinks in the host's root itself)."""
    return os.path.abspath(sys.executable)
