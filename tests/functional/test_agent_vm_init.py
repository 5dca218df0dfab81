"""``kuasar-agent`` as PID 1 with its VM init duties, in fresh PID and mount namespaces (root only).

A helper (run as its own process, so pytest's threads do not matter) unshares a PID and a mount
namespace, makes every mount private, forks, and in the child — PID 1 there — mounts a fresh
``/proc``, masks ``/proc/sys`` with an empty tmpfs (the vm.* sysctls are global: the host's must not
change) and execs ``python -m kuasar.agent`` without ``--isolate``, so the agent does its early init
as it would in a VM. The helper reports the child's PID and, at the end, its wait status: a
``reboot(POWER_OFF)`` in a child PID namespace makes the kernel kill the namespace's init, and its
parent sees it die of SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from kuasar.address import parse_address
from kuasar.agent.early_init import vm_environment
from kuasar.guest import Guest
from kuasar.procmounts import parse_mounts

GUARD = 30.0

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/proc/self/ns/pid"), reason="needs root and PID namespaces"
)

HELPER = r"""
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
def check(result, what):
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
try:
    check(libc.unshare(0x00020000 | 0x20000000), "unshare(CLONE_NEWNS|CLONE_NEWPID)")
    check(libc.mount(b"none", b"/", None, 0x4000 | (1 << 18), None), "mount --make-rprivate /")
except OSError as exc:
    print(json.dumps({"unsupported": str(exc)}), flush=True)
    sys.exit(3)
child = os.fork()
if child == 0:
    try:
        check(libc.mount(b"proc", b"/proc", b"proc", 0, None), "mount proc")
        check(libc.mount(b"none", b"/proc/sys", b"tmpfs", 0, b"mode=0555"), "mask /proc/sys")
        os.execv(sys.executable, [sys.executable, "-m", "kuasar.agent", *sys.argv[1:]])
    finally:
        os._exit(127)
print(json.dumps({"pid": child}), flush=True)
_, status = os.waitpid(child, 0)
print(json.dumps({"status": os.waitstatus_to_exitcode(status)}), flush=True)
"""

#: Started inside, detached (its own session): records the SIGTERM of the power-off sequence.
RECORDER = r"""
import os, signal, sys
path = sys.argv[1]
def term(signum, frame):
    with open(path, "w") as file:
        file.write("TERM")
    os._exit(0)
signal.signal(signal.SIGTERM, term)
open(path + ".ready", "w").close()
while True:
    signal.pause()
"""


@dataclass
class Pid1Agent:
    helper: subprocess.Popen[bytes]
    pid: int  # the agent, as the host sees it
    directory: str

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def log(self) -> str:
        with open(self.path("agent.log"), encoding="utf-8", errors="replace") as file:
            return file.read()

    def wait_status(self) -> int:
        """The agent's wait status as ``os.waitstatus_to_exitcode`` gives it (-N: signal N)."""
        assert self.helper.stdout is not None
        out, _ = self.helper.communicate(timeout=GUARD)
        return int(json.loads(out.decode().splitlines()[-1])["status"])


def _read_line(fd: int, deadline: float) -> bytes:
    line = bytearray()
    while not line.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 1)
        if not chunk:
            break
        line += chunk
    return bytes(line)


@pytest.fixture
def directory() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="ksrpid1", dir="/tmp")
    with open(os.path.join(path, "cmdline"), "w", encoding="utf-8") as file:
        file.write("console=ttyS0 task.log_level=debug\n")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@contextmanager
def started(directory: str, *flags: str, ready: bool = True) -> Iterator[Pid1Agent]:
    """The agent as PID 1 of new namespaces, with ``flags`` (``{dir}`` is ``directory``); with
    ``ready``, once it wrote its ``--ready-fd`` line."""
    read_fd, write_fd = os.pipe()
    argv = [sys.executable, "-c", HELPER, "--cmdline", f"{directory}/cmdline"]
    argv += ["--state-dir", f"{directory}/state", "--ready-fd", str(write_fd)]
    argv += [flag.replace("{dir}", directory) for flag in flags]
    with open(os.path.join(directory, "agent.log"), "wb") as log:
        helper = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, pass_fds=(write_fd,))
    os.close(write_fd)
    agent: Pid1Agent | None = None
    try:
        assert helper.stdout is not None
        first = json.loads(_read_line(helper.stdout.fileno(), time.monotonic() + GUARD) or b"{}")
        if "unsupported" in first:
            pytest.skip(f"cannot make PID and mount namespaces here: {first['unsupported']}")
        agent = Pid1Agent(helper, int(first["pid"]), directory)
        if ready:
            assert _read_line(read_fd, time.monotonic() + GUARD) == b"ready\n", agent.log()
        yield agent
    finally:
        os.close(read_fd)
        if agent is not None and helper.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(agent.pid, signal.SIGKILL)  # the namespace's init: all inside die with it
        if helper.returncode is None:
            helper.communicate(timeout=GUARD)


