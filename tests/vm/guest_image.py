"""The tests/vm guest: Debian's cloud kernel and a small initramfs (busybox, socat, the virtio-vsock
modules, ``guest_init.sh`` as ``/init``), built once and cached.

Not the product's image builder (issue 10 part 3): just enough guest to prove that QEMU (TCG)
talks to our device. Inputs: the kernel package, fetched with ``apt-get download`` (the facts
file's recipe; the only download) and unpacked with ``dpkg-deb -x``; the host's static busybox and
its socat with the libraries ``ldd`` names. The cpio archive is written here (newc), so no ``cpio``
binary is needed.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

KERNEL_META = "linux-image-cloud-amd64"
MODULES = (
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "vsock",
    "vmw_vsock_virtio_transport_common",
    "vmw_vsock_virtio_transport",
)
INIT = Path(__file__).with_name("guest_init.sh")


class Unavailable(Exception):
    """A tool or the kernel package is missing: the vm tier is skipped with this reason."""


@dataclass(frozen=True)
class GuestImage:
    kernel: Path
    initrd: Path
    release: str


def cache_dir() -> Path:
    base = os.environ.get("KUASAR_VM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kuasar-py", "vm-test"
    )
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _tool(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise Unavailable(f"{name} not found (apt-get install {package})")
    return found


def _kernel_package() -> str:
    """The versioned package the meta package depends on (e.g. linux-image-6.1.0-57-cloud-amd64)."""
    out = subprocess.run(
        ["apt-cache", "depends", KERNEL_META], capture_output=True, text=True, check=False, timeout=60
    ).stdout
    for line in out.splitlines():
        name = line.strip().removeprefix("Depends:").strip()
        if line.strip().startswith("Depends:") and name.startswith("linux-image-"):
            return name
    raise Unavailable(f"apt-cache knows no {KERNEL_META} (run apt-get update)")


def _kernel_tree(cache: Path) -> Path:
    """The unpacked kernel package in the cache, downloaded on first use."""
    env_deb = os.environ.get("KUASAR_VM_KERNEL_DEB")
    if env_deb:
        debs = [Path(env_deb)]
    else:
        debs = sorted(cache.glob("linux-image-*-cloud-amd64_*.deb"))
        if not debs:
            _tool("apt-get", "apt")
            package = _kernel_package()
            done = subprocess.run(
                ["apt-get", "download", package], cwd=cache, capture_output=True, text=True, timeout=600
            )
            debs = sorted(cache.glob("linux-image-*-cloud-amd64_*.deb"))
            if done.returncode != 0 or not debs:
                raise Unavailable(f"apt-get download {package} failed: {done.stderr.strip()[-300:]}")
    deb = debs[-1]
    tree = cache / (deb.name + ".d")
    if not (tree / "boot").is_dir():
        shutil.rmtree(tree, ignore_errors=True)
        _tool("dpkg-deb", "dpkg")
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True, timeout=300)
    return tree


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


def _cpio_newc(files: list[tuple[str, int, bytes]]) -> bytes:
    """A newc archive of ``(path, mode, data)`` entries (symlinks: mode 0o120777, data = target)."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate([*files, ("TRAILER!!!", 0, b"")], start=1):
        encoded = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + encoded
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def _entries(tree: Path, release: str) -> list[tuple[str, int, bytes]]:
    busybox = _tool("busybox", "busybox-static")
    socat = _tool("socat", "socat")
    entries: list[tuple[str, int, bytes]] = []
    for directory in ("bin", "usr", "usr/bin", "lib", "lib/modules", "lib64", "proc", "sys", "dev", "tmp"):
        entries.append((directory, 0o40755, b""))
    entries.append(("init", 0o100755, INIT.read_bytes()))
    entries.append(("bin/busybox", 0o100755, Path(busybox).read_bytes()))
    entries.append(("bin/sh", 0o120777, b"busybox"))
    entries.append(("usr/bin/socat", 0o100755, Path(socat).read_bytes()))
    dirs = {"bin", "usr", "usr/bin", "lib", "lib/modules", "lib64"}
    for lib in _libraries(socat):
        parent = Path(lib.lstrip("/")).parent
        for directory in reversed([parent, *parent.parents][:-1]):
            if str(directory) not in dirs:
                dirs.add(str(directory))
                entries.append((str(directory), 0o40755, b""))
        entries.append((lib.lstrip("/"), 0o100755, Path(os.path.realpath(lib)).read_bytes()))
    kernel = tree / "lib" / "modules" / release / "kernel"
    for module in MODULES:
        found = list(kernel.rglob(f"{module}.ko"))
        if not found:
            raise Unavailable(f"the kernel package has no {module}.ko")
        entries.append((f"lib/modules/{module}.ko", 0o100644, found[0].read_bytes()))
    return entries


def build() -> GuestImage:
    """The cached image, rebuilt when the kernel, init, busybox or socat changed.

    Raises:
        Unavailable: a tool or the kernel package is missing.
    """
    cache = cache_dir()
    tree = _kernel_tree(cache)
    (vmlinuz,) = sorted((tree / "boot").glob("vmlinuz-*"))
    release = vmlinuz.name.removeprefix("vmlinuz-")
    entries = _entries(tree, release)
    digest = hashlib.sha256()
    for name, mode, data in entries:
        digest.update(b"%s %o %d\0" % (name.encode(), mode, len(data)))
        digest.update(data)
    initrd = cache / f"initrd-{digest.hexdigest()[:16]}.img"
    if not initrd.exists():
        partial = initrd.with_suffix(".partial")
        partial.write_bytes(gzip.compress(_cpio_newc(entries), compresslevel=6))
        partial.rename(initrd)
        for stale in cache.glob("initrd-*.img"):  # built from inputs that changed since
            if stale != initrd:
                stale.unlink(missing_ok=True)
    return GuestImage(vmlinuz, initrd, release)
