"""How long ``kuasarctl exec -t ID true`` takes, against ``python3 -c pass`` in the same run.

Starts a local sandbox, then times (median of --runs) each of:
  baseline      python3 -c pass                      (interpreter start-up)
  help          kuasarctl --help                      (CLI import cost)
  exec          kuasarctl exec -t ID true             (whole round trip over the console)
and prints each against the baseline. Goal (issue 3): exec <= 2 x baseline + 10 ms.
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
import time

CTL = [sys.executable, "-m", "kuasar.ctl"]


#: Measure as users run it: with bytecode caches written (some CI images set PYTHONDONTWRITEBYTECODE,
#: which makes every run recompile kuasar's modules).
ENV = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}


def median_ms(command: list[str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True, env=ENV)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="ksrbench", dir="/tmp")
    sandbox_id = "bench-exec"
    subprocess.run(
        [*CTL, "sandbox", "run", "-d", root, "--name", sandbox_id], check=True, stdout=subprocess.DEVNULL
    )
    try:
        median_ms([*CTL, "exec", "-d", root, sandbox_id, "true"], 2)  # warm caches
        baseline = median_ms([sys.executable, "-c", "pass"], args.runs)
        asyncio_ms = median_ms([sys.executable, "-c", "import asyncio"], args.runs)
        help_ms = median_ms([*CTL, "--help"], args.runs)
        exec_ms = median_ms([*CTL, "exec", "-t", "-d", root, sandbox_id, "true"], args.runs)
        console_ms = median_ms([*CTL, "exec", "--console", "-t", "-d", root, sandbox_id, "true"], args.runs)
        protobuf = protobuf_on_exec_path(root, sandbox_id)
    finally:
        subprocess.run(
            [*CTL, "sandbox", "stop", "-d", root, sandbox_id], check=False, stdout=subprocess.DEVNULL
        )
        shutil.rmtree(root, ignore_errors=True)
    goal = 2 * baseline + 10
    print(f"{'what':<28}{'median ms':>10}{'x baseline':>12}")
    print(f"{'python3 -c pass':<28}{baseline:>10.1f}{1.0:>12.2f}")
    print(f"{'kuasarctl --help':<28}{help_ms:>10.1f}{help_ms / baseline:>12.2f}")
    print(f"{'python3 -c import asyncio':<28}{asyncio_ms:>10.1f}{asyncio_ms / baseline:>12.2f}")
    print(f"{'kuasarctl exec -t ID true':<28}{exec_ms:>10.1f}{exec_ms / baseline:>12.2f}")
    print(f"{'  ... --console':<28}{console_ms:>10.1f}{console_ms / baseline:>12.2f}")
    print(f"goal: exec <= 2 x baseline + 10 ms = {goal:.1f} ms -> {'met' if exec_ms <= goal else 'NOT met'}")
    print(f"protobuf imported on the console exec path: {'yes (regression!)' if protobuf else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
