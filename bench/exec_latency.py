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
import subprocess
import sys
import tempfile
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import CTL, ENV, median_ms


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


def measure(runs: int = 20) -> dict[str, Any]:
    """Start a local sandbox, time each command (median of ``runs``), stop it; milliseconds."""
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
        baseline = median_ms([sys.executable, "-c", "pass"], runs)
        asyncio_ms = median_ms([sys.executable, "-c", "import asyncio"], runs)
        help_ms = median_ms([*CTL, "--help"], runs)
        exec_ms = median_ms([*CTL, "exec", "-t", "-d", root, sandbox_id, "true"], runs)
        console_ms = median_ms([*CTL, "exec", "--console", "-t", "-d", root, sandbox_id, "true"], runs)
        protobuf = protobuf_on_exec_path(root, sandbox_id)
    finally:
        subprocess.run(
            [*CTL, "sandbox", "stop", "-d", root, sandbox_id], check=False, stdout=subprocess.DEVNULL, env=ENV
        )
        shutil.rmtree(root, ignore_errors=True)
    return {
        "runs": runs,
        "baseline_ms": baseline,
        "asyncio_ms": asyncio_ms,
        "help_ms": help_ms,
        "exec_ms": exec_ms,
        "console_ms": console_ms,
        "protobuf_on_console_path": protobuf,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    result = measure(args.runs)
    baseline, exec_ms = result["baseline_ms"], result["exec_ms"]
    goal = 2 * baseline + 10
    print(f"{'what':<28}{'median ms':>10}{'x baseline':>12}")
    for name, key in (
        ("python3 -c pass", "baseline_ms"),
        ("kuasarctl --help", "help_ms"),
        ("python3 -c import asyncio", "asyncio_ms"),
        ("kuasarctl exec -t ID true", "exec_ms"),
        ("  ... --console", "console_ms"),
    ):
        print(f"{name:<28}{result[key]:>10.1f}{result[key] / baseline:>12.2f}")
    print(f"goal: exec <= 2 x baseline + 10 ms = {goal:.1f} ms -> {'met' if exec_ms <= goal else 'NOT met'}")
    protobuf = result["protobuf_on_console_path"]
    print(f"protobuf imported on the console exec path: {'yes (regression!)' if protobuf else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
