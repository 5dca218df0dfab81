"""``sandbox run --vmm qemu`` and ``image build`` when something is missing (no VM boots here), and
the QMP client against a monitor written from QMP's wire facts."""

from __future__ import annotations

import asyncio
import json
import os
import shutil

import pytest

from kuasar.vmm.qmp import Qmp, QmpError, ctrl_alt_delete
from tests.functional.cli_helpers import kuasarctl, short_tmpdir

QEMU = shutil.which("qemu-system-x86_64")


def _env(**changes: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "KUASAR_VM_KERNEL_DEB"}
    return {**env, **changes}


def test_without_qemu_run_is_one_line_with_the_install_hint() -> None:
    root = short_tmpdir("kqm")
    try:
        done = kuasarctl(
            "sandbox", "run", "-d", root, "--vmm", "qemu", "--name", "vm-x", env=_env(PATH="/nonexistent")
        )
        assert done.returncode == 125
        assert done.stderr.decode().splitlines() == [
            "Error: qemu-system-x86_64 not found",
            "Install it: apt-get install qemu-system-x86",
        ]
        assert os.listdir(root) == []  # nothing was created
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")
def test_a_missing_kernel_package_is_one_line(tmp_path: object) -> None:
    env = _env(KUASAR_VM_CACHE=str(tmp_path), KUASAR_VM_KERNEL_DEB="/nonexistent/linux-image.deb")
    for argv in (["image", "build"], ["sandbox", "run", "-d", str(tmp_path), "--vmm", "qemu"]):
        done = kuasarctl(*argv, env=env)
        assert done.returncode == 125, done.stderr
        lines = done.stderr.decode().splitlines()
        assert lines == ["Error: KUASAR_VM_KERNEL_DEB=/nonexistent/linux-image.deb: no such file"]


def test_qemu_flags_are_checked_before_anything_runs() -> None:
    for flags, said in (
        (["--memory", "0"], "must be positive"),
        (["--cpus", "two"], "not an integer"),
        (["--accel", "hvf"], "invalid choice"),
        (["--boot-timeout", "-1"], "must be positive"),
        (["--no-agent-api"], "--no-agent-api is for local sandboxes"),
    ):
        done = kuasarctl("sandbox", "run", "-d", "/nonexistent-root", "--vmm", "qemu", *flags)
        assert done.returncode == 2, (flags, done.stderr)
        assert said in done.stderr.decode(), (flags, done.stderr)


def test_sandbox_logs_of_a_directory_kuasarctl_did_not_start_is_one_line() -> None:
    root = short_tmpdir("kql")
    try:
        os.mkdir(os.path.join(root, "vmm-1"))
        open(os.path.join(root, "vmm-1", "task.vsock"), "w").close()
        done = kuasarctl("sandbox", "logs", "-d", root, "vmm-1")
        assert done.returncode == 125
        assert done.stderr.decode().splitlines()[0].startswith("Error: vmm-1 was not started by kuasarctl")
    finally:
        shutil.rmtree(root, ignore_errors=True)


class Monitor:
    """QMP's wire: a greeting, ``qmp_capabilities`` first, one reply per command, events between."""

    def __init__(self, replies: dict[str, dict[str, object]]) -> None:
        self.replies = replies
        self.commands: list[dict[str, object]] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b'{"QMP": {"version": {"qemu": {"major": 7}}, "capabilities": []}}\r\n')
        while line := await reader.readline():
            request = json.loads(line)
            self.commands.append(request)
            writer.write(b'{"event": "NOISE", "timestamp": {"seconds": 1}}\r\n')
            reply = self.replies.get(request["execute"], {"return": {}})
            writer.write(json.dumps(reply).encode() + b"\r\n")
            await writer.drain()
        writer.close()


@pytest.mark.asyncio
async def test_qmp_client_negotiates_skips_events_and_reports_errors() -> None:
    directory = short_tmpdir("kqmp")
    path = os.path.join(directory, "qmp.sock")
    monitor = Monitor(
        {
            "query-status": {"return": {"status": "running"}},
            "bogus": {"error": {"class": "CommandNotFound", "desc": "The command bogus has not been found"}},
        }
    )
    server = await asyncio.start_unix_server(monitor.serve, path)
    try:
        async with await Qmp.connect(path) as qmp:
            assert await qmp.execute("query-status") == {"status": "running"}
            await qmp.execute("send-key", ctrl_alt_delete)
            with pytest.raises(QmpError, match="QEMU refused bogus: The command bogus has not been found"):
                await qmp.execute("bogus")
        assert [c["execute"] for c in monitor.commands] == [
            "qmp_capabilities",
            "query-status",
            "send-key",
            "bogus",
        ]
        keys = monitor.commands[2]["arguments"]
        assert keys == {"keys": [{"type": "qcode", "data": k} for k in ("ctrl", "alt", "delete")]}
    finally:
        server.close()
        await server.wait_closed()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.asyncio
async def test_qmp_client_refuses_what_is_not_a_monitor() -> None:
    directory = short_tmpdir("kqmp")
    path = os.path.join(directory, "qmp.sock")

    async def not_qmp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(not_qmp, path)
    try:
        with pytest.raises(QmpError, match="not JSON"):
            await Qmp.connect(path)
        with pytest.raises(QmpError, match="cannot connect to QEMU's monitor"):
            await Qmp.connect(os.path.join(directory, "missing.sock"))
    finally:
        server.close()
        await server.wait_closed()
        shutil.rmtree(directory, ignore_errors=True)


def test_sandbox_logs_prints_the_log_bytes_unchanged() -> None:
    root = short_tmpdir("kql")
    try:
        directory = os.path.join(root, "vm-b")
        os.mkdir(directory)
        record = {"id": "vm-b", "kind": "qemu", "supervisor_pid": 0, "agent_pid": 0, "created": 0.0}
        record |= {"debug_console": True, "agent_api": True, "namespaces": False, "accel": "tcg"}
        with open(os.path.join(directory, "sandbox.json"), "w", encoding="utf-8") as file:
            json.dump(record, file)
        console = b"KUASAR-INIT: kernel up\n\xff\xfe not UTF-8 \x1b[0m\r\n"
        with open(os.path.join(directory, "console.log"), "wb") as file:
            file.write(console)
        with open(os.path.join(directory, "sandbox.log"), "wb") as file:
            file.write(b"supervisor \xe9\n")
        assert kuasarctl("sandbox", "logs", "-d", root, "vm-b").stdout == console
        assert kuasarctl("sandbox", "logs", "-d", root, "--supervisor", "vm-b").stdout == b"supervisor \xe9\n"
    finally:
        shutil.rmtree(root, ignore_errors=True)
