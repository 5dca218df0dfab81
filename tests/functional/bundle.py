"""Test fixture helper: a busybox OCI bundle built from Debian's busybox-static (no image download).

``make_bundle(dir, argv)`` copies ``/bin/busybox`` into ``rootfs/bin`` with one symlink per applet,
writes a tiny ``/etc/passwd`` and ``/etc/group``, and takes ``config.json`` from ``runc spec``
(then sets the args, ``terminal`` and a writable root with ``json``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pytest

from kuasar.agent.containers import ContainerManager
from kuasar.agent.logs import LogStore
from tests.functional.cli_helpers import LocalSandbox, kuasarctl, local_sandbox

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")


def busybox_path() -> str | None:
    for path in BUSYBOX_CANDIDATES:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def runc_skip_reason() -> str | None:
    """Why container tests cannot run here, or ``None`` when they can."""
    if shutil.which("runc") is None:
        return "runc is not installed (apt-get install runc)"
    if os.geteuid() != 0:
        return "runc containers need root"
    if busybox_path() is None:
        return "busybox-static is not installed (apt-get install busybox-static)"
    return None


def make_bundle(
    directory: str, argv: Sequence[str], *, terminal: bool = False, env: Sequence[str] = ()
) -> str:
    """Build a bundle in ``directory`` (created) whose process runs ``argv``; return its path."""
    busybox = busybox_path()
    assert busybox is not None
    rootfs = os.path.join(directory, "rootfs")
    for sub in ("bin", "etc", "tmp", "proc", "dev", "sys", "root"):
        os.makedirs(os.path.join(rootfs, sub), exist_ok=True)
    shutil.copy2(busybox, os.path.join(rootfs, "bin", "busybox"))
    applets = subprocess.run([busybox, "--list"], capture_output=True, check=True, text=True).stdout.split()
    for applet in applets:
        link = os.path.join(rootfs, "bin", applet)
        if applet != "busybox" and not os.path.lexists(link):
            os.symlink("busybox", link)
    with open(os.path.join(rootfs, "etc", "passwd"), "w", encoding="ascii") as file:
        file.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    with open(os.path.join(rootfs, "etc", "group"), "w", encoding="ascii") as file:
        file.write("root:x:0:\nnogroup:x:65534:\n")
    config_path = os.path.join(directory, "config.json")
    if os.path.exists(config_path):  # runc spec refuses to overwrite
        os.unlink(config_path)
    subprocess.run(["runc", "spec", "--bundle", directory], check=True, capture_output=True)
    with open(config_path, encoding="utf-8") as file:
        config = json.load(file)
    config["process"]["args"] = list(argv)
    config["process"]["terminal"] = terminal
    config["process"]["env"] = ["PATH=/bin", *env]
    config["root"]["readonly"] = False
    with open(config_path, "w", encoding="utf-8") as file:
        json.dump(config, file, indent=2)
    return directory


def scratch_manager(directory: str, *, subreaper: bool = True) -> ContainerManager:
    """A container manager whose runc root, state and logs all live under ``directory``."""
    return ContainerManager(
        LogStore(os.path.join(directory, "logs")),
        root=os.path.join(directory, "runc"),
        state_dir=os.path.join(directory, "state"),
        subreaper=subreaper,
    )


@contextmanager
def container_sandbox(name: str = "pod-ctr") -> Iterator[LocalSandbox]:
    """A local sandbox whose agent serves the container API; skips when this machine cannot."""
    reason = runc_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    if importlib.util.find_spec("kuasar.agent.main") is None:
        pytest.skip("kuasar.agent.main does not exist yet: no local sandbox agent to serve containers")
    with local_sandbox(name) as sandbox:
        probe = kuasarctl("containers", "-d", sandbox.root, sandbox.id, "-q")
        if probe.returncode != 0 and b"the agent does not support this call" in probe.stderr:
            pytest.skip("the agent does not serve the container API (container_handlers not registered)")
        assert probe.returncode == 0, probe.stderr.decode()
        yield sandbox
