"""The agent's PID-1 duties as pure data and decisions: the mount plan, the environment, and the
power-off sequence's next step (no mount, no signal, no reboot here)."""

from __future__ import annotations

import os
import posixpath

import pytest

from kuasar.agent import early_init
from kuasar.agent.early_init import (
    LINKS,
    MOUNTS,
    SETTINGS,
    SYSTEM_PATH,
    Step,
    is_vm_init,
    other_processes,
    pending_mounts,
    shutdown_step,
    vm_environment,
)
from kuasar.procmounts import parse_mounts

#: This host's view inside a fresh mount namespace (a Firecracker guest: /run on the root disk).
HOST_MOUNTS = """\
/dev/vda / ext4 rw,relatime 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
sysfs /sys sysfs rw,relatime 0 0
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
devtmpfs /dev devtmpfs rw,relatime,mode=755 0 0
tmpfs /dev/shm tmpfs rw,relatime 0 0
devpts /dev/pts devpts rw,relatime,mode=600,ptmxmode=000 0 0
"""


def targets(plan: list[early_init.Mount]) -> list[str]:
    return [m.target for m in plan]


def test_proc_comes_first_and_only_it_is_fatal() -> None:
    assert MOUNTS[0].target == "/proc" and MOUNTS[0].fstype == "proc"
    assert [m.target for m in MOUNTS if m.required] == ["/proc"]


def test_every_mountpoint_lies_on_a_filesystem_mounted_before_it() -> None:
    planned = {m.target for m in MOUNTS}
    for index, mount in enumerate(MOUNTS):
        under = {t for t in planned if mount.target.startswith(t + "/")}
        assert under <= set(targets(list(MOUNTS[:index]))), mount.target
    order = targets(list(MOUNTS))
    assert order.index("/dev") < order.index("/dev/pts") and order.index("/sys") < order.index(
        "/sys/fs/cgroup"
    )


def test_the_plan_covers_what_vmm_task_mounts() -> None:
    assert {(m.target, m.fstype) for m in MOUNTS} == {
        ("/proc", "proc"),
        ("/sys", "sysfs"),
        ("/dev", "devtmpfs"),
        ("/dev/shm", "tmpfs"),
        ("/dev/pts", "devpts"),
        ("/run", "tmpfs"),
        ("/sys/fs/cgroup", "cgroup2"),
    }


def test_devpts_is_always_a_new_instance_with_a_usable_ptmx() -> None:
    (devpts,) = (m for m in MOUNTS if m.fstype == "devpts")
    options = devpts.data.split(",")
    assert not devpts.reuse
    assert "newinstance" in options and "ptmxmode=0666" in options
    assert ("/dev/ptmx", "pts/ptmx") in LINKS


def test_nothing_mounted_means_everything_to_do() -> None:
    assert pending_mounts(MOUNTS, {}) == list(MOUNTS)


def test_what_is_already_there_is_kept_but_devpts_and_other_types_are_mounted() -> None:
    todo = targets(pending_mounts(MOUNTS, parse_mounts(HOST_MOUNTS)))
    # /run is a directory of the root disk, /sys/fs/cgroup a v1 tmpfs: both get ours
    assert todo == ["/dev/pts", "/run", "/sys/fs/cgroup"]


def test_after_a_complete_early_init_only_devpts_would_be_mounted_again() -> None:
    everything = "".join(f"{m.source} {m.target} {m.fstype} rw 0 0\n" for m in MOUNTS)
    assert targets(pending_mounts(MOUNTS, parse_mounts(everything))) == ["/dev/pts"]


def test_the_topmost_mount_counts_and_escaped_paths_are_decoded() -> None:
    mounted = parse_mounts(
        "tmpfs /run tmpfs rw 0 0\n"
        "/dev/vdb /run ext4 rw 0 0\n"
        "tmpfs /mnt/a\\040b\\134c tmpfs rw 0 0\n"
        "garbage\n\n"
    )
    assert mounted == {"/run": "ext4", "/mnt/a b\\c": "tmpfs"}
    assert targets(pending_mounts(MOUNTS, mounted)) == targets(list(MOUNTS))


def test_settings_are_vmm_tasks_as_absolute_files() -> None:
    assert dict(SETTINGS)["/proc/sys/vm/overcommit_memory"] == "1"
    assert all(posixpath.isabs(path) for path, _ in SETTINGS)
    assert all(posixpath.isabs(path) for path, _ in LINKS)


@pytest.mark.parametrize(
    ("pid", "isolate", "expected"),
    [(1, False, True), (1, True, False), (2, False, False), (os.getpid(), False, os.getpid() == 1)],
)
def test_only_pid_1_without_isolate_is_a_vm_init(pid: int, isolate: bool, expected: bool) -> None:
    assert is_vm_init(pid, isolate=isolate) is expected


def test_environment_is_vmm_tasks_with_our_own_bin_last() -> None:
    env = vm_environment("/work/main/.venv/bin")
    assert env == {
        "PATH": "/bin:/sbin:/usr/bin:/usr/sbin:/work/main/.venv/bin",
        "XDG_RUNTIME_DIR": "/run",
    }


@pytest.mark.parametrize("own_bin", ["/usr/bin", ""])
def test_a_python_in_a_system_directory_adds_nothing(own_bin: str) -> None:
    assert vm_environment(own_bin)["PATH"] == SYSTEM_PATH


@pytest.mark.parametrize(
    ("remaining", "elapsed", "killed", "step"),
    [
        (0, 0.0, False, Step.POWER_OFF),  # everyone left at once
        (0, 99.0, True, Step.POWER_OFF),
        (3, 0.0, False, Step.WAIT),
        (3, 2.99, False, Step.WAIT),
        (3, 3.0, False, Step.SIGKILL),  # the grace is over
        (3, 30.0, False, Step.SIGKILL),  # however late we look, SIGKILL comes before power-off
        (1, 3.5, True, Step.WAIT),  # killed, not yet gone
        (1, 5.0, True, Step.POWER_OFF),  # stuck in the kernel: power off anyway
    ],
)
def test_shutdown_step(remaining: int, elapsed: float, killed: bool, step: Step) -> None:
    assert shutdown_step(remaining, elapsed, killed=killed, grace=3.0, kill_wait=2.0) is step


def test_shutdown_is_bounded_by_default() -> None:
    bound = early_init.TERM_GRACE + early_init.KILL_WAIT
    assert 0 < bound <= 10
    assert shutdown_step(1, bound, killed=True) is Step.POWER_OFF


def test_other_processes_are_live_user_processes_but_us() -> None:
    others = other_processes(os.getpid())
    assert os.getpid() not in others
    assert os.getppid() in others or os.getppid() == 0
    try:
        with open("/proc/2/stat", "rb") as file:
            kthreadd = b"(kthreadd)" in file.read()  # only in the initial PID namespace
    except FileNotFoundError:
        kthreadd = False
    assert not kthreadd or 2 not in others
