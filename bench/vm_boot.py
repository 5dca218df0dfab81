"""A real-kernel sandbox (``sandbox run --vmm qemu``) against a local sandbox, measured in the same run.

Builds (or reuses) the guest image, then times, each a median:
  launch    ``kuasarctl sandbox run --vmm qemu`` until it returns (the agent answers), --boots
            boots one after another, against ``kuasarctl sandbox run`` of a local sandbox; and
            ``sandbox stop`` of each
  true      ``kuasarctl exec -t ID true`` in the VM and in the local sandbox (--runs)
  cat       ``kuasarctl exec -i ID cat``, --size MiB stdin -> stdout (host -> guest -> host), VM
            against local
  device    the vsock device each way, the same commands in the local sandbox as the baseline:
            host -> guest  ``exec -i ID sh -c 'cat >/dev/null'`` with --size MiB on stdin, and
                           ``kuasarctl cp FILE ID:/tmp/...``
            guest -> host  ``exec -t ID head -c SIZE /dev/zero``, read to EOF
            with the device process's and QEMU's CPU seconds for each transfer (``device_pid``
            and ``agent_pid`` in ``ROOT/ID/sandbox.json``; ``/proc/PID/stat`` utime + stime)
and prints them as a Markdown table with the VM / local ratios. Numbers only, no asserts; one VM
at a time (every boot is stopped before the next starts); every sandbox is stopped on every exit.
Another QEMU seen on the host during the run (a shared machine) is named under the table.

Throughputs are MB/s (10^6 bytes) of whole commands, CLI start-up included, as the facts file
counts them. What ../shared/vhost-user-vsock-facts.md measured for the device alone under TCG on
a loaded host, with a raw socket client (no kuasarctl): 20-39 MB/s each way host -> guest -> host
(50 MB echo), 60-104 MB/s guest -> host only, and 5.2-7.1 s from QEMU launch to the first echo
(a busybox guest, not Python as PID 1).

Set KUASAR_VM_CACHE to reuse an image cache (default ~/.cache/kuasar-py/vm). Needs
qemu-system-x86 and busybox-static; about 2 minutes on 2 cores under TCG.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import CTL, ENV, median_ms

VM_ID = "bench-vm"
LOCAL_ID = "bench-local"
_TICK = os.sysconf("SC_CLK_TCK")


def _record(root: str, sandbox_id: str) -> dict[str, Any]:
    try:
        with open(os.path.join(root, sandbox_id, "sandbox.json")) as file:
            record: dict[str, Any] = json.load(file)
    except (OSError, ValueError):
        return {}
    return record


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of ``pid`` in seconds (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            fields = file.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK  # fields 14 and 15 of proc(5)


def other_vms(own: int = 0) -> list[int]:
    """PIDs of the QEMU processes on this host other than ``own`` (a shared machine: they skew the
    numbers, and the table says so)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != own:
            with contextlib.suppress(OSError), open(f"/proc/{entry}/comm") as file:
                if file.read().startswith("qemu-system"):
                    found.append(int(entry))
    return found


def _run(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=ENV, check=True)
    return time.perf_counter() - started


def start(root: str, sandbox_id: str, *, vm: bool) -> float:
    """``sandbox run`` of one sandbox; seconds until it returned (its agent answers)."""
    extra = ["--vmm", "qemu"] if vm else []
    return _run([*CTL, "sandbox", "run", *extra, "-d", root, "--name", sandbox_id])


def stop(root: str, sandbox_id: str) -> float:
    """``sandbox stop``; seconds. A QEMU or device process still there afterwards is killed."""
    pids = [_record(root, sandbox_id).get(key, 0) for key in ("agent_pid", "device_pid", "supervisor_pid")]
    started = time.perf_counter()
    subprocess.run(
        [*CTL, "sandbox", "stop", "-d", root, sandbox_id],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        env=ENV,
        check=False,
    )
    elapsed = time.perf_counter() - started
    for pid in pids:
        if pid and cpu_seconds(pid) is not None:
            time.sleep(1.0)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return elapsed


@contextlib.contextmanager
def running(root: str, sandbox_id: str, *, vm: bool) -> Iterator[float]:
    """A started sandbox (yields its launch-to-ready seconds), stopped on every exit."""
    try:
        yield start(root, sandbox_id, vm=vm)
    finally:
        if os.path.isdir(os.path.join(root, sandbox_id)):
            stop(root, sandbox_id)


def stream(argv: list[str], stdin_path: str | None = None) -> tuple[float, int]:
    """Run ``argv`` with ``stdin_path`` (or /dev/null) as stdin; seconds and stdout bytes read."""
    started = time.perf_counter()
    with open(stdin_path or os.devnull, "rb") as source:
        process = subprocess.Popen(argv, stdin=source, stdout=subprocess.PIPE, env=ENV)
        assert process.stdout is not None
        count = 0
        while chunk := process.stdout.read(1 << 16):
            count += len(chunk)
        status = process.wait()
    elapsed = time.perf_counter() - started
    if status != 0:
        raise subprocess.CalledProcessError(status, argv)
    return elapsed, count


