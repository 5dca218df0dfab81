"""QEMU sandboxes that go wrong: a guest that never answers, one that hangs at stop, a QEMU that dies."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kuasar.config import DEFAULT_LIMITS
from kuasar.vmm import image
from kuasar.vmm.qemu import VmSpec
from kuasar.vmm.qemu_guest import BootError, QemuGuest
from kuasar.vmm.qmp import Qmp
from tests.functional.cli_helpers import short_tmpdir
from tests.functional.tmux_helpers import wait_for
from tests.vm.conftest import kill_supervisor, process_gone, start_qemu_sandbox, stop_qemu_sandbox

from .guest_image import Unavailable
from .qemu_vm import qemu_binary

pytestmark = [pytest.mark.vm, pytest.mark.timeout(300)]

RUN_SLOW = ("--name", "slow-1", "--boot-timeout", "2")
NEVER_ANSWERS = str(Path(__file__).with_name("never_answers.sh"))


def _image() -> image.GuestImage:
    try:
        qemu_binary()
        return image.build()
    except (Unavailable, image.ImageError) as exc:
        pytest.skip(f"no guest VM: {exc}")


@pytest.mark.asyncio
async def test_a_guest_that_never_answers_is_a_boot_timeout_with_the_console_tail() -> None:
    guest_image = _image()
    directory = short_tmpdir("kqf")
    spec = VmSpec(
        name="mute",
        directory=directory,
        kernel=str(guest_image.kernel),
        initrd=str(guest_image.initrd),
        python=NEVER_ANSWERS,
    )
    guest = QemuGuest(spec, accel="tcg", limits=DEFAULT_LIMITS.replace(vm_boot_timeout=25))
    started = time.monotonic()
    try:
        with pytest.raises(BootError) as caught:
            await guest.start()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    assert 25 <= time.monotonic() - started < 60
    assert str(caught.value) == "the guest did not answer on vsock port 1024 within 25 s"
    hints = "\n".join(caught.value.hints)
    assert hints.startswith("console.log:") and "never-answers: PID 1 up, serving nothing" in hints, hints
    assert "--boot-timeout" in caught.value.hints[-1]
    assert guest.qemu is None and guest.device is None  # both killed and reaped on the way out


def test_stop_of_a_hung_guest_is_forced_after_the_grace() -> None:
    sandbox = start_qemu_sandbox("hung-1")
    try:
        with open(os.path.join(sandbox.directory, "sandbox.json"), encoding="utf-8") as file:
            state = json.load(file)

        async def pause() -> None:  # the guest's CPUs stop: ctrl-alt-delete can never be handled
            async with await Qmp.connect(os.path.join(sandbox.directory, "qmp.sock")) as qmp:
                await qmp.execute("stop")
                assert (await qmp.execute("query-status"))["status"] == "paused"

        asyncio.run(pause())
        start = time.monotonic()
        done = sandbox.ctl("sandbox", "stop", "{id}")
        took = time.monotonic() - start
        assert done.returncode == 0, done.stderr
        grace = DEFAULT_LIMITS.vm_poweroff_grace
        assert grace <= took < grace + DEFAULT_LIMITS.sandbox_stop_timeout, took
        assert not os.path.exists(sandbox.directory)
        for pid in (state["supervisor_pid"], state["agent_pid"], state["device_pid"]):
            assert process_gone(pid), f"PID {pid} is still running"
    finally:
        stop_qemu_sandbox(sandbox)


def test_a_crashed_qemu_shows_in_ps_and_stop_cleans_up() -> None:
    sandbox = start_qemu_sandbox("crash-1")
    try:
        with open(os.path.join(sandbox.directory, "sandbox.json"), encoding="utf-8") as file:
            state = json.load(file)
        os.kill(state["agent_pid"], signal.SIGKILL)  # QEMU

        def row() -> dict[str, object]:
            (only,) = json.loads(sandbox.ctl("ps", "-o", "json").stdout)
            return dict(only)

        assert wait_for(lambda: row()["state"] == "vm-exited", timeout=30), row()
        assert row()["reason"] == "QEMU exited with status 137 (killed by SIGKILL)"
        assert wait_for(lambda: process_gone(state["device_pid"]), timeout=30)  # the device noticed
        done = sandbox.ctl("exec", "-t", "{id}", "true")
        assert done.returncode == 125 and b"Error:" in done.stderr
        assert sandbox.ctl("sandbox", "stop", "{id}").returncode == 0
        assert not os.path.exists(sandbox.directory) and process_gone(state["supervisor_pid"])
    finally:
        stop_qemu_sandbox(sandbox)


@contextlib.contextmanager
def _booting(name: str) -> Iterator[tuple[subprocess.Popen[bytes], str, str]]:
    """``sandbox run --vmm qemu`` in the background, yielded once QEMU runs (its console exists);
    afterwards nothing of it is left, whatever the test did."""
    _image()
    root = short_tmpdir("kqe")
    directory = os.path.join(root, name)
    run = subprocess.Popen(
        [sys.executable, "-m", "kuasar.ctl", "sandbox", "run", "-d", root, "--vmm", "qemu", "--name", name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert wait_for(lambda: os.path.exists(os.path.join(directory, "console.log")), timeout=60)
        yield run, root, directory
    finally:
        run.kill()
        run.wait()
        kill_supervisor(directory)
        shutil.rmtree(root, ignore_errors=True)


def _qemu_of(name: str) -> list[str]:
    found = subprocess.run(
        ["pgrep", "-f", f"-name kuasar-{name}"], capture_output=True, text=True, check=False
    )
    return found.stdout.split()


def test_ctrl_c_of_sandbox_run_while_it_boots_leaves_nothing() -> None:
    with _booting("early-1") as (run, _, directory):
        run.send_signal(signal.SIGINT)
        _, err = run.communicate(timeout=60)
        assert run.returncode == 130, err
        assert not os.path.exists(directory)
        assert wait_for(lambda: not _qemu_of("early-1"), timeout=30), _qemu_of("early-1")


def test_sandbox_stop_while_it_boots_ends_the_boot() -> None:
    with _booting("early-2") as (run, root, directory):
        env = {**os.environ, "KUASAR_SOCKET_DIR": root}
        argv = [sys.executable, "-m", "kuasar.ctl", "sandbox", "stop", "early-2"]
        stop = subprocess.run(argv, capture_output=True, env=env, timeout=60, check=False)
        assert stop.returncode == 0, stop.stderr
        _, err = run.communicate(timeout=60)
        assert run.returncode == 125
        said = err.decode().splitlines()[0]
        assert said == "Error: QEMU sandbox early-2 failed to start: stopped during start-up"
        assert not os.path.exists(directory)
        assert wait_for(lambda: not _qemu_of("early-2"), timeout=30), _qemu_of("early-2")


def test_sandbox_run_past_its_boot_timeout_says_so_with_the_console_tail() -> None:
    """Through the CLI: the supervisor's error and its hint lines reach the operator, and nothing
    is left. 2 s always run out (TCG needs ~10 s to answer) and before the kernel printed anything
    (~6 s): the console tail itself is tested above, with a guest that never answers."""
    _image()
    root = short_tmpdir("kqt")
    try:
        done = subprocess.run(
            [*(sys.executable, "-m", "kuasar.ctl", "sandbox", "run", "-d", root, "--vmm", "qemu"), *RUN_SLOW],
            capture_output=True,
            timeout=120,
            check=False,
        )
        lines = done.stderr.decode().splitlines()
        assert done.returncode == 125, lines
        said = "the guest did not answer on vsock port 1024 within 2 s"
        assert lines[0] == f"Error: QEMU sandbox slow-1 failed to start: {said}"
        assert lines[1] == "console.log is empty: the guest kernel printed nothing yet", lines
        assert lines[-1] == "A slower host needs --boot-timeout."
        assert os.listdir(root) == [] and not _qemu_of("slow-1")
    finally:
        kill_supervisor(os.path.join(root, "slow-1"))
        shutil.rmtree(root, ignore_errors=True)
