"""The device-level tests/vm guest: the product's kernel (``kuasar.vmm.image.kernel``) with a small
initramfs of its own — busybox, socat, the virtio-vsock modules, ``guest_init.sh`` as ``/init`` —
built once and cached beside the product's image.

Not the product's image (that is ``kuasar.vmm.image.build``): just enough guest to prove that QEMU
(TCG) talks to our device, with socat services instead of kuasar-agent. Inputs: the host's static
busybox and its socat with the libraries ``ldd`` names.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from kuasar.vmm import image

MODULES = ("virtio_pci", "vmw_vsock_virtio_transport")
INIT = Path(__file__).with_name("guest_init.sh")


class Unavailable(Exception):
    """A tool or the kernel package is missing: the vm tier is skipped with this reason."""


@dataclass(frozen=True)
class GuestImage:
    kernel: Path
    initrd: Path
    release: str


def _tool(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise Unavailable(f"{name} not found (apt-get install {package})")
    return found


def _libraries(binary: str) -> list[str]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=False).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
            libs.append(parts[2])
        elif parts and parts[0].startswith("/"):
            libs.append(parts[0])  # the dynamic loader
    return libs


def _entries(modules: dict[str, Path]) -> list[tuple[str, int, bytes]]:
    busybox = _tool("busybox", "busybox-static")
    socat = _tool("socat", "socat")
    order = image.module_order(modules, MODULES)
    entries: list[tuple[str, int, bytes]] = []
    dirs = ["bin", "usr", "usr/bin", "lib", "lib/modules", "lib64", "proc", "sys", "dev", "tmp"]
    entries += [(directory, 0o40755, b"") for directory in dirs]
    entries.append(("init", 0o100755, INIT.read_bytes()))
    entries.append(("bin/busybox", 0o100755, Path(busybox).read_bytes()))
    entries.append(("bin/sh", 0o120777, b"busybox"))
    entries.append(("usr/bin/socat", 0o100755, Path(socat).read_bytes()))
    entries.append(("lib/modules/order", 0o100644, "".join(f"{name}\n" for name in order).encode()))
    for lib in _libraries(socat):
        parent = Path(lib.lstrip("/")).parent
        for directory in reversed([parent, *parent.parents][:-1]):
            if str(directory) not in dirs:
                dirs.append(str(directory))
                entries.append((str(directory), 0o40755, b""))
        entries.append((lib.lstrip("/"), 0o100755, Path(os.path.realpath(lib)).read_bytes()))
    entries += [(f"lib/modules/{name}.ko", 0o100644, modules[name].read_bytes()) for name in order]
    return entries


def build() -> GuestImage:
    """The cached image, rebuilt when the kernel, init, busybox or socat changed.

    Raises:
        Unavailable: a tool or the kernel package is missing.
    """
    try:
        cache = image.cache_dir()
        unpacked = image.kernel(cache)
        entries = _entries(unpacked.modules)
    except image.ImageError as exc:
        raise Unavailable(str(exc)) from None
    initrd, _ = image.cached_initrd(cache, entries, prefix="device-test-initrd")
    return GuestImage(unpacked.vmlinuz, initrd, unpacked.release)