def transfers(root: str, sandbox_id: str, big: str, size: int, runs: int) -> dict[str, Any]:
    """Median seconds of each transfer, the bytes that came back, and the CPU seconds per run of
    the device process and QEMU (VM only)."""
    record = _record(root, sandbox_id)
    processes = {"device": record.get("device_pid", 0), "qemu": record.get("agent_pid", 0)}
    base = ["-d", root, sandbox_id]
    jobs = {
        "cat": ([*CTL, "exec", "-i", *base, "cat"], big, size),
        "to_guest": ([*CTL, "exec", "-i", *base, "sh", "-c", "cat >/dev/null"], big, 0),
        "cp_in": ([*CTL, "cp", "-q", "-d", root, big, f"{sandbox_id}:/tmp/bench-cp.bin"], None, 0),
        "from_guest": ([*CTL, "exec", "-t", *base, "head", "-c", str(size), "/dev/zero"], None, size),
    }
    result: dict[str, Any] = {}
    for name, (argv, stdin_path, expected) in jobs.items():
        before = {key: cpu_seconds(pid) if pid else None for key, pid in processes.items()}
        samples = [stream(argv, stdin_path) for _ in range(runs)]
        after = {key: cpu_seconds(pid) if pid else None for key, pid in processes.items()}
        cpu = {
            key: (after[key] - value) / runs if value is not None and after[key] is not None else None
            for key, value in before.items()
        }
        result[name] = {
            "seconds": statistics.median(s for s, _ in samples),
            "samples": [s for s, _ in samples],
            "bytes_out": [n for _, n in samples],
            "bytes_expected": expected,
            "cpu_s_per_run": cpu,
        }
    return result


def measure(boots: int = 3, runs: int = 15, size_mib: int = 20, tput_runs: int = 3) -> dict[str, Any]:
    """Every number of the table; seconds unless the key says ms."""
    from kuasar.vmm import image

    started = time.perf_counter()
    built = image.build()
    image_s = time.perf_counter() - started
    size = size_mib << 20
    root = tempfile.mkdtemp(prefix="ksrvm", dir="/tmp")
    big = os.path.join(root, "big.bin")
    with open(big, "wb") as file:
        for _ in range(size_mib):
            file.write(os.urandom(1 << 20))
    out: dict[str, Any] = {
        "boots": boots,
        "runs": runs,
        "size_mib": size_mib,
        "tput_runs": tput_runs,
        "image": {"seconds": image_s, "built": built.built, "initrd_bytes": built.initrd.stat().st_size},
        "kernel": built.release,
    }
    seen: list[list[Any]] = []

    def look(when: str, own: int = 0) -> None:
        pids = other_vms(own)
        if pids:
            seen.append([when, pids])

    try:
        for kind, sandbox_id, vm in (("local", LOCAL_ID, False), ("vm", VM_ID, True)):
            launch, halt = [], []
            for boot in range(boots - 1):
                look(f"{kind} start {boot + 1}")
                launch.append(start(root, sandbox_id, vm=vm))
                look(f"{kind} start {boot + 1}", _record(root, sandbox_id).get("agent_pid", 0))
                halt.append(stop(root, sandbox_id))
            look(f"{kind} start {boots}")
            with running(root, sandbox_id, vm=vm) as last:
                launch.append(last)
                record = _record(root, sandbox_id)
                look(f"{kind} start {boots}", record.get("agent_pid", 0))
                base = [*CTL, "exec", "-t", "-d", root, sandbox_id]
                median_ms([*base, "true"], 2)  # warm caches (and the guest's page cache)
                section: dict[str, Any] = {
                    "launch_s": launch,
                    "true_ms": median_ms([*base, "true"], runs),
                    "accel": record.get("accel", ""),
                    "transfers": transfers(root, sandbox_id, big, size, tput_runs),
                }
                if vm:
                    free = subprocess.run(
                        [*base, "free", "-m"], capture_output=True, text=True, env=ENV, check=False
                    )
                    section["free_m"] = free.stdout
                    section["device_cpu_s_total"] = cpu_seconds(record.get("device_pid", 0) or -1)
                look(f"{kind} exec and transfers", record.get("agent_pid", 0))
                halt.append(stop(root, sandbox_id))
            section["stop_s"] = halt
            out[kind] = section
        out["python_c_pass_ms"] = median_ms([sys.executable, "-c", "pass"], runs)
        out["other_vms_seen"] = seen
        out["loadavg"] = os.getloadavg()
    finally:
        for sandbox_id in (LOCAL_ID, VM_ID):
            if os.path.isdir(os.path.join(root, sandbox_id)):
                stop(root, sandbox_id)
        shutil.rmtree(root, ignore_errors=True)
    return out


def _rate(size: int, seconds: float) -> float:
    return size / seconds / 1e6


