"""kuasar.procmounts: the mount table as the kernel writes it, and which filesystem holds a path."""

from __future__ import annotations

from kuasar.procmounts import filesystem_of, parse_mounts

TABLE = (
    "/dev/vda / ext4 rw 0 0\n"
    "proc /proc proc rw 0 0\n"
    "tmpfs /run tmpfs rw 0 0\n"
    "tmpfs /mnt/with\\040space tmpfs rw 0 0\n"
    "overlay /run overlay rw 0 0\n"
)


def test_escapes_are_undone_and_the_topmost_mount_wins() -> None:
    mounts = parse_mounts(TABLE)
    assert mounts["/mnt/with space"] == "tmpfs"
    assert mounts["/run"] == "overlay"


def test_the_longest_target_holding_the_path_names_its_filesystem() -> None:
    mounts = parse_mounts(TABLE)
    assert filesystem_of("/proc/nope", mounts) == "proc"
    assert filesystem_of("/procfoo", mounts) == "ext4"  # a prefix of the name is not a parent
    assert filesystem_of("/mnt/with space/x", mounts) == "tmpfs"
    assert filesystem_of("/x", {}) is None
