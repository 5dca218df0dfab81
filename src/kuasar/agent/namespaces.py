"""``kuasar-agent --isolate``: become PID 1 of fresh PID, mount, UTS and IPC namespaces.

Layer contract: agent side, stdlib plus libc through ctypes (Python 3.11 has no ``os.unshare``).
``isolate()`` must run before any thread exists (a process whose PID namespace for children differs
from its own cannot create threads): it unshares the namespaces and forks. The child returns, as
PID 1, with private mounts and a fresh ``/proc``; the parent stays on the host side, forwards
SIGTERM/SIGINT/SIGHUP to the child and exits with its status. Root only (``can_isolate()``).
"""

from __future__ import annotations

import ctypes
import os
import signal
from typing import NoReturn

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


def can_isolate() -> bool:
    """True when running as root on Linux, where unshare(2) of these namespaces is allowed."""
    return os.geteuid() == 0 and os.path.exists("/proc/self/ns/pid")


def _forward_and_wait(child: int) -> NoReturn:
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda received, _frame: os.kill(child, received))
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
    code = os.waitstatus_to_exitcode(status)
    os._exit(128 - code if code < 0 else code)


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when its parent dies (a VM dies with its VMM)."""
    _check(_libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")


def isolate() -> None:
    """Continue as PID 1 of new namespaces (in the forked child); the caller's process becomes a
    waiting stand-in that never returns."""
    _check(_libc.unshare(CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC), "unshare")
    child = os.fork()
    if child != 0:
        _forward_and_wait(child)
    die_with_parent()  # the stand-in is only ever SIGKILLed when the whole sandbox must go
    _check(_libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None), "mount --make-rprivate /")
    _check(
        _libc.mount(b"proc", b"/proc", b"proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, None),
        "mount proc on /proc",
    )