def table(result: dict[str, Any]) -> list[str]:
    local, vm = result["local"], result["vm"]
    size = result["size_mib"] << 20
    mib = result["size_mib"]
    boots, runs, tput = result["boots"], result["runs"], result["tput_runs"]
    rows = [
        "| measure | VM (QEMU, {}) | local sandbox | VM / local |".format(vm["accel"] or "?"),
        "|---|---|---|---|",
    ]
    vm_up, local_up = statistics.median(vm["launch_s"]), statistics.median(local["launch_s"])
    rows.append(
        f"| `sandbox run` launch-to-ready, median of {boots} | {vm_up:.2f} s "
        f"(range {min(vm['launch_s']):.2f}-{max(vm['launch_s']):.2f}) | {local_up:.2f} s "
        f"| {vm_up / local_up:.1f}x |"
    )
    vm_down, local_down = statistics.median(vm["stop_s"]), statistics.median(local["stop_s"])
    rows.append(
        f"| `sandbox stop`, median of {boots} | {vm_down:.2f} s | {local_down:.2f} s | "
        f"{vm_down / local_down:.1f}x |"
    )
    rows.append(
        f"| `exec -t ID true`, median of {runs} | {vm['true_ms']:.1f} ms | {local['true_ms']:.1f} ms | "
        f"{vm['true_ms'] / local['true_ms']:.2f}x |"
    )
    labels = {
        "cat": f"`exec -i ID cat`, {mib} MiB stdin → stdout (host → guest → host)",
        "to_guest": f"host → guest: `exec -i ID sh -c 'cat >/dev/null'`, {mib} MiB stdin",
        "cp_in": f"host → guest: `cp` of a {mib} MiB file in",
        "from_guest": f"guest → host: `exec -t ID head -c {size} /dev/zero` read to EOF",
    }
    for name, label in labels.items():
        in_vm, here = vm["transfers"][name], local["transfers"][name]
        vm_rate, local_rate = _rate(size, in_vm["seconds"]), _rate(size, here["seconds"])
        rows.append(
            f"| {label}, median of {tput} | {vm_rate:.1f} MB/s ({in_vm['seconds']:.2f} s) | "
            f"{local_rate:.1f} MB/s ({here['seconds']:.2f} s) | {vm_rate / local_rate:.2f}x |"
        )
    short = {
        "cat": "cat round trip",
        "to_guest": "exec stdin in",
        "cp_in": "cp in",
        "from_guest": "exec stdout out",
    }
    for name, what in short.items():
        cpu = vm["transfers"][name]["cpu_s_per_run"]
        device, qemu = cpu.get("device"), cpu.get("qemu")
        if device is None or qemu is None:
            continue
        moved = size * (2 if name == "cat" else 1) / 1e6
        rows.append(
            f"| … CPU per {what} ({moved:.0f} MB through the device) | device {device:.2f} s "
            f"({device / moved * 1000:.1f} ms/MB), QEMU {qemu:.2f} s | — | — |"
        )
    image_info = result["image"]
    rows.append(
        f"| guest image ({result['kernel']}): initramfs, "
        + ("built now" if image_info["built"] else "cached")
        + f" | {image_info['initrd_bytes'] / 1e6:.2f} MB gz, {image_info['seconds']:.2f} s | — | — |"
    )
    rows.append(
        f"| `python -c pass` (the interpreter's floor) | — | {result['python_c_pass_ms']:.1f} ms | — |"
    )
    return rows


def notes(result: dict[str, Any]) -> list[str]:
    said = []
    for kind in ("vm", "local"):
        for name, info in result[kind]["transfers"].items():
            expected = info["bytes_expected"]
            if expected and any(count != expected for count in info["bytes_out"]):
                said.append(f"{kind} {name}: read {info['bytes_out']} bytes, expected {expected} each run")
    if result["other_vms_seen"]:
        when = sorted({what for what, _ in result["other_vms_seen"]})
        said.append("another QEMU was running on this host (numbers skewed) around: " + "; ".join(when))
    said.append("load average at the end: " + " ".join(f"{x:.2f}" for x in result["loadavg"]))
    free = result["vm"].get("free_m", "").strip().splitlines()
    if len(free) > 1:
        said.append("guest `free -m`: " + " ".join(free[1].split()))
    return said


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--boots", type=int, default=3, help="VM boots (and local starts), default 3")
    parser.add_argument("--runs", type=int, default=15, help="runs of exec true, default 15")
    parser.add_argument("--size", type=int, default=20, help="MiB per transfer, default 20")
    parser.add_argument("--tput-runs", type=int, default=3, help="runs per transfer, default 3")
    parser.add_argument("--json", metavar="FILE", help="also write the raw numbers to FILE")
    args = parser.parse_args()
    if shutil.which("qemu-system-x86_64") is None:
        print("qemu-system-x86_64 is not installed: apt-get install qemu-system-x86")
        return 1
    result = measure(max(1, args.boots), args.runs, args.size, args.tput_runs)
    print("\n".join(table(result)))
    for line in notes(result):
        print(f"\n{line}")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(result, file, indent=1)
            file.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
