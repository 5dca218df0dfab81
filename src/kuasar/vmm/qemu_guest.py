"""Run one QEMU guest: the vsock device process, QEMU, boot, power-off.

Layer contract: vmm layer, asyncio, host side; the sandbox supervisor drives it (``--vmm qemu``)
exactly where a local sandbox drives its agent process. It starts processes in the caller's
process group (a ``killpg`` of the supervisor takes them all), never prints, and bounds every wait:

- **boot**: ready when the guest accepts a connection on the agent port (``CONNECT 1024`` → ``OK``)
  within ``limits.vm_boot_timeout``; QEMU exiting or the deadline passing is a :class:`BootError`
  whose hints are the serial console's last lines.
- **accelerator**: ``auto`` tries KVM only when ``/dev/kvm`` opens and this host has not already
  shown that KVM guests fail; a KVM guest that does not reach ``/init`` within
  ``limits.kvm_probe_timeout`` (or QEMU dying first, as it does on nested ``kvm_pvm``) is recorded
  in the image cache and the boot is redone under TCG.
- **stop**: ctrl-alt-delete over QMP (the agent as PID 1 powers the guest off, QEMU exits), then
  after ``limits.vm_poweroff_grace`` QMP ``quit``, then SIGKILL; the device process exits by itself
  when QEMU's vhost-user connection closes (else SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from pathlib import Path

from kuasar._subprocess import exit_within, kill, terminate
from kuasar._text import printable
from kuasar.address import Address, HvsockAddress, VsockAddress
from kuasar.config import AGENT_PORT, DEFAULT_LIMITS, Limits
from kuasar.errors import KuasarError
from kuasar.vmm import qemu
from kuasar.vmm.qmp import Qmp, QmpError, ctrl_alt_delete

__all__ = ["BootError", "QemuGuest", "console_tail"]

SOCKET_FILE = "task.socket"
#: What ``guest_init.sh`` prints once the kernel runs ``/init`` (the KVM probe waits for it).
INIT_MARK = b"KUASAR-INIT: kernel up"
_POLL = 0.1

log = logging.getLogger("kuasar.vmm.qemu")


class BootError(KuasarError):
    """The guest did not boot: QEMU exited, or the agent did not answer in time."""


class _KvmFailed(Exception):
    """A KVM guest did not reach ``/init``: say why and fall back to TCG."""


def console_tail(directory: str, lines: int = 12) -> list[str]:
    """The serial console's last ``lines`` lines, escaped and indented (hints of a boot error); a
    console with nothing on it yet says so (the kernel had not even reached ``/init``)."""
    try:
        with open(os.path.join(directory, qemu.CONSOLE_LOG), "rb") as file:
            file.seek(0, os.SEEK_END)
            file.seek(max(0, file.tell() - 16384))
            text = file.read().decode("utf-8", "replace")
    except OSError:
        text = ""
    tail = [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]
    if not tail:
        return ["console.log is empty: the guest kernel printed nothing yet"]
    return ["console.log:", *(f"  {printable(line)}" for line in tail)]


class QemuGuest:
    """One guest of a sandbox directory; ``start`` → ``wait`` / ``stop``."""

    def __init__(
        self,
        spec: qemu.VmSpec,
        *,
        accel: str = "auto",
        cache: Path | None = None,
        release: str = "",
        log_fd: int | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.spec = spec
        self.accel_choice = accel
        self.cache = cache
        self.release = release
        self.log_fd = log_fd
        self.limits = limits
        self.qemu: asyncio.subprocess.Process | None = None
        self.device: asyncio.subprocess.Process | None = None

    @property
    def accel(self) -> str:
        return self.spec.accel

    def _accelerators(self) -> list[str]:
        if self.accel_choice in ("tcg", "kvm"):
            return [self.accel_choice]
        if not qemu.kvm_device():
            return ["tcg"]
        verdict = qemu.kvm_verdict(self.cache, self.release) if self.cache else None
        if verdict is not None and verdict != "ok":
            log.info("not trying KVM: an earlier try on this host %s", verdict.replace("fails:", "failed:"))
            return ["tcg"]
        return ["kvm", "tcg"]

    async def start(self) -> None:
        """Boot the guest and return once its agent port accepts.

        Raises:
            BootError: QEMU exited or the guest did not answer within the boot timeout.
            VmmMissing: QEMU is not installed.
        """
        binary = qemu.qemu_binary()
        accelerators = self._accelerators()
        for accel in accelerators:
            self.spec = self.spec.replace(accel=accel)
            probing = accel == "kvm" and self.accel_choice == "auto"
            try:
                await self._boot(binary, probe_kvm=probing)
            except _KvmFailed as exc:
                log.warning("KVM guest failed (%s); booting under TCG", exc)
                if self.cache is not None:
                    qemu.record_kvm_verdict(self.cache, self.release, f"fails: {exc}")
                await self._kill_all()
                continue
            except BaseException:
                await self._kill_all()
                raise
            if probing and self.cache is not None:
                qemu.record_kvm_verdict(self.cache, self.release, "ok")
            return

    def _clear(self) -> None:
        for name in (qemu.VHOST_USER_SOCKET, qemu.QMP_SOCKET, SOCKET_FILE, qemu.CONSOLE_LOG):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.spec.directory, name))

    async def _boot(self, binary: str, *, probe_kvm: bool) -> None:
        self._clear()
        started = time.monotonic()
        if not self.spec.guest_cid:
            await self._start_device()
        qemu_log = _open_log(os.path.join(self.spec.directory, qemu.QEMU_LOG))
        try:
            self.qemu = await asyncio.create_subprocess_exec(
                *qemu.command(self.spec, binary),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=qemu_log,
                stderr=qemu_log,
            )
        finally:
            os.close(qemu_log)
        log.info(
            "QEMU %d started (%s, %d MiB, %d vCPU)",
            self.qemu.pid,
            self.accel,
            self.spec.memory_mib,
            self.spec.cpus,
        )
        if probe_kvm:
            await self._wait_for_init()
        await self._wait_until_ready(started)
        log.info("guest ready after %.1f s", time.monotonic() - started)

    async def _start_device(self) -> None:
        directory = self.spec.directory
        vhost = os.path.join(directory, qemu.VHOST_USER_SOCKET)
        argv = [sys.executable, "-m", "kuasar.vmm.vsock_server", "--socket", vhost]
        argv += ["--uds-path", os.path.join(directory, SOCKET_FILE), "--guest-cid", "3"]
        self.device = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=self.log_fd, stderr=self.log_fd
        )
        deadline = time.monotonic() + self.limits.agent_ready_timeout
        while not _exists(vhost):
            if self.device.returncode is not None:
                raise BootError(f"the vsock device exited during start-up (status {self.device.returncode})")
            if time.monotonic() > deadline:
                raise BootError("the vsock device did not start listening in time")
            await asyncio.sleep(0.02)

    def _exited(self) -> str | None:
        """Why booting cannot go on: QEMU or the device exited."""
        if self.qemu is not None and self.qemu.returncode is not None:
            return f"QEMU exited with status {self.qemu.returncode} during boot"
        if self.device is not None and self.device.returncode is not None:
            return f"the vsock device exited with status {self.device.returncode} during boot"
        return None

    async def _wait_for_init(self) -> None:
        path = os.path.join(self.spec.directory, qemu.CONSOLE_LOG)
        deadline = time.monotonic() + self.limits.kvm_probe_timeout
        while True:
            if INIT_MARK in _head(path):
                return
            why = self._exited()
            if why is not None:
                raise _KvmFailed(_qemu_said(self.spec.directory) or why)
            if time.monotonic() > deadline:
                raise _KvmFailed(f"the kernel did not reach /init within {self.limits.kvm_probe_timeout:g} s")
            await asyncio.sleep(_POLL)

    def agent_address(self, port: int = AGENT_PORT) -> Address:
        if self.spec.guest_cid:
            return VsockAddress(self.spec.guest_cid, port)
        return HvsockAddress(os.path.join(self.spec.directory, SOCKET_FILE), port)

    async def _accepts(self) -> bool:
        from kuasar import transport

        try:
            _, writer = await transport.dial(self.agent_address(), connect_timeout=2.0, retry=False)
        except KuasarError:
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    async def _wait_until_ready(self, started: float) -> None:
        timeout = self.limits.vm_boot_timeout
        while not await self._accepts():
            why = self._exited()
            if why is not None:
                said = _qemu_said(self.spec.directory)
                raise BootError(why + (f": {said}" if said else ""), hints=console_tail(self.spec.directory))
            if time.monotonic() - started > timeout:
                raise BootError(
                    f"the guest did not answer on vsock port {AGENT_PORT} within {timeout:g} s",
                    hints=[*console_tail(self.spec.directory), "A slower host needs --boot-timeout."],
                )
            await asyncio.sleep(_POLL)

    async def wait(self) -> int:
        """QEMU's exit status (when the guest powers off, panics, or QEMU is killed)."""
        assert self.qemu is not None
        return await self.qemu.wait()

    async def stop(self) -> None:
        """Power the guest off cleanly; force it after ``limits.vm_poweroff_grace``."""
        if self.qemu is not None and self.qemu.returncode is None:
            await self._qmp("send-key", ctrl_alt_delete)
            if await exit_within(self.qemu, self.limits.vm_poweroff_grace) is None:
                log.warning(
                    "the guest did not power off within %g s: quitting QEMU", self.limits.vm_poweroff_grace
                )
                await self._qmp("quit")
                if await exit_within(self.qemu, self.limits.agent_stop_grace) is None:
                    await self._kill(self.qemu)
        await self._stop_device()

    async def _qmp(self, name: str, arguments: dict[str, object] | None = None) -> None:
        try:
            async with asyncio.timeout(self.limits.agent_stop_grace):
                async with await Qmp.connect(os.path.join(self.spec.directory, qemu.QMP_SOCKET)) as qmp:
                    await qmp.execute(name, arguments)
        except (QmpError, TimeoutError) as exc:
            log.warning("QMP %s: %s", name, exc or "timed out")

    async def _stop_device(self) -> None:
        """It exits by itself once QEMU's connection is gone; else SIGTERM, then SIGKILL."""
        device, grace = self.device, self.limits.agent_stop_grace
        if device is None or await exit_within(device, grace) is not None:
            return
        if not await terminate(device, grace, self.limits.kill_timeout):
            log.error("the vsock device (pid %d) did not exit after SIGKILL", device.pid)

    async def _kill(self, process: asyncio.subprocess.Process) -> None:
        if not await kill(process, self.limits.kill_timeout):
            log.error("process %d did not exit %g s after SIGKILL", process.pid, self.limits.kill_timeout)

    async def _kill_all(self) -> None:
        for process in (self.qemu, self.device):
            if process is not None:
                await self._kill(process)
        self.qemu = self.device = None


def _open_log(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)


def _exists(path: str) -> bool:
    return os.path.exists(path)


def _head(path: str, size: int = 1 << 20) -> bytes:
    """The first ``size`` bytes of ``path`` (empty while it does not exist)."""
    try:
        with open(path, "rb") as file:
            return file.read(size)
    except OSError:
        return b""


def _qemu_said(directory: str) -> str:
    """QEMU's last error line (``qemu.log``), e.g. a KVM assertion or a missing file."""
    try:
        with open(os.path.join(directory, qemu.QEMU_LOG), "rb") as file:
            lines = file.read()[-4096:].decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    said = [line.strip() for line in lines if line.strip()]
    return printable(said[-1].removeprefix("qemu-system-x86_64: ")) if said else ""
