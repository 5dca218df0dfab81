"""``kuasarctl exec -t --all -d ROOT -- true`` across --count local sandboxes (goal: 100 in <= 3 s).

Starts --count local sandboxes (``kuasarctl sandbox run -d ROOT --name fan-NNN``, --batch at a
time), then times (median of --runs, after one warm-up run):
  one       kuasarctl exec -t -d ROOT fan-000 true      (the baseline: one sandbox)
  all       kuasarctl exec -t --all -d ROOT -- true      (every sandbox, -P's default parallelism)
Every sandbox is stopped and ROOT removed on every exit: a failing step, Ctrl-C or SIGTERM.
Numbers only, no asserts.

Usage: python bench/fanout.py [--count 100] [--runs 3] [--batch 10]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import CTL, ENV, median_ms

GOAL_S = 3.0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _start(root: str, names: list[str], batch: int, starting: list[subprocess.Popen[bytes]]) -> None:
    """Start ``names`` in ROOT, ``batch`` at a time; ``starting`` holds the ``sandbox run`` in flight."""
    for first in range(0, len(names), batch):
        for name in names[first : first + batch]:
            starting.append(
                subprocess.Popen(
                    [*CTL, "sandbox", "run", "-d", root, "--name", name],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    env=ENV,
                )
            )
        failed = [proc.args for proc in starting if proc.wait() != 0]
        starting.clear()
        if failed:
            raise RuntimeError(f"sandbox run failed: {failed[0]}")


def _stop_all(root: str, starting: list[subprocess.Popen[bytes]]) -> None:
    """Stop every sandbox in ROOT (started, half-started or crashed) and remove ROOT."""
    for proc in starting:  # a `sandbox run` in flight has its sandbox directory only once it returns
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    with contextlib.suppress(FileNotFoundError):
        names = sorted(os.listdir(root))
        if names:
            print(f"stopping {len(names)} sandboxes ...", file=sys.stderr, flush=True)
            stop = [*CTL, "sandbox", "stop", "-d", root]
            if subprocess.run([*stop, *names], stdout=subprocess.DEVNULL, env=ENV, check=False).returncode:
                for name in names:  # one by one, so one that cannot be stopped spares the others
                    subprocess.run([*stop, name], stdout=subprocess.DEVNULL, env=ENV, check=False)
    shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def sandboxes(count: int, batch: int) -> Iterator[tuple[str, list[str]]]:
    """ROOT holding ``count`` running local sandboxes, all stopped on leaving, Ctrl-C included."""
    root = tempfile.mkdtemp(prefix="ksrfan", dir="/tmp")
    names = [f"fan-{index:03d}" for index in range(count)]
    starting: list[subprocess.Popen[bytes]] = []
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        _start(root, names, batch, starting)
        yield root, names
    finally:
        interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leak them
        try:
            _stop_all(root, starting)
        finally:
            signal.signal(signal.SIGINT, interrupt)
            signal.signal(signal.SIGTERM, previous)


def measure(count: int = 100, runs: int = 3, batch: int = 10) -> dict[str, Any]:
    """Start ``count`` sandboxes, time one exec and the fan-out; stop them all."""
    started = time.perf_counter()
    with sandboxes(count, batch) as (root, names):
        start_s = time.perf_counter() - started
        one = [*CTL, "exec", "-t", "-d", root, names[0], "true"]
        fan = [*CTL, "exec", "-t", "--all", "-d", root, "--", "true"]
        median_ms(fan, 1)  # warm-up: page cache, .pyc, every agent's first connection
        one_ms = median_ms(one, max(5, runs))
        all_ms = median_ms(fan, runs)
    return {"count": count, "runs": runs, "start_s": start_s, "one_ms": one_ms, "all_ms": all_ms}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100, help="sandboxes (default 100)")
    parser.add_argument("--runs", type=int, default=3, help="timed fan-out runs (default 3)")
    parser.add_argument("--batch", type=int, default=10, help="sandboxes started at once (default 10)")
    args = parser.parse_args()
    try:
        result = measure(args.count, args.runs, args.batch)
    except KeyboardInterrupt:
        print("interrupted; every sandbox stopped", file=sys.stderr)
        return 130
    all_s = result["all_ms"] / 1000
    print(f"{args.count} sandboxes started in {result['start_s']:.1f} s; median of {args.runs} runs:")
    ratio = result["all_ms"] / result["one_ms"]
    print(f"  exec -t ID true             {result['one_ms']:8.1f} ms")
    print(f"  exec -t --all -- true       {result['all_ms']:8.1f} ms  {ratio:6.1f}x one")
    print(f"goal: <= {GOAL_S:.0f} s -> {'met' if all_s <= GOAL_S else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
