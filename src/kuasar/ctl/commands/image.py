"""``kuasarctl image build``: build (or check) the guest image QEMU sandboxes boot.

Layer contract: ``kuasar.ctl`` only; delegates to ``kuasar.sandbox.local`` (synchronous). The image
is built on the first ``sandbox run --vmm qemu`` anyway; this does it ahead (e.g. in a setup step)
and prints where it is.
"""

from __future__ import annotations

import argparse
from typing import Any

from kuasar._text import printable
from kuasar.ctl import output
from kuasar.ctl.commands import summary


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "image",
        help=summary("image"),
        description="The guest image of QEMU sandboxes: Debian's kernel package (apt-get download, "
        "cached) and an initramfs with busybox and the modules; the guest's userland is the host's "
        "root, read-only over 9p.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True, help="build")
    build_parser: argparse.ArgumentParser = actions.add_parser(
        "build",
        help="build the image now (a no-op when it is up to date)",
        description="Build the image into the cache ($KUASAR_VM_CACHE, default ~/.cache/kuasar-py/vm) "
        "unless it is up to date; print the kernel, the initramfs and the kernel release.",
        epilog="examples:\n  kuasarctl image build\n"
        "  KUASAR_VM_KERNEL_DEB=./linux-image.deb kuasarctl image build",
    )
    build_parser.add_argument("-o", "--output", choices=("text", "json"), default="text", help="format")
    build_parser.set_defaults(func=build)


def build(args: argparse.Namespace) -> int:
    import json

    from kuasar.sandbox.local import build_image

    image = build_image()
    record: dict[str, str | bool] = {
        "kernel": str(image.kernel),
        "initrd": str(image.initrd),
        "release": image.release,
        "built": image.built,
    }
    if args.output == "json":
        output.write_stdout(json.dumps(record) + "\n")
        return 0
    state = "built" if image.built else "up to date"
    output.write_stdout(
        f"Kernel:    {printable(str(image.kernel))}\nInitramfs: {printable(str(image.initrd))} ({state})\n"
        f"Release:   {image.release}\n"
    )
    return 0
