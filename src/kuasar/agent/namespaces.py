"""Linux namespaces for local sandboxes, through libc (Python 3.11 has no ``os.unshare``).

Layer contract: host side, used only by ``kuasar.sandbox.supervisor``. ``enter_pid_namespace`` runs
in the supervisor (its *next* child becomes PID 1 of a fresh PID namespace); ``guest_preexec`` runs
in that child between fork and exec: its own mount, UTS and IPC namespaces, mounts made private, and a
fresh ``/proc`` for the new PID namespace. Root only; callers check ``can_use_namespaces()`` first.
"""

from __future__ import annotations

import ctypes
import os

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
_MS_NOSUID = 0x2
_MS_NODEV = 0x4
_MS_NOEXEC = 0x8
_MS_REC = 0x4000
_MS_PRIVATE = 1 << 18

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def can_use_namespaces() -> bool:
    """True when running as root on Linux, where unshare(2) of these namespaces is allowed."""
    return os.geteuid() == 0 and os.path.exists("/proc/self/ns/pid")


def enter_pid_namespace() -> None:
    """Make this process's next child PID 1 of a new PID namespace."""
    _check(_libc.unshare(CLONE_NEWPID), "unshare(CLONE_NEWPID)")


def guest_preexec() -> None:
    """In the forked guest child: private mounts, own hostname and IPC, a /proc of its own."""
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC), "unshare(mount, uts, ipc)")
    _check(_libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None), "mount --make-rprivate /")
    _check(
        _libc.mount(b"proc", b"/proc", b"proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, None),
        "mount proc on /proc",
    )
