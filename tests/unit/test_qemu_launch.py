"""The QEMU sandbox's pure parts: QEMU's argv, the kernel command line, the module order, the cpio
archive, the KVM verdict cache and the console tail."""

from __future__ import annotations

import gzip
import os
import subprocess
from pathlib import Path

import pytest

from kuasar.errors import KuasarError
from kuasar.vmm import image, qemu
from kuasar.vmm.qemu_guest import console_tail

SPEC = qemu.VmSpec(
    name="vm-1",
    directory="/run/kuasar/vm-1",
    kernel="/c/vmlinuz",
    initrd="/c/initrd.img",
    python="/opt/venv/bin/python",
)


def _after(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, word in enumerate(argv) if word == flag]


def test_command_is_the_measured_shape_with_our_device() -> None:
    argv = qemu.command(SPEC, "/usr/bin/qemu-system-x86_64")
    assert argv[0] == "/usr/bin/qemu-system-x86_64"
    assert _after(argv, "-accel") == ["tcg"] and _after(argv, "-cpu") == ["max"]
    assert _after(argv, "-object") == ["memory-backend-memfd,id=mem,size=512M,share=on"]
    assert _after(argv, "-machine") == ["pc,memory-backend=mem"] and _after(argv, "-m") == ["512"]
    assert {"-nodefaults", "-no-user-config", "-no-reboot"} <= set(argv)
    assert _after(argv, "-serial") == ["file:/run/kuasar/vm-1/console.log"]
    assert _after(argv, "-qmp") == ["unix:/run/kuasar/vm-1/qmp.sock,server=on,wait=off"]
    assert _after(argv, "-chardev") == ["socket,id=vu,path=/run/kuasar/vm-1/vhost-user.sock"]
    assert _after(argv, "-device") == ["vhost-user-vsock-pci,chardev=vu"]
    (virtfs,) = _after(argv, "-virtfs")
    assert "path=/," in virtfs and "readonly=on" in virtfs and "mount_tag=hostroot" in virtfs


def test_kvm_and_a_kernel_vsock_device_change_only_their_flags() -> None:
    argv = qemu.command(SPEC.replace(accel="kvm", guest_cid=7, memory_mib=1024, cpus=2))
    assert _after(argv, "-accel") == ["kvm"] and _after(argv, "-cpu") == ["host"]
    assert _after(argv, "-device") == ["vhost-vsock-pci,guest-cid=7"] and "-chardev" not in argv
    assert _after(argv, "-m") == ["1024"] and _after(argv, "-smp") == ["2"]


def test_kernel_cmdline_carries_what_init_and_the_agent_read() -> None:
    words = qemu.kernel_cmdline(SPEC).split()
    assert words[:3] == ["console=ttyS0", "panic=-1", "quiet"]
    assert "kuasar.python=/opt/venv/bin/python" in words and "kuasar.hostname=vm-1" in words
    assert "task.debug" in words and "task.log_level=info" in words
    assert "task.debug" not in qemu.kernel_cmdline(SPEC.replace(debug_console=False)).split()


@pytest.mark.parametrize("python", ["/opt/my venv/bin/python", "venv/bin/python", "/a\tb"])
def test_an_interpreter_path_the_kernel_would_split_is_refused(python: str) -> None:
    with pytest.raises(KuasarError, match="cannot go on a kernel command line"):
        qemu.kernel_cmdline(SPEC.replace(python=python))


def test_a_kernel_cmdline_over_the_limit_is_refused() -> None:
    with pytest.raises(KuasarError, match="at most 2047"):
        qemu.kernel_cmdline(SPEC.replace(python="/" + "p" * 2100))


def _module(directory: Path, name: str, depends: str) -> Path:
    path = directory / f"{name}.ko"
    path.write_bytes(b"\x7fELF...\0license=GPL\0depends=" + depends.encode() + b"\0vermagic=6.1\0")
    return path


def test_modules_come_after_their_dependencies(tmp_path: Path) -> None:
    index = {
        "9p": _module(tmp_path, "9p", "9pnet,netfs"),
        "9pnet": _module(tmp_path, "9pnet", ""),
        "netfs": _module(tmp_path, "netfs", "fscache"),
        "fscache": _module(tmp_path, "fscache", ""),
        "9pnet_virtio": _module(tmp_path, "9pnet_virtio", "9pnet,virtio_ring,virtio"),
        "virtio": _module(tmp_path, "virtio", ""),
        "virtio_ring": _module(tmp_path, "virtio_ring", ""),
    }
    order = image.module_order(index, ("9p", "9pnet_virtio"))
    assert sorted(order) == sorted(index)
    for name, path in index.items():
        for dependency in image._depends(path):
            assert order.index(dependency) < order.index(name), (dependency, name)


def test_a_missing_module_or_a_cycle_is_an_image_error(tmp_path: Path) -> None:
    with pytest.raises(image.ImageError, match=r"has no fscache\.ko"):
        image.module_order({"netfs": _module(tmp_path, "netfs", "fscache")}, ("netfs",))
    cycle = {"a": _module(tmp_path, "a", "b"), "b": _module(tmp_path, "b", "a")}
    with pytest.raises(image.ImageError, match="cycle"):
        image.module_order(cycle, ("a",))