API = ("--api", "unix://{dir}/api.sock")


async def _until(predicate: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``predicate`` until it is true (bounded by GUARD)."""
    deadline = time.monotonic() + GUARD
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def _inside(agent: Pid1Agent) -> None:
    async with await Guest.connect(
        parse_address(f"unix://{agent.path('api.sock')}"), probe_timeout=10.0
    ) as guest:
        mounts = (await guest.run(["cat", "/proc/self/mounts"], check=True)).stdout.decode()
        mounted = parse_mounts(mounts)
        assert (mounted["/run"], mounted["/dev/pts"], mounted["/sys/fs/cgroup"]) == (
            "tmpfs",
            "devpts",
            "cgroup2",
        )
        devpts = [line for line in mounts.splitlines() if line.split()[1:3] == ["/dev/pts", "devpts"]][-1]
        assert "ptmxmode=666" in devpts, devpts

        who = await guest.run(
            ["sh", "-c", 'tr "\\0" " " </proc/1/cmdline; echo; echo "$PPID $PATH"'], check=True
        )
        init_cmdline, parent_and_path = who.stdout.decode().splitlines()
        assert "kuasar.agent" in init_cmdline and "--isolate" not in init_cmdline
        assert parent_and_path == f"1 {vm_environment(os.path.dirname(sys.executable))['PATH']}"

        # exec -it's path: the agent opens a PTY from /dev/ptmx, and so can anyone inside
        openpty = f"{sys.executable} -c 'import os; print(os.ttyname(os.openpty()[1]))'"
        async with guest.exec(["sh", "-c", f"tty; {openpty}"], tty=True) as process:
            out = bytearray()
            while (chunk := await process.read()) is not None:
                out += chunk[1]
            result = process.result()
        assert result.exit_status == 0, out
        assert out.count(b"/dev/pts/") == 2, out

        # an orphan (its parent sh exits at once) is reparented to PID 1 and reaped there
        spawned = await guest.run(["sh", "-c", 'sh -c "exit 0" & echo $!'], check=True)
        orphan = int(spawned.stdout)

        async def reaped() -> bool:
            return (await guest.run(["test", "-e", f"/proc/{orphan}"])).exit_status == 1

        await _until(reaped, f"orphan {orphan} to be reaped")

        recorder = agent.path("recorder.py")
        with open(recorder, "w", encoding="utf-8") as file:
            file.write(RECORDER)
        ready = agent.path("term.ready")
        detached = f"setsid {sys.executable} {recorder} {agent.path('term')} </dev/null >/dev/null 2>&1 &"
        # sh waits (bounded) until the recorder has its own session: the agent kills sh's session
        wait = f"for i in $(seq 600); do [ -e {ready} ] && exit 0; sleep 0.05; done; exit 1"
        await guest.run(["sh", "-c", f"{detached} {wait}"], check=True)


@pytest.mark.asyncio
async def test_pid1_early_init_serves_reaps_and_powers_off(directory: str) -> None:
    with started(directory, *API) as agent:
        await _inside(agent)
        os.kill(agent.pid, signal.SIGINT)  # what ctrl-alt-delete becomes once CAD is off
        status = await asyncio.to_thread(agent.wait_status)
        log = agent.log()
    assert status == -signal.SIGINT, log  # reboot(POWER_OFF) in a child PID namespace
    assert "mounted /dev/pts /run /sys/fs/cgroup;" in log, log
    assert "powering off" in log and "Traceback" not in log, log
    with open(os.path.join(directory, "term"), encoding="utf-8") as file:
        assert file.read() == "TERM"  # kill(-1, SIGTERM) reached the detached process


@pytest.mark.asyncio
async def test_sigterm_powers_off_too(directory: str) -> None:
    with started(directory, *API) as agent:
        async with await Guest.connect(parse_address(f"unix://{agent.path('api.sock')}"), probe_timeout=10.0):
            pass
        os.kill(agent.pid, signal.SIGTERM)
        status = await asyncio.to_thread(agent.wait_status)
    assert status == -signal.SIGINT, agent.log()


def test_a_failed_start_powers_off_instead_of_exiting(directory: str) -> None:
    with open(os.path.join(directory, "blocker"), "w", encoding="utf-8") as file:
        file.write("not a socket\n")
    with started(directory, "--api", "unix://{dir}/blocker", ready=False) as agent:
        status = agent.wait_status()
    log = agent.log()
    assert status == -signal.SIGINT, log  # an exit of PID 1 would have been a kernel panic
    assert "is not a socket" in log and "powering off" in log and "Traceback" not in log, log


def test_bad_flags_power_off_instead_of_exiting(directory: str) -> None:
    with started(directory, "--no-such-flag", ready=False) as agent:
        status = agent.wait_status()
    log = agent.log()
    assert status == -signal.SIGINT, log
    assert "unrecognized arguments: --no-such-flag" in log and "powering off" in log, log
