"""``kuasarctl exec`` over the debug console, end to end: real CLI process -> hvsock server -> agent
debug console -> shell. The sandbox is console-only (``--no-agent-api``, like a stock Kuasar vmm-task),
so every exec here also proves the fallback from the agent API probe."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.functional.cli_helpers import (
    DUMP_MODULES,
    EXIT_CASES,
    KUASARCTL,
    LocalSandbox,
    kuasarctl,
    local_sandbox,
    pids_with_cmdline,
)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[LocalSandbox]:
    with local_sandbox("pod-abc-123", "--no-agent-api") as running:
        yield running


@pytest.mark.parametrize(("command", "expected"), EXIT_CASES)
def test_exit_codes(sandbox: LocalSandbox, command: list[str], expected: int) -> None:
    result = sandbox.exec(*command, flags=["-t"])
    assert result.returncode == expected, result.stderr


def test_not_executable_is_126(sandbox: LocalSandbox, tmp_path: object) -> None:
    script = os.path.join(sandbox.root, "not-executable.sh")
    with open(script, "w") as file:
        file.write("#!/bin/sh\necho never\n")
    os.chmod(script, 0o644)
    result = sandbox.exec(script)
    assert result.returncode == 126
    assert b"never" not in result.stdout


def test_output_and_prefix_matching(sandbox: LocalSandbox) -> None:
    result = kuasarctl("exec", "-t", "-d", sandbox.root, "pod-abc", "echo", "hello world", "a'b")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hello world a'b\n"


def test_single_argument_with_spaces_is_a_shell_command_line(sandbox: LocalSandbox) -> None:
    result = sandbox.exec("echo one && echo two; exit 3", flags=["-t"])
    assert result.stdout == b"one\ntwo\n"
    assert result.returncode == 3


def test_double_dash_separator(sandbox: LocalSandbox) -> None:
    result = kuasarctl("exec", "-d", sandbox.root, sandbox.id, "--", "sh", "-c", "echo -n x")
    assert (result.returncode, result.stdout) == (0, b"x")


def test_timeout_gives_124(sandbox: LocalSandbox) -> None:
    started = time.monotonic()
    result = kuasarctl(
        "exec", "-t", "-p", "1025", "-d", sandbox.root, "--timeout", "1", sandbox.id, "sleep", "10"
    )
    assert result.returncode == 124
    assert b"timed out" in result.stderr
    assert time.monotonic() - started < 8


def test_unknown_sandbox_gives_125_with_listing(sandbox: LocalSandbox) -> None:
    result = kuasarctl("exec", "-d", sandbox.root, "nope", "true")
    assert result.returncode == 125
    assert result.stderr.decode().splitlines() == [
        'Error: No pod found with prefix "nope". Available pods:',
        "  pod-abc-123",
    ]


def test_unserved_port_gives_125_naming_socket_and_port(sandbox: LocalSandbox) -> None:
    result = kuasarctl(
        "exec", "-p", "4242", "--connect-timeout", "0.5", "-d", sandbox.root, sandbox.id, "true"
    )
    assert result.returncode == 125
    first = result.stderr.decode().splitlines()[0]
    assert "task.socket" in first and "4242" in first
    assert "Traceback" not in result.stderr.decode()


def test_binary_output_is_byte_exact(sandbox: LocalSandbox) -> None:
    path = os.path.join(sandbox.root, "blob.bin")
    data = os.urandom(50 * 1024 * 1024)
    with open(path, "wb") as file:
        file.write(data)
    result = sandbox.exec("cat", path, timeout=120)
    os.unlink(path)
    assert result.returncode == 0, result.stderr[-500:]
    assert len(result.stdout) == len(data)
    assert hashlib.sha256(result.stdout).digest() == hashlib.sha256(data).digest()


def test_stdin_is_piped_until_eof(sandbox: LocalSandbox) -> None:
    result = sandbox.exec("cat", flags=["-i"], input=b"hi\nthere\n")
    assert (result.returncode, result.stdout) == (0, b"hi\nthere\n")
    partial = sandbox.exec("wc", "-c", flags=["-i"], input=b"abc")
    assert (partial.returncode, partial.stdout.strip()) == (0, b"3")
    empty = sandbox.exec("wc", "-l", flags=["-i"], input=b"")
    assert (empty.returncode, empty.stdout.strip()) == (0, b"0")


def test_without_i_the_command_gets_no_stdin(sandbox: LocalSandbox) -> None:
    result = sandbox.exec("cat", flags=["-t"], input=b"ignored\n", timeout=20)
    assert (result.returncode, result.stdout) == (0, b"")


def test_concurrent_execs(sandbox: LocalSandbox) -> None:
    def one(index: int) -> tuple[int, bytes]:
        result = sandbox.exec("sh", "-c", f"echo {index}; exit {index}")
        return result.returncode, result.stdout

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(8)))
    assert results == [(index, f"{index}\n".encode()) for index in range(8)]


def test_killed_client_leaves_no_remote_processes(sandbox: LocalSandbox) -> None:
    marker = "987654.25"
    client = subprocess.Popen(
        [
            *KUASARCTL,
            "exec",
            "-d",
            sandbox.root,
            sandbox.id,
            "sh",
            "-c",
            f"sleep {marker} & sleep {marker}; echo",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while len(pids_with_cmdline(marker)) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(pids_with_cmdline(marker)) >= 3  # the client and the remote shell and sleeps
    client.kill()
    client.wait()
    deadline = time.monotonic() + 1.0
    while pids_with_cmdline(marker) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert pids_with_cmdline(marker) == []


def test_interactive_flags_need_a_terminal(sandbox: LocalSandbox) -> None:
    result = sandbox.exec(flags=["-it"])
    assert result.returncode == 2
    assert result.stderr.decode().startswith("Error: the input device is not a TTY")


def test_no_command_without_interactive_is_a_usage_error(sandbox: LocalSandbox) -> None:
    result = kuasarctl("exec", "-t", "-d", sandbox.root, sandbox.id)
    assert result.returncode == 2
    assert "no command given" in result.stderr.decode()


def test_control_characters_in_arguments_run_nothing_and_arrive_exact(sandbox: LocalSandbox) -> None:
    victim = os.path.join(sandbox.root, "pwned")
    visible = sandbox.exec("touch", victim)  # the guest writes where this test can look
    assert visible.returncode == 0 and os.path.exists(victim)
    os.unlink(victim)
    hostile = [f"\x15touch {victim} #", "a\tb", "a\rb", "a\x01b", "a\x13b", "\x03\x1a\x1c\x04\x7f"]
    result = sandbox.exec("printf", "%s\\n", *hostile, timeout=20)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "".join(f"{arg}\n" for arg in hostile).encode()
    assert not os.path.exists(victim)


def test_non_utf8_arguments_and_env_values_arrive_exact(sandbox: LocalSandbox) -> None:
    raw = os.fsdecode(b"a\xff\xfeb")  # as Python hands it a non-UTF-8 argv byte string
    result = sandbox.exec("sh", "-c", 'printf "%s|%s" "$1" "$A"', "sh", raw, flags=["-e", f"A={raw}"])
    assert (result.returncode, result.stdout) == (0, b"a\xff\xfeb|a\xff\xfeb"), result.stderr


def test_long_stdin_lines_and_binary_stdin_arrive_whole(sandbox: LocalSandbox) -> None:
    data = b"x" * 5000 + b"\n" + bytes(range(256)) * 40 + b"\x04\x15 no newline"
    result = sandbox.exec("sh", "-c", "cat | md5sum", flags=["-i"], input=data)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0].decode() == hashlib.md5(data).hexdigest()


#: What ``exec --console`` never loads: the event loop (it runs on the blocking driver), the agent
#: API's stack (protobuf and all that is built on it), the guest agent, and the machinery of other
#: subcommands (local sandboxes, cp's tar code).
NOT_ON_THE_CONSOLE_PATH = (
    "asyncio",
    "logging",
    "google",
    "kuasar.proto",
    "kuasar.ttrpc",
    "kuasar.guest",
    "kuasar.remote_process",
    "kuasar.agent",
    "kuasar.sandbox.local",
    "kuasar.sandbox.supervisor",
    "kuasar.tarstream",
    "kuasar.fscopy",
)


def test_console_exec_imports_no_protobuf(sandbox: LocalSandbox, tmp_path: Path) -> None:
    dump = tmp_path / "modules.txt"
    flags = ["--console", "-i", "-e", "A=x", "-d", sandbox.root]
    command = [sandbox.id, "sh", "-c", 'cat; echo "$A"']
    result = subprocess.run(
        [sys.executable, "-c", DUMP_MODULES, str(dump), "exec", *flags, *command],
        input=b"in\n",
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout) == (0, b"in\nx\n"), result.stderr
    loaded = set(dump.read_text().split())
    assert {"kuasar.console", "kuasar.console_sync", "kuasar.transport.blocking"} <= loaded  # it ran
    unneeded = sorted(
        name
        for name in loaded
        for bad in NOT_ON_THE_CONSOLE_PATH
        if name == bad or name.startswith(bad + ".")
    )
    assert not unneeded, unneeded