def test_module_names_match_with_dash_or_underscore(tmp_path: Path) -> None:
    index = {"virtio_pci": _module(tmp_path, "virtio_pci", "virtio-pci-modern-dev")}
    index["virtio_pci_modern_dev"] = _module(tmp_path, "virtio_pci_modern_dev", "")
    assert image.module_order(index, ("virtio_pci",)) == ["virtio_pci_modern_dev", "virtio_pci"]


def test_the_cpio_archive_is_what_cpio_itself_lists(tmp_path: Path) -> None:
    entries = [
        ("bin", 0o40755, b""),
        ("bin/busybox", 0o100755, b"\x7fELF" + bytes(range(256)) * 3),
        ("bin/sh", 0o120777, b"busybox"),
        ("init", 0o100755, b"#!/bin/sh\n"),
    ]
    archive = tmp_path / "a.cpio"
    archive.write_bytes(image.cpio_newc(entries))
    if not os.path.exists("/usr/bin/cpio"):
        pytest.skip("cpio is not installed (apt-get install cpio)")
    out = tmp_path / "out"
    out.mkdir()
    done = subprocess.run(
        ["cpio", "-idm", "--quiet", "-F", str(archive)], cwd=out, capture_output=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert (out / "bin" / "busybox").read_bytes() == entries[1][2]
    assert os.readlink(out / "bin" / "sh") == "busybox"
    assert os.access(out / "init", os.X_OK)


def test_the_build_is_cached_by_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake kernel package tree in the cache: built once, reused, rebuilt when /init changes."""
    if not os.path.exists("/bin/busybox") or b"/ld-linux" in Path("/bin/busybox").read_bytes()[:4096]:
        pytest.skip("busybox-static is not installed (apt-get install busybox-static)")
    deb = tmp_path / "linux-image-6.1.0-9-amd64_6.1-1_amd64.deb"
    deb.write_bytes(b"not read: its unpacked tree exists")
    tree = tmp_path / f"{deb.name}.d"
    (tree / "boot").mkdir(parents=True)
    (tree / "boot" / "vmlinuz-6.1.0-9-amd64").write_bytes(b"kernel")
    kernel = tree / "lib" / "modules" / "6.1.0-9-amd64" / "kernel"
    kernel.mkdir(parents=True)
    for name in image.MODULES:
        _module(kernel, name, "")
    monkeypatch.setenv("KUASAR_VM_CACHE", str(tmp_path))
    monkeypatch.delenv("KUASAR_VM_KERNEL_DEB", raising=False)
    first = image.build()
    assert first.built and first.release == "6.1.0-9-amd64"
    assert image.build() == first.__class__(first.kernel, first.initrd, first.release, built=False)
    listing = gzip.decompress(first.initrd.read_bytes())
    assert b"lib/modules/order" in listing and b"vsock_diag" in listing
    _module(kernel, "vsock_diag", "vsock")  # an input changed: its dependency is now missing
    with pytest.raises(image.ImageError, match=r"no vsock\.ko"):
        image.build()


def test_a_named_kernel_package_that_does_not_exist_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUASAR_VM_CACHE", str(tmp_path))
    monkeypatch.setenv("KUASAR_VM_KERNEL_DEB", str(tmp_path / "nope.deb"))
    with pytest.raises(image.ImageError, match=r"nope\.deb: no such file"):
        image.build()


def test_kvm_verdicts_are_remembered_per_guest_kernel(tmp_path: Path) -> None:
    assert qemu.kvm_verdict(tmp_path, "6.1.0-57-amd64") is None
    qemu.record_kvm_verdict(tmp_path, "6.1.0-57-amd64", "fails: MSR 0x10a")
    qemu.record_kvm_verdict(tmp_path, "6.1.0-58-amd64", "ok")
    assert qemu.kvm_verdict(tmp_path, "6.1.0-57-amd64") == "fails: MSR 0x10a"
    assert qemu.kvm_verdict(tmp_path, "6.1.0-58-amd64") == "ok"
    (tmp_path / "kvm-verdict.json").write_text("[not a mapping")
    assert qemu.kvm_verdict(tmp_path, "6.1.0-57-amd64") is None


def test_console_tail_is_escaped_and_bounded(tmp_path: Path) -> None:
    lines = [f"line {n}" for n in range(40)] + ["evil \x1b[2J end"]
    (tmp_path / "console.log").write_text("\n".join(lines) + "\n")
    tail = console_tail(str(tmp_path), lines=5)
    assert tail[0] == "console.log:" and len(tail) == 6
    assert tail[-1] == "  evil \\x1b[2J end" and tail[1] == "  line 36"
    empty = ["console.log is empty: the guest kernel printed nothing yet"]
    assert console_tail(str(tmp_path / "none")) == empty
    (tmp_path / "console.log").write_text("\n \n")
    assert console_tail(str(tmp_path)) == empty
