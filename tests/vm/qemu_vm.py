"""Boot the tests/vm guest under QEMU (TCG) against our vhost-user-vsock device process.

The device runs first (QEMU's chardev is a client and does the whole vhost-user handshake during
device realize), then QEMU with the facts file's command line. ``VM.client(port)`` is a host
client of the hybrid socket: ``CONNECT <port>`` → ``OK <n>``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .guest_image import GuestImage, Unavailable

DEVICE = "import sys; from kuasar.vmm.vsock_server import main; sys.exit(main(sys.argv[1:]))"


def qemu_binary() -> str:
    found = shutil.which("qemu-system-x86_64")
    if found is None:
        raise Unavailable("qemu-system-x86_64 not found (apt-get install qemu-system-x86)")
    return found


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class VM:
    """One guest: the device process, QEMU, and their files in ``directory``."""

    def __init__(
        self,
        image: GuestImage,
        directory: Path,
        *,
        cid: int = 3,
        verbose: bool = False,
        machine: str = "pc",
        smp: int = 1,
    ) -> None:
        self.image = image
        self.machine = machine
        self.smp = smp
        self.dir = directory
        self.cid = cid
        self.vhost = str(directory / "vu.sock")
        self.uds = str(directory / "task.socket")
        self.console = directory / "console.log"
        self.device_log = directory / "device.log"
        self.verbose = verbose
        self.device: subprocess.Popen[bytes] | None = None
        self.qemu: subprocess.Popen[bytes] | None = None
        self.launched = 0.0
        self.ready_after = 0.0

    def command(self) -> list[str]:
        return [
            qemu_binary(),
            *("-name", "kuasar-vm-test", "-accel", "tcg", "-machine", f"{self.machine},memory-backend=mem"),
            *("-object", "memory-backend-memfd,id=mem,size=512M,share=on", "-cpu", "max", "-m", "512"),
            *(
                "-smp",
                str(self.smp),
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-monitor",
                "none",
            ),
            *("-no-reboot", "-kernel", str(self.image.kernel), "-initrd", str(self.image.initrd)),
            *("-append", "console=ttyS0 panic=-1 quiet", "-serial", f"file:{self.console}"),
            *("-chardev", f"socket,id=vu,path={self.vhost}", "-device", "vhost-user-vsock-pci,chardev=vu"),
        ]

    def start(self, boot_timeout: float = 180.0) -> None:
        args = ["--socket", self.vhost, "--uds-path", self.uds, "--guest-cid", str(self.cid)]
        with open(self.device_log, "wb") as log:
            self.device = subprocess.Popen(
                [sys.executable, "-c", DEVICE, *args, *(["--verbose"] if self.verbose else [])],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait(lambda: os.path.exists(self.vhost) and os.path.exists(self.uds), 10, "device socket")
        self.launched = time.monotonic()
        with open(self.dir / "qemu.log", "wb") as log:
            self.qemu = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait(self._echoes, boot_timeout, "the guest's echo on vsock port 1024")
        self.ready_after = time.monotonic() - self.launched

    def _echoes(self) -> bool:
        try:
            sock, line = self.client(1024, timeout=5)
        except OSError:
            return False
        with sock:
            if not line.startswith(b"OK "):
                return False
            sock.sendall(b"ping")
            return sock.recv(4) == b"ping"

    def _wait(self, ready: object, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():  # type: ignore[operator]
            for name, proc in (("device", self.device), ("qemu", self.qemu)):
                if proc is not None and proc.poll() is not None:
                    raise AssertionError(
                        f"the {name} exited ({proc.returncode}) waiting for {what}\n{self.tail()}"
                    )
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout:g} s\n{self.tail()}")
            time.sleep(0.02)

    def tail(self, lines: int = 15) -> str:
        out = []
        for path in (self.console, self.dir / "qemu.log", self.device_log):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {path.name}:\n" + "\n".join(text))
        return "\n".join(out)

    def client(self, port: int, *, extra: bytes = b"", timeout: float = 30) -> tuple[socket.socket, bytes]:
        """A host client: ``CONNECT port``; returns the socket and the reply line (b"": refused)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(self.uds)
            sock.sendall(b"CONNECT %d\n" % port + extra)
            line = b""
            while not line.endswith(b"\n") and len(line) < 64:
                byte = sock.recv(1)
                if not byte:
                    break
                line += byte
        except BaseException:
            sock.close()
            raise
        return sock, line

    def cpu(self) -> tuple[float, float]:
        """CPU seconds used so far by the device and by QEMU."""
        assert self.device is not None and self.qemu is not None
        return _cpu_seconds(self.device.pid), _cpu_seconds(self.qemu.pid)

    def kill_qemu(self) -> None:
        if self.qemu is not None and self.qemu.poll() is None:
            self.qemu.send_signal(signal.SIGKILL)
            self.qemu.wait(30)

    def stop(self) -> None:
        """QEMU first (the device then exits by itself: its front-end went away)."""
        self.kill_qemu()
        if self.device is not None:
            try:
                self.device.wait(15)
            except subprocess.TimeoutExpired:
                self.device.kill()
                self.device.wait(15)
