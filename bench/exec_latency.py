"""How long ``kuasarctl exec -t ID true`` takes, against ``python3 -c pass`` in the same run.

Starts a local sandbox, then times (median of --runs, the commands taking turns run by run so that
each sees the same load) each of:
  baseline      python3 -c pass                      (interpreter start-up: the floor)
  help          kuasarctl --help                      (CLI start-up)
  exec          kuasarctl exec -t ID true             (probe and Exec over the agent API)
  console       kuasarctl exec -t --console ID true   (the debug console's marker wrapper)
  socat         socat doing the console's own work: CONNECT 1025, KSR_MODE exec, one line running
                stty, the start marker, true and the exit marker; done when the exit marker is read
                (what the guest's shell costs any client, a C one included)
and prints each against the baseline. Goal (issue 12): each kuasarctl row <= floor + 10 ms.
Also reports whether protobuf got imported on the console exec path (it must not), and
``import asyncio`` alone, the floor of any asyncio client.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import CTL, ENV, median_ms, wall_ms


def protobuf_on_exec_path(root: str, sandbox_id: str) -> bool:
    argv = ["kuasarctl", "exec", "--console", "-d", root, sandbox_id, "true"]
    probe = (
        f"import sys, runpy; sys.argv={argv!r}\n"
        "try:\n    runpy.run_module('kuasar.ctl', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "print('google.protobuf' in sys.modules, file=sys.stderr)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False, env=ENV
    )
    return result.stderr.strip().endswith("True")


#: The console line socat sends: the work of our wrapper (stty, both markers, the command), no quoting.
SOCAT_LINE = (
    b'exec sh -c \'stty -opost -echo 2>/dev/null; printf "%s\\n" __KSR_START__; true; rc=$?; '
    b'printf "%s:%s\\n" __KSR_EXIT__ "$rc"\'\n'
)


def socat_console_ms(socket_path: str) -> float:
    """One console exec of ``true`` by socat, until the exit marker comes back; milliseconds."""
    started = time.perf_counter()
    relay = subprocess.Popen(
        ["socat", "-t", "0", "STDIO", f"UNIX-CONNECT:{socket_path}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert relay.stdin is not None and relay.stdout is not None
    watchdog = threading.Timer(30, relay.kill)
    watchdog.start()
    try:
        relay.stdin.write(b"CONNECT 1025\nKSR_MODE exec\n" + SOCAT_LINE)
        relay.stdin.flush()
        seen = b""
        while b"__KSR_EXIT__:0" not in seen:
            chunk = os.read(relay.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError(f"socat's console session ended early: {seen[-200:]!r}")
            seen += chunk
        elapsed = (time.perf_counter() - started) * 1000
        relay.stdin.close()
        relay.wait()
    finally:
        watchdog.cancel()
        relay.kill()
        relay.stdout.close()
    return elapsed


def measure(runs: int = 20) -> dict[str, Any]:
    """Start a local sandbox, time each command (median of ``runs``, interleaved), stop it; ms."""
    root = tempfile.mkdtemp(prefix="ksrbench", dir="/tmp")
    sandbox_id = "bench-exec"
    subprocess.run(
        [*CTL, "sandbox", "run", "-d", root, "--name", sandbox_id],
        check=True,
        stdout=subprocess.DEVNULL,
        env=ENV,
    )
    try:
        median_ms([*CTL, "exec", "-d", root, sandbox_id, "true"], 2)  # warm caches
        commands = {
            "baseline": [sys.executable, "-c", "pass"],
            "asyncio": [sys.executable, "-c", "import asyncio"],
            "help": [*CTL, "--help"],
            "exec": [*CTL, "exec", "-t", "-d", root, sandbox_id, "true"],
            "console": [*CTL, "exec", "--console", "-t", "-d", root, sandbox_id, "true"],
        }
        samples: dict[str, list[float]] = {name: [] for name in [*commands, "socat"]}
        socket_path = os.path.join(root, sandbox_id, "task.socket")
        socat = shutil.which("socat") is not None
        for _ in range(runs):
            for name, command in commands.items():
                samples[name].append(wall_ms(command))
            if socat:
                samples["socat"].append(socat_console_ms(socket_path))
        medians = {name: statistics.median(times) if times else None for name, times in samples.items()}
        protobuf = protobuf_on_exec_path(root, sandbox_id)
    finally:
        subprocess.run(
            [*CTL, "sandbox", "stop", "-d", root, sandbox_id], check=False, stdout=subprocess.DEVNULL, env=ENV
        )
        shutil.rmtree(root, ignore_errors=True)
    return {
        "runs": runs,
        **{f"{name}_ms": value for name, value in medians.items()},
        "protobuf_on_console_path": protobuf,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    result = measure(args.runs)
    baseline, exec_ms = result["baseline_ms"], result["exec_ms"]
    goal = baseline + 10
    print(f"{'what':<34}{'median ms':>10}{'x baseline':>12}")
    for name, key in (
        ("python3 -c pass", "baseline_ms"),
        ("kuasarctl --help", "help_ms"),
        ("python3 -c import asyncio", "asyncio_ms"),
        ("kuasarctl exec -t ID true", "exec_ms"),
        ("  ... --console", "console_ms"),
        ("socat, the same console exec", "socat_ms"),
    ):
        if result[key] is not None:
            print(f"{name:<34}{result[key]:>10.1f}{result[key] / baseline:>12.2f}")
    print(f"goal: exec <= floor + 10 ms = {goal:.1f} ms -> {'met' if exec_ms <= goal else 'NOT met'}")
    protobuf = result["protobuf_on_console_path"]
    print(f"protobuf imported on the console exec path: {'yes (regression!)' if protobuf else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
