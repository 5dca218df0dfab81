"""QEMU for a real-kernel sandbox: its command line, kernel command line and accelerator choice.

Layer contract: vmm layer, host side. :func:`command` and :func:`kernel_cmdline` are pure (a
:class:`VmSpec` in, argv out: unit-tested); the probes (:func:`qemu_binary`, :func:`kvm_device`,
:func:`vhost_vsock_device`, the KVM verdict cache) touch only the filesystem. Starting and
stopping the processes is :mod:`kuasar.vmm.qemu_guest`'s job.

Layout of a sandbox directory (``ROOT/ID``), next to ``sandbox.json`` and ``sandbox.log``::

    task.socket       the hybrid vsock socket host clients dial (served by our device process)
    task.socket_PORT  guest-initiated connections to host port PORT (Cloud Hypervisor convention)
    vhost-user.sock   the device's vhost-user socket; QEMU's chardev connects to it
    qmp.sock          QEMU's QMP monitor (shutdown, status)
    console.log       the guest's serial console (``kuasarctl sandbox logs``)
    qemu.log          QEMU's own stderr

With a working ``/dev/vhost-vsock`` the guest gets a kernel ``vhost-vsock-pci`` device with its own
CID instead; there is no device process and no ``task.socket`` then (``VmSpec.guest_cid``).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from kuasar._record import Record
from kuasar.errors import KuasarError

__all__ = [
    "CONSOLE_LOG",
    "QMP_SOCKET",
    "VHOST_USER_SOCKET",
    "VmSpec",
    "VmmMissing",
    "command",
    "kernel_cmdline",
    "kvm_device",
    "kvm_verdict",
    "qemu_binary",
    "record_kvm_verdict",
    "vhost_vsock_device",
]

VHOST_USER_SOCKET = "vhost-user.sock"
QMP_SOCKET = "qmp.sock"
CONSOLE_LOG = "console.log"
QEMU_LOG = "qemu.log"
#: The 9p tag ``guest_init.sh`` mounts as the guest's root.
ROOT_TAG = "hostroot"
#: The longest kernel command line x86 boots (COMMAND_LINE_SIZE).
MAX_CMDLINE = 2048


class VmmMissing(KuasarError):
    """QEMU (or a part it needs) is not installed."""


class VmSpec(Record):
    """Everything that decides QEMU's command line.

    Attributes:
        name: the sandbox ID (QEMU's ``-name``, the guest's hostname).
        directory: the sandbox directory (sockets and logs, see the module doc).
        kernel: the guest kernel (``vmlinuz``).
        initrd: the initramfs (:mod:`kuasar.vmm.image`).
        python: the host interpreter the guest runs as PID 1 (it sees the host's root over 9p).
        accel: ``"tcg"`` or ``"kvm"``.
        memory_mib: guest RAM.
        cpus: guest vCPUs.
        debug_console: put ``task.debug`` on the kernel command line (console on vsock port 1025).
        log_level: the agent's ``task.log_level``.
        guest_cid: 0 for our vhost-user device behind ``task.socket``; a CID ≥ 3 for the kernel's
            ``vhost-vsock-pci``.
    """

    name: str
    directory: str
    kernel: str
    initrd: str
    python: str
    accel: str = "tcg"
    memory_mib: int = 512
    cpus: int = 1
    debug_console: bool = True
    log_level: str = "info"
    guest_cid: int = 0


def qemu_binary() -> str:
    """``qemu-system-x86_64`` on PATH.

    Raises:
        VmmMissing: it is not installed (with the install hint).
    """
    found = shutil.which("qemu-system-x86_64")
    if found is None:
        raise VmmMissing(
            "qemu-system-x86_64 not found", hints=["Install it: apt-get install qemu-system-x86"]
        )
    return found


def _usable(path: str) -> bool:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def kvm_device() -> bool:
    """``/dev/kvm`` opens read-write: worth *trying* KVM (whether a guest really runs is another
    matter, see :func:`kvm_verdict`)."""
    return _usable("/dev/kvm")


def vhost_vsock_device() -> bool:
    """``/dev/vhost-vsock`` opens read-write: the kernel can give the guest a vsock device."""
    return _usable("/dev/vhost-vsock")


def kernel_cmdline(spec: VmSpec) -> str:
    """The guest kernel's command line: serial console, power off on panic, what ``/init`` and the
    agent read (``kuasar.python``, ``kuasar.hostname``, ``task.*``).

    Raises:
        KuasarError: the interpreter's path has a space or the line is too long for the kernel.
    """
    if any(ch.isspace() for ch in spec.python) or not spec.python.startswith("/"):
        raise KuasarError(
            f"the interpreter path {spec.python!r} cannot go on a kernel command line",
            hints=["Install kuasar-py into a virtualenv whose absolute path has no spaces."],
        )
    words = ["console=ttyS0", "panic=-1", "quiet", f"kuasar.python={spec.python}"]
    words += [f"kuasar.hostname={spec.name[:64]}", f"task.log_level={spec.log_level}"]
    if spec.debug_console:
        words.append("task.debug")
    line = " ".join(words)
    if len(line) >= MAX_CMDLINE:
        raise KuasarError(f"the kernel command line would be {len(line)} bytes (at most {MAX_CMDLINE - 1})")
    return line


def command(spec: VmSpec, binary: str = "qemu-system-x86_64") -> list[str]:
    """QEMU's argv for ``spec`` (the facts file's measured shape).

    Memory is a shared memfd (the vhost-user device maps it); no default devices, no display, no
    monitor on stdio; ``-no-reboot`` so a guest power-off or panic ends QEMU; the host's root is
    exported read-only over 9p.
    """
    path = Path(spec.directory)
    argv = [binary, "-name", f"kuasar-{spec.name}"]
    argv += ["-accel", spec.accel, "-cpu", "host" if spec.accel == "kvm" else "max"]
    argv += ["-machine", "pc,memory-backend=mem", "-m", str(spec.memory_mib), "-smp", str(spec.cpus)]
    argv += ["-object", f"memory-backend-memfd,id=mem,size={spec.memory_mib}M,share=on"]
    argv += ["-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none", "-no-reboot"]
    argv += ["-kernel", spec.kernel, "-initrd", spec.initrd, "-append", kernel_cmdline(spec)]
    argv += ["-serial", f"file:{path / CONSOLE_LOG}"]
    argv += ["-qmp", f"unix:{path / QMP_SOCKET},server=on,wait=off"]
    argv += ["-virtfs", f"local,path=/,mount_tag={ROOT_TAG},security_model=none,readonly=on,multidevs=remap"]
    if spec.guest_cid:
        argv += ["-device", f"vhost-vsock-pci,guest-cid={spec.guest_cid}"]
    else:
        argv += ["-chardev", f"socket,id=vu,path={path / VHOST_USER_SOCKET}"]
        argv += ["-device", "vhost-user-vsock-pci,chardev=vu"]
    return argv


def _verdict_file(cache: Path) -> Path:
    return cache / "kvm-verdict.json"


def _host_key(guest_release: str) -> str:
    """What a KVM verdict depends on: the host kernel, QEMU and the guest kernel."""
    host = os.uname().release
    try:
        qemu = str(os.stat(qemu_binary()).st_mtime_ns)
    except (VmmMissing, OSError):
        qemu = "?"
    return f"{host} {qemu} {guest_release}"


def kvm_verdict(cache: Path, guest_release: str) -> str | None:
    """What was learnt by trying KVM on this host: ``"ok"``, ``"fails: WHY"``, or None (untried)."""
    try:
        data = json.loads(_verdict_file(cache).read_text())
    except (OSError, ValueError):
        return None
    value = data.get(_host_key(guest_release)) if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def record_kvm_verdict(cache: Path, guest_release: str, verdict: str) -> None:
    """Remember ``verdict`` for this host (best effort: a read-only cache only costs a retry)."""
    path = _verdict_file(cache)
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    data[_host_key(guest_release)] = verdict
    try:
        tmp = path.with_name(f"{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)
    except OSError:
        pass
