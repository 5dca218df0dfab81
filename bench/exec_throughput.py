"""Stdout throughput of ``kuasarctl exec -t ID cat BIGFILE > /dev/null``, and the agent's idle RSS.

Starts a local sandbox, writes BIGFILE (--size MiB of random bytes) and times (median of --runs,
the three paths taking turns run by run):
  api       kuasarctl exec -t --agent ID cat BIGFILE     (agent API: ttrpc Exec stream)
  console   kuasarctl exec -t --console ID cat BIGFILE   (debug console, marker stripping)
  socat     socat relaying the same hvsock path: CONNECT 1025, KSR_MODE exec, exec cat BIGFILE
            (raw bytes through the same hvsock server and console PTY, no client processing)
Prints MiB/s and each kuasarctl path against socat (ratio), the probe cost (exec of `true` over
the API vs --console), and the agent's idle RSS (goal <= 30 MiB). Numbers only, no asserts.

If the sandbox's agent does not serve Exec yet, the API numbers come from the test helper that
serves the real Exec handlers on the sandbox's API socket (see tests/functional/test_cli_exec_api.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import CTL, ENV


def timed(command: list[str], *, stdin: int | None = subprocess.DEVNULL) -> float:
    started = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        subprocess.run(command, stdin=stdin, stdout=sink, check=True, env=ENV)
    return time.perf_counter() - started


def socat_once(socket_path: str, big: str) -> float:
    started = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        relay = subprocess.Popen(
            ["socat", "-t", "0", "STDIO", f"UNIX-CONNECT:{socket_path}"], stdin=subprocess.PIPE, stdout=sink
        )
        assert relay.stdin is not None
        # The VMM's "OK <port>" line and the PTY's few setup bytes land in /dev/null with the data.
        relay.stdin.write(f"CONNECT 1025\nKSR_MODE exec\nstty -opost -echo; exec cat {big}\n".encode())
        relay.stdin.flush()  # stdin stays open: closing it would end the console session
        # wait() without a timeout blocks in waitpid; with one it polls, sleeping up to 50 ms
        # between polls, which added 0-50 ms to socat's time (kuasarctl's runs block in waitpid).
        watchdog = threading.Timer(600, relay.kill)
        watchdog.start()
        try:
            relay.wait()
        finally:
            watchdog.cancel()
        relay.stdin.close()
    return time.perf_counter() - started


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def agent_rss_kib(root: str, sandbox_id: str) -> int | None:
    try:
        with open(os.path.join(root, sandbox_id, "sandbox.json")) as file:
            pid = json.load(file)["agent_pid"]
        with open(f"/proc/{pid}/status") as file:
            for line in file:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, KeyError, ValueError):
        return None
    return None


@contextlib.contextmanager
def sandbox(name: str) -> Iterator[tuple[str, str, bool]]:
    from tests.functional.cli_helpers import local_sandbox
    from tests.functional.test_cli_exec_api import exec_api_sandbox, serves_exec

    with local_sandbox(name) as plain:
        native = serves_exec(plain.root, plain.id)
        if native:
            yield plain.root, plain.id, True
            return
    with exec_api_sandbox(name) as helped:
        yield helped.root, helped.id, False


def measure(size: int = 256, runs: int = 3) -> dict[str, Any]:
    """Start a sandbox, time ``cat`` of ``size`` MiB on each path (median of ``runs``), stop it.

    Returns seconds per path (``api``, ``console``, ``socat``), the exec-of-``true`` times, the
    agent's idle RSS in KiB (None when unknown) and whether the agent served Exec itself.
    """
    with sandbox("bench-tput") as (root, sandbox_id, native):
        time.sleep(1.0)
        rss = agent_rss_kib(root, sandbox_id)
        big = os.path.join(root, "big.bin")
        with open(big, "wb") as file:
            for _ in range(size):
                file.write(os.urandom(1 << 20))
        socket_path = os.path.join(root, sandbox_id, "task.socket")
        base = [*CTL, "exec", "-t", "-d", root]
        paths: dict[str, Callable[[], float]] = {
            "api": lambda: timed([*base, "--agent", sandbox_id, "cat", big]),
            "console": lambda: timed([*base, "--console", sandbox_id, "cat", big]),
            "socat": lambda: socat_once(socket_path, big),
        }
        # Round-robin, so each path and its socat baseline see the same load (a shared machine's
        # load drifts over the seconds that a block of runs of one path takes).
        samples: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(runs):
            for name, once in paths.items():
                samples[name].append(once())
        seconds = {name: median(times) for name, times in samples.items()}
        true_api = median([timed([*base, sandbox_id, "true"]) for _ in range(max(5, runs))])
        true_console = median([timed([*base, "--console", sandbox_id, "true"]) for _ in range(max(5, runs))])
        os.unlink(big)
    return {
        "size_mib": size,
        "runs": runs,
        "seconds": seconds,
        "true_api_s": true_api,
        "true_console_s": true_console,
        "agent_rss_kib": rss,
        "native_exec": native,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="BIGFILE size in MiB (default 256)")
    parser.add_argument("--runs", type=int, default=3, help="runs per path (default 3)")
    args = parser.parse_args()
    if shutil.which("socat") is None:
        print("socat is not installed: apt-get install socat")
        return 1
    result = measure(args.size, args.runs)
    results = result["seconds"]
    native, rss = result["native_exec"], result["agent_rss_kib"]
    print(
        f"BIGFILE {args.size} MiB, median of {args.runs} runs" + ("" if native else " (API via test helper)")
    )
    for name, seconds in results.items():
        ratio = results["socat"] / seconds
        print(f"  {name:8} {seconds * 1000:8.0f} ms  {args.size / seconds:8.1f} MiB/s  {ratio:5.2f}x socat")
    true_api, true_console = result["true_api_s"], result["true_console_s"]
    print(f"exec true: auto (probe + API) {true_api * 1000:.0f} ms, --console {true_console * 1000:.0f} ms")
    print(f"agent idle RSS: {rss / 1024:.1f} MiB (goal <= 30 MiB)" if rss else "agent idle RSS: unknown")
    return 0


if __name__ == "__main__":
    sys.exit(main())
