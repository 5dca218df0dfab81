"""What every bench shares: how kuasarctl is run, the environment, medians of wall times."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

#: ``kuasarctl`` as users run it: the console script installed beside this interpreter (``python -m
#: kuasar.ctl`` when there is none: runpy adds about 3 ms).
_SCRIPT = os.path.join(os.path.dirname(sys.executable), "kuasarctl")
CTL = [_SCRIPT] if os.access(_SCRIPT, os.X_OK) else [sys.executable, "-m", "kuasar.ctl"]

#: Measure as users run it: with bytecode caches written (some CI images set PYTHONDONTWRITEBYTECODE,
#: which makes every run recompile kuasar's modules).
ENV = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}


def wall_ms(command: list[str], *, check: bool = True) -> float:
    """One run of ``command`` (stdin and stdout /dev/null), in milliseconds.

    With ``check`` a failure raises ``CalledProcessError`` (stderr is shown); without it, the
    command is expected to fail and its stderr is discarded too.
    """
    started = time.perf_counter()
    result = subprocess.run(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=None if check else subprocess.DEVNULL,
        env=ENV,
        check=False,
    )
    elapsed = (time.perf_counter() - started) * 1000
    if check and result.returncode != 0:
        raise subprocess.CalledProcessError(result.returncode, command)
    return elapsed


def median_ms(command: list[str], runs: int, *, check: bool = True) -> float:
    """The median wall time of ``runs`` runs of ``command``, in milliseconds."""
    return statistics.median(wall_ms(command, check=check) for _ in range(runs))
