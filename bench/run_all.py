"""Every benchmark in one run, one table of issue 12's measures against their goals (``make bench``).

Runs, in this order (each one's own script can also be run alone, with more detail):
  exec_latency.py     python -c pass (the floor), kuasarctl --help, exec -t ID true (API, --console)
  exec_throughput.py  --size MiB of output over the API and the console vs socat; agent idle RSS
                      (its row comes last)
  ttrpc_rate.py       unary Echo calls/s vs Go <-> Go (run as a subprocess; its rows as it prints them)
  fanout.py           exec -t --all -- true across --fanout-count local sandboxes
  discovery.py        a unique prefix among --discovery-count sandbox dirs
prints the table (Markdown, as in README "Performance") and writes it with every raw number to
--json (default bench/results.json). Ratios are against a baseline measured in the same run;
times are medians. Numbers only, no asserts: "met" is a column, never an exit code.

Usage: python bench/run_all.py [--skip ttrpc] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import discovery  # noqa: E402
import exec_latency  # noqa: E402
import exec_throughput  # noqa: E402
import fanout  # noqa: E402
from _common import ENV  # noqa: E402

SECTIONS = ("latency", "throughput", "ttrpc", "fanout", "discovery")
Row = dict[str, str]


def row(measure: str, now: str, ratio: str = "—", goal: str = "—", met: bool | None = None) -> Row:
    return {"measure": measure, "now": now, "ratio": ratio, "goal": goal, "met": _met(met)}


def _met(met: bool | None) -> str:
    return "" if met is None else ("yes" if met else "**no**")


def latency_rows(result: dict[str, Any]) -> list[Row]:
    floor = result["baseline_ms"]
    goal = floor + 10
    rows = [row("`python -c pass` (the floor)", f"{floor:.1f} ms", "1.00x")]
    for name, key in (
        ("`kuasarctl exec -t ID true`, API path", "exec_ms"),
        ("`kuasarctl exec -t --console ID true`", "console_ms"),
        ("`kuasarctl --help`", "help_ms"),
    ):
        ms = result[key]
        rows.append(
            row(name, f"{ms:.1f} ms", f"{ms / floor:.2f}x", f"≤ floor + 10 ms ({goal:.0f})", ms <= goal)
        )
        if key == "console_ms" and result.get("socat_ms"):
            socat = result["socat_ms"]
            rows.append(
                row("… socat doing the same console exec (the guest shell's own work)", f"{socat:.1f} ms")
            )
    return rows


def throughput_rows(result: dict[str, Any]) -> list[Row]:
    size, seconds = result["size_mib"], result["seconds"]
    helper = "" if result["native_exec"] else " (API via test helper)"
    rows = []
    for name, key, goal in (
        (f"{size} MiB of output, `--console`, vs `socat` relaying the same console path", "console", 0.9),
        (f"{size} MiB of output, API path, vs the same `socat`{helper}", "api", 2.0),
    ):
        ratio = seconds["socat"] / seconds[key]
        rows.append(
            row(name, f"{size / seconds[key]:.1f} MiB/s", f"{ratio:.2f}x", f"≥ {goal:.1f}x", ratio >= goal)
        )
    return rows


def rss_row(result: dict[str, Any]) -> Row:
    rss = result["agent_rss_kib"]
    if rss is None:
        return row("`kuasar-agent` idle RSS", "unknown", goal="≤ 30 MiB")
    return row("`kuasar-agent` idle RSS", f"{rss / 1024:.1f} MiB", goal="≤ 30 MiB", met=rss <= 30 * 1024)


def parse_ttrpc(output: str) -> tuple[list[dict[str, Any]], list[str]]:
    """``ttrpc_rate.py``'s rows (name, calls/s and ratio at 1 and 64 in flight) and its other lines."""
    rows: list[dict[str, Any]] = []
    notes: list[str] = []

    def number(cell: str, unit: str) -> float | None:
        return float(cell.removesuffix(unit)) if cell.endswith(unit) else None

    for line in output.splitlines():
        parts = line.rsplit(None, 4)
        if len(parts) == 5 and parts[1].endswith(("/s", "-")) and parts[2].endswith(("x", "-")):
            name, c1, r1, c64, r64 = parts
            rows.append(
                {
                    "name": name.strip(),
                    "c1": number(c1, "/s"),
                    "r1": number(r1, "x"),
                    "c64": number(c64, "/s"),
                    "r64": number(r64, "x"),
                }
            )
        elif line.strip() and not line.startswith("unary Echo"):
            notes.append(line.strip())
    return rows, notes


