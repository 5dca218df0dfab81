"""Resolving a unique ID prefix among --count sandbox directories (goal: 10 000 in <= 50 ms).

Builds ROOT/ID/task.socket for --count random 64-hex-digit IDs (plain files: discovery only looks
for the name, see kuasar.sandbox.discovery), picks the shortest prefix of one ID no other ID has,
and times (median of --runs):
  resolve   kuasar.sandbox.discovery.resolve_sandbox(prefix, [ROOT]) in a fresh interpreter,
            timed inside it (the CLI's own call, without interpreter start-up)
  cli       kuasarctl exec --console -d ROOT PREFIX true, which fails fast on the dead socket,
            against the same command in a root holding that one sandbox (the difference is the
            cost of the other directories)
Numbers only, no asserts. ROOT is removed on every exit.

Usage: python bench/discovery.py [--count 10000] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import CTL, ENV, median_ms

GOAL_MS = 50.0

_RESOLVE = """\
import sys, time
from kuasar.sandbox.discovery import resolve_sandbox
started = time.perf_counter()
ref = resolve_sandbox(sys.argv[1], [sys.argv[2]])
elapsed = time.perf_counter() - started
assert ref.id.startswith(sys.argv[1]), ref
print(elapsed * 1000)
"""


def make_root(ids: list[str]) -> str:
    # directly in /tmp: ROOT/ID/task.socket must fit in sun_path (107 bytes) with 64-digit IDs
    root = tempfile.mkdtemp(prefix="ksrd", dir="/tmp")
    for sandbox_id in ids:
        directory = os.path.join(root, sandbox_id)
        os.mkdir(directory)
        with open(os.path.join(directory, "task.socket"), "wb"):
            pass
    return root


def unique_prefix(target: str, ids: list[str]) -> str:
    """The shortest prefix of ``target`` that no other ID starts with."""
    others = [other for other in ids if other != target]
    for length in range(1, len(target) + 1):
        prefix = target[:length]
        if not any(other.startswith(prefix) for other in others):
            return prefix
    return target


def resolve_ms(prefix: str, root: str) -> float:
    result = subprocess.run(
        [sys.executable, "-c", _RESOLVE, prefix, root], capture_output=True, text=True, env=ENV, check=True
    )
    return float(result.stdout)


def measure(count: int = 10_000, runs: int = 5) -> dict[str, Any]:
    """Build the roots, time resolve_sandbox and the failing CLI exec; remove the roots."""
    ids = sorted({secrets.token_hex(32) for _ in range(count)})
    target = ids[len(ids) // 2]
    prefix = unique_prefix(target, ids)
    roots: list[str] = []
    try:
        roots.append(many := make_root(ids))
        roots.append(one := make_root([target]))
        cli = [*CTL, "exec", "--console", "-t", "-d", many, prefix, "true"]
        cli_one = [*CTL, "exec", "--console", "-t", "-d", one, prefix, "true"]
        median_ms(cli, 1, check=False)  # warm-up: page cache (the dentries), .pyc
        resolve = statistics.median(resolve_ms(prefix, many) for _ in range(runs))
        resolve_one = statistics.median(resolve_ms(prefix, one) for _ in range(runs))
        cli_ms = median_ms(cli, runs, check=False)
        cli_one_ms = median_ms(cli_one, runs, check=False)
    finally:
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)
    return {
        "count": len(ids),
        "runs": runs,
        "prefix": prefix,
        "resolve_ms": resolve,
        "resolve_one_ms": resolve_one,
        "cli_ms": cli_ms,
        "cli_one_ms": cli_one_ms,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000, help="sandbox directories (default 10000)")
    parser.add_argument("--runs", type=int, default=5, help="runs per measure (default 5)")
    args = parser.parse_args()
    result = measure(args.count, args.runs)
    print(f"{result['count']} sandbox dirs, prefix {result['prefix']!r}, median of {args.runs} runs:")
    rows = [
        ("resolve_sandbox, in-process", result["resolve_ms"], result["resolve_one_ms"]),
        ("exec --console PREFIX, dead socket", result["cli_ms"], result["cli_one_ms"]),
    ]
    for name, many_ms, one_ms in rows:
        print(f"  {name:<36}{many_ms:8.1f} ms  (1 dir: {one_ms:.1f} ms)")
    met = result["resolve_ms"] <= GOAL_MS
    print(f"goal: resolve <= {GOAL_MS:.0f} ms -> {'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
