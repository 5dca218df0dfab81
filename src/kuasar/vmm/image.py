"""The guest image of ``kuasarctl sandbox run --vmm qemu``: Debian's kernel and a small initramfs.

Layer contract: vmm layer, host side, synchronous (files and ``subprocess`` only; called before any
VM starts, by ``kuasar.sandbox.qemu`` and ``kuasarctl image build``). Errors are
:class:`ImageError` with the install hint; nothing here prints.

What the image is:

- **kernel**: Debian's generic ``linux-image-*-amd64`` package (the ``-cloud-`` flavour has no 9p),
  fetched with ``apt-get download`` into the cache — the only download — and unpacked with
  ``dpkg-deb -x``; ``KUASAR_VM_KERNEL_DEB`` names a package file to use instead.
- **initramfs** (newc cpio, gzip, written here): busybox-static, the virtio/9p/overlay/vsock modules in
  dependency order (read from each ``.ko``'s ``depends=``), and ``guest_init.sh`` as ``/init``.
- **userland**: not in the image. QEMU exports the host's root read-only over 9p; ``/init`` mounts
  it under an overlay with a tmpfs upper layer (the guest writes into its own RAM, nothing of the
  host is hidden) as the guest's root, and runs the host's Python with the installed project as
  PID 1. The guest therefore always runs the code and the ``runc``, ``bash`` and coreutils that are
  installed on the host, with nothing to rebuild when the project changes (README "Real-kernel
  sandboxes" gives the measured trade-off against packing Python into the initramfs).

The build is cached in ``$KUASAR_VM_CACHE`` (default ``$XDG_CACHE_HOME/kuasar-py/vm``); the initramfs
file is named by the hash of its content, so it is rebuilt exactly when an input changes.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from kuasar.errors import KuasarError

__all__ = [
    "MODULES",
    "GuestImage",
    "ImageError",
    "Kernel",
    "build",
    "cache_dir",
    "cpio_newc",
    "kernel",
    "module_order",
]

KERNEL_META = "linux-image-amd64"
#: The modules the guest needs (vsock_diag: ``ss --vsock`` works in the guest); their dependencies are
#: added and ordered by :func:`module_order`.
MODULES = ("virtio_pci", "9p", "9pnet_virtio", "overlay", "vmw_vsock_virtio_transport", "vsock_diag")
INIT = Path(__file__).with_name("guest_init.sh")
_DEB_GLOB = "linux-image-*-amd64_*.deb"
_TIMEOUT = 600.0


class ImageError(KuasarError):
    """The guest image cannot be built: a tool or the kernel package is missing."""


@dataclass(frozen=True, slots=True)
class GuestImage:
    """A built image: boot ``kernel`` with ``initrd``; ``release`` is the kernel's ``uname -r``."""

    kernel: Path
    initrd: Path
    release: str
    built: bool  #: False when the cached initramfs was reused


def cache_dir() -> Path:
    """The image cache (created when missing)."""
    base = os.environ.get("KUASAR_VM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kuasar-py", "vm"
    )
    path = Path(base)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImageError(
            f"cannot create the image cache {path}: {exc.strerror}",
            hints=["Set KUASAR_VM_CACHE to a writable directory."],
        ) from None
    return path