def ttrpc_rows(parsed: list[dict[str, Any]]) -> list[Row]:
    def cell(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    rows = []
    for item in parsed:
        name: str = item["name"]
        r1, r64 = item["r1"], item["r64"]
        goal, met = "—", None
        if name.startswith("Py client -> Py server"):
            goal, met = "≥ 0.5x both", r1 is not None and r64 is not None and min(r1, r64) >= 0.5
        elif name.startswith(("Go client -> Py server", "Go client -> kuasar-agent")):
            goal, met = "≥ 0.5x at 64", r64 is not None and r64 >= 0.5
        elif name.startswith("Go client -> Go server"):
            goal = "the baseline"
        rows.append(
            row(
                f"ttrpc {'' if 'Health' in name else 'Echo, '}{name}, 1 / 64 in flight, vs Go ↔ Go",
                f"{cell(item['c1'], '.0f')} / {cell(item['c64'], '.0f')} calls/s",
                f"{cell(r1, '.2f')}x / {cell(r64, '.2f')}x",
                goal,
                met,
            )
        )
    return rows


def fanout_rows(result: dict[str, Any]) -> list[Row]:
    seconds = result["all_ms"] / 1000
    return [
        row(
            f"`exec -t --all true` across {result['count']} local sandboxes",
            f"{seconds:.2f} s",
            f"{result['all_ms'] / result['one_ms']:.1f}x one exec",
            f"≤ {fanout.GOAL_S:.0f} s",
            seconds <= fanout.GOAL_S,
        )
    ]


def discovery_rows(result: dict[str, Any]) -> list[Row]:
    count = f"{result['count']:,}".replace(",", " ")
    resolve, cli, cli_one = result["resolve_ms"], result["cli_ms"], result["cli_one_ms"]
    goal = discovery.GOAL_MS
    return [
        row(
            f"prefix resolution among {count} sandbox dirs (`resolve_sandbox`)",
            f"{resolve:.1f} ms",
            goal=f"≤ {goal:.0f} ms",
            met=resolve <= goal,
        ),
        row(
            "… the whole `exec --console PREFIX true` on a dead socket, vs a root of 1 dir",
            f"{cli:.1f} ms",
            f"{cli / cli_one:.2f}x",
            f"≤ 1 dir + {goal:.0f} ms",
            cli <= cli_one + goal,
        ),
    ]


def markdown(rows: list[Row]) -> str:
    lines = ["| measure | now | ratio | goal | met |", "|---|---|---|---|---|"]
    lines += [f"| {r['measure']} | {r['now']} | {r['ratio']} | {r['goal']} | {r['met']} |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip", action="append", default=[], choices=SECTIONS, help="leave a section out")
    parser.add_argument("--quick", action="store_true", help="fewer runs and sandboxes (a smoke run)")
    parser.add_argument("--size", type=int, default=10, help="MiB of output for throughput (default 10)")
    parser.add_argument("--ttrpc-args", default="--uvloop", help="arguments for ttrpc_rate.py")
    parser.add_argument("--json", default=str(BENCH / "results.json"), help="results file")
    args = parser.parse_args()
    quick = args.quick
    started = time.time()
    raw: dict[str, Any] = {}
    rows: list[Row] = []
    notes: list[str] = []

    def latency() -> None:
        raw["latency"] = exec_latency.measure(5 if quick else 30)
        rows.extend(latency_rows(raw["latency"]))
        if raw["latency"]["protobuf_on_console_path"]:
            notes.append("protobuf was imported on the console exec path (a regression)")

    def throughput() -> None:
        if shutil.which("socat") is None:
            notes.append("throughput skipped: socat is not installed (apt-get install socat)")
            return
        raw["throughput"] = exec_throughput.measure(args.size, 1 if quick else 11)
        rows.extend(throughput_rows(raw["throughput"]))

    def ttrpc() -> None:
        command = [sys.executable, str(BENCH / "ttrpc_rate.py"), *args.ttrpc_args.split()]
        if quick:
            command += ["--seconds", "0.5"]
        done = subprocess.run(command, capture_output=True, text=True, env=ENV, check=False)
        parsed, ttrpc_notes = parse_ttrpc(done.stdout)
        raw["ttrpc"] = {"command": command[1:], "rows": parsed, "notes": ttrpc_notes, "exit": done.returncode}
        rows.extend(ttrpc_rows(parsed))
        notes.extend(ttrpc_notes)
        if done.returncode != 0 or not parsed:
            last = done.stderr.strip().splitlines()[-1:] or ["no output"]
            notes.append(f"ttrpc_rate.py exited {done.returncode}: {last[0]}")

    def fan_out() -> None:
        raw["fanout"] = fanout.measure(20 if quick else 100, 1 if quick else 3)
        rows.extend(fanout_rows(raw["fanout"]))

    def resolution() -> None:
        raw["discovery"] = discovery.measure(1000 if quick else 10_000, 3 if quick else 5)
        rows.extend(discovery_rows(raw["discovery"]))

    sections = dict(zip(SECTIONS, (latency, throughput, ttrpc, fan_out, resolution), strict=True))
    for name, section in sections.items():
        if name in args.skip:
            continue
        print(f"[{time.time() - started:5.0f} s] {name} ...", file=sys.stderr, flush=True)
        try:
            section()
        except Exception as exc:  # one broken section must not cost the others' numbers
            traceback.print_exc()
            notes.append(f"{name} failed: {type(exc).__name__}: {exc}")
    if "throughput" in raw:
        rows.append(rss_row(raw["throughput"]))

    load = os.getloadavg()[0]
    machine = (
        f"{os.cpu_count()} cores, load {load:.2f} at the end, Python {platform.python_version()}, "
        f"{time.time() - started:.0f} s in all" + (", --quick" if quick else "")
    )
    print(markdown(rows))
    print(f"\n{machine}")
    for note in notes:
        print(f"note: {note}")
    record = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "machine": {"cpus": os.cpu_count(), "load_end": load, "python": platform.python_version()},
        "quick": quick,
        "table": rows,
        "notes": notes,
        "raw": raw,
    }
    Path(args.json).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