def _tool(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ImageError(f"{name} not found", hints=[f"Install it: apt-get install {package}"])
    return found


def _run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False, timeout=_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise ImageError(f"{argv[0]} {argv[1]} did not finish within {_TIMEOUT:g} s") from None


def _kernel_package() -> str:
    """The versioned package the meta package depends on (``linux-image-6.1.0-57-amd64``)."""
    out = _run([_tool("apt-cache", "apt"), "depends", KERNEL_META]).stdout
    for line in out.splitlines():
        word = line.strip()
        if word.startswith("Depends: linux-image-"):
            return word.removeprefix("Depends: ")
    raise ImageError(
        f"the package index knows no {KERNEL_META}",
        hints=["Run apt-get update (Debian's main archive has it), or set KUASAR_VM_KERNEL_DEB."],
    )


def _kernel_deb(cache: Path) -> Path:
    """The kernel package file: ``KUASAR_VM_KERNEL_DEB``, a cached one, or one downloaded now."""
    named = os.environ.get("KUASAR_VM_KERNEL_DEB")
    if named:
        if not os.path.isfile(named):
            raise ImageError(f"KUASAR_VM_KERNEL_DEB={named}: no such file")
        return Path(named)
    cached = sorted(p for p in cache.glob(_DEB_GLOB) if "-cloud-" not in p.name)
    if cached:
        return cached[-1]
    package = _kernel_package()
    done = _run([_tool("apt-get", "apt"), "download", package], cwd=cache)
    fetched = sorted(p for p in cache.glob(_DEB_GLOB) if "-cloud-" not in p.name)
    if done.returncode != 0 or not fetched:
        said = (done.stderr.strip().splitlines() or ["no package file"])[-1]
        raise ImageError(
            f"apt-get download {package} failed: {said}",
            hints=["Check the network and apt sources, or set KUASAR_VM_KERNEL_DEB to a package file."],
        )
    return fetched[-1]


def _kernel_tree(cache: Path, deb: Path) -> Path:
    tree = cache / (deb.name + ".d")
    if not (tree / "boot").is_dir():
        shutil.rmtree(tree, ignore_errors=True)
        done = _run([_tool("dpkg-deb", "dpkg"), "-x", str(deb), str(tree)])
        if done.returncode != 0:
            shutil.rmtree(tree, ignore_errors=True)
            raise ImageError(f"dpkg-deb -x {deb.name} failed: {done.stderr.strip()[-200:]}")
    return tree


def _depends(module: Path) -> list[str]:
    """A ``.ko``'s ``depends=`` list (its ``.modinfo`` strings are NUL-separated ``key=value``)."""
    data = module.read_bytes()
    start = data.find(b"\0depends=")
    if start < 0:
        return []
    end = data.find(b"\0", start + 1)
    value = data[start + len(b"\0depends=") : end].decode("ascii", "replace")
    return [name for name in value.split(",") if name]


def module_order(index: dict[str, Path], wanted: tuple[str, ...] = MODULES) -> list[str]:
    """``wanted`` and everything they depend on, each after its dependencies.

    Args:
        index: module name (``-`` or ``_`` spelling) → its ``.ko`` file.

    Raises:
        ImageError: a module or a dependency is not in the kernel package, or the graph has a cycle.
    """
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        key = name.replace("-", "_")
        if key in order:
            return
        if key in visiting:
            raise ImageError(f"the kernel modules depend on each other in a cycle through {key}")
        path = index.get(key)
        if path is None:
            raise ImageError(f"the kernel package has no {key}.ko")
        visiting.add(key)
        for dependency in _depends(path):
            visit(dependency)
        visiting.discard(key)
        order.append(key)

    for name in wanted:
        visit(name)
    return order


def cpio_newc(files: list[tuple[str, int, bytes]]) -> bytes:
    """A newc archive of ``(path, mode, data)`` entries, owned by root, with the trailer."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate([*files, ("TRAILER!!!", 0, b"")], start=1):
        encoded = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        out += b"070701" + b"".join(b"%08X" % field for field in fields) + encoded
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def _busybox() -> bytes:
    path = _tool("busybox", "busybox-static")
    data = Path(path).read_bytes()
    if b"/ld-linux" in data[:4096]:  # a dynamic executable's PT_INTERP comes first
        raise ImageError(
            f"{path} is not statically linked", hints=["Install it: apt-get install busybox-static"]
        )
    return data


@dataclass(frozen=True, slots=True)
class Kernel:
    """The unpacked kernel package: ``vmlinuz``, its release, and its modules by name."""

    vmlinuz: Path
    release: str
    modules: dict[str, Path]


def kernel(cache: Path | None = None) -> Kernel:
    """The kernel package, fetched and unpacked into ``cache`` (default :func:`cache_dir`) on first use.

    Raises:
        ImageError: apt-get, dpkg-deb or the package is missing.
    """
    cache = cache or cache_dir()
    tree = _kernel_tree(cache, _kernel_deb(cache))
    kernels = sorted((tree / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise ImageError(f"the kernel package in {tree} has no boot/vmlinuz-*")
    release = kernels[-1].name.removeprefix("vmlinuz-")
    found = (tree / "lib" / "modules" / release / "kernel").rglob("*.ko")
    return Kernel(kernels[-1], release, {ko.name.removesuffix(".ko").replace("-", "_"): ko for ko in found})


def _entries(index: dict[str, Path]) -> list[tuple[str, int, bytes]]:
    order = module_order(index)
    entries: list[tuple[str, int, bytes]] = [
        (directory, 0o40755, b"") for directory in ("bin", "lib", "lib/modules", "dev", "proc", "sys")
    ]
    entries += [
        ("init", 0o100755, INIT.read_bytes()),
        ("bin/busybox", 0o100755, _busybox()),
        ("bin/sh", 0o120777, b"busybox"),
        ("lib/modules/order", 0o100644, "".join(f"{name}\n" for name in order).encode()),
    ]
    entries += [(f"lib/modules/{name}.ko", 0o100644, index[name].read_bytes()) for name in order]
    return entries


def cached_initrd(
    cache: Path, entries: list[tuple[str, int, bytes]], *, prefix: str = "initrd", salt: bytes = b""
) -> tuple[Path, bool]:
    """``entries`` as a gzip'd newc archive in ``cache``, named ``PREFIX-HASH.img`` by a hash of
    ``salt`` and the entries: written only when no file of that name exists (then older
    ``PREFIX-*.img`` files, built from inputs that changed since, are removed).

    Returns:
        The archive's path, and whether it was written now.
    """
    digest = hashlib.sha256(salt)
    for name, mode, data in entries:
        digest.update(b"%s %o %d\0" % (name.encode(), mode, len(data)))
        digest.update(data)
    initrd = cache / f"{prefix}-{digest.hexdigest()[:16]}.img"
    if initrd.exists():
        return initrd, False
    partial = initrd.with_name(f"{initrd.name}.{os.getpid()}.partial")
    partial.write_bytes(gzip.compress(cpio_newc(entries), compresslevel=6))
    partial.rename(initrd)
    for stale in cache.glob(f"{prefix}-*.img"):
        if stale != initrd:
            stale.unlink(missing_ok=True)
    return initrd, True


def build() -> GuestImage:
    """The cached image, built or rebuilt when the kernel package, busybox or ``/init`` changed.

    Raises:
        ImageError: a tool or the kernel package is missing (the hint says what to install).
    """
    cache = cache_dir()
    unpacked = kernel(cache)
    entries = _entries(unpacked.modules)
    initrd, built = cached_initrd(cache, entries, salt=unpacked.release.encode())
    return GuestImage(unpacked.vmlinuz, initrd, unpacked.release, built=built)
