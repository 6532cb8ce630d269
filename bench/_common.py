"""Shared helpers for the benchmarks in bench/: timing, peak RSS, child steps, output.

Every benchmark follows the same contract (ARCHITECTURE.md, "Benchmarks"):
`python bench/NAME.py` measures, `--quick` measures small, both print a
readable table and end with one line holding a single JSON object. Steps whose
memory matters run in their own child process, so the peak RSS reported for a
step is that process's alone and not the high-water mark of everything before.

This file is not a benchmark; run as a script it says so and exits 0 (the
Makefile's `bench` target runs every bench/*.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

GB = 1024**3


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far (all threads)."""
    # On Linux read VmHWM, the high-water mark of this process image alone:
    # getrusage's ru_maxrss survives exec, so a child started by a big parent
    # would report the parent's size at fork time as its own peak.
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # macOS: bytes; else KiB


def peak_rss_gb() -> float:
    return peak_rss_bytes() / GB


class Stopwatch:
    """`with Stopwatch() as sw: ...` then `sw.seconds` (wall) and `sw.cpu_seconds`.

    CPU time covers every thread of this process (Arrow and Rust workers
    included); on a shared machine it moves much less than wall time does.
    """

    def __init__(self) -> None:
        self.start = self.cpu_start = 0.0
        self.seconds = self.cpu_seconds = 0.0

    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        self.cpu_start = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
        self.cpu_seconds = time.process_time() - self.cpu_start


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all processes)."""
    t = psutil.cpu_times()
    return (
        t.user
        + t.system
        + getattr(t, "nice", 0.0)
        + getattr(t, "irq", 0.0)
        + getattr(t, "softirq", 0.0)
    )


def _children_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _own_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@dataclass
class StepOutcome:
    """What a child step reported, plus what the parent saw of it."""

    name: str
    ok: bool
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    # Wall time of the whole child (interpreter start and imports included) and
    # the highest RSS the parent's watchdog sampled: cross-checks for the
    # child's own figures, which cover only the measured work.
    process_s: float = 0.0
    sampled_peak_rss_gb: float = 0.0
    # Share of the machine's CPU capacity that *other* processes used while the
    # step ran (0.0: the step had the machine to itself; 0.5 on 2 cores: another
    # job kept a whole core busy). High values mean inflated wall times.
    others_cpu_share: float = 0.0


def run_child(
    name: str,
    argv: Sequence[str],
    result_path: Path,
    *,
    timeout_s: float,
    rss_cap_gb: float,
    poll_s: float = 0.2,
) -> StepOutcome:
    """Run one measured step as a child process and read the JSON it leaves at `result_path`.

    The child writes its figures to `result_path` (see `write_result`); its
    stdout and stderr pass straight through so progress stays visible. A
    watchdog kills the child past `timeout_s` or above `rss_cap_gb`, so a
    runaway step fails the benchmark instead of taking the machine down.
    """
    result_path.unlink(missing_ok=True)
    busy0, children0, own0 = busy_cpu_seconds(), _children_cpu_seconds(), _own_cpu_seconds()
    started = time.perf_counter()
    proc = subprocess.Popen(list(argv))
    ps = psutil.Process(proc.pid)
    sampled = 0
    killed: str | None = None
    while proc.poll() is None:
        with contextlib.suppress(psutil.Error):  # the child may exit between poll and sample
            sampled = max(sampled, ps.memory_info().rss)
        elapsed = time.perf_counter() - started
        if elapsed > timeout_s:
            killed = f"killed after {elapsed:.0f} s (limit {timeout_s:.0f} s)"
        elif sampled > rss_cap_gb * GB:
            killed = f"killed at {sampled / GB:.1f} GB RSS (cap {rss_cap_gb:.0f} GB)"
        if killed:
            proc.kill()
            proc.wait()
            break
        time.sleep(poll_s)
    wall = time.perf_counter() - started
    ours = (_children_cpu_seconds() - children0) + (_own_cpu_seconds() - own0)
    others = max(0.0, busy_cpu_seconds() - busy0 - ours)
    outcome = StepOutcome(
        name=name,
        ok=False,
        process_s=wall,
        sampled_peak_rss_gb=sampled / GB,
        others_cpu_share=others / (wall * (os.cpu_count() or 1)) if wall > 0 else 0.0,
    )
    if killed:
        outcome.error = killed
    elif proc.returncode != 0:
        outcome.error = f"exit status {proc.returncode}"
    elif not result_path.is_file():
        outcome.error = "finished without writing its result"
    else:
        outcome.result = json.loads(result_path.read_text())
        outcome.ok = True
    return outcome


def write_result(path: Path, result: dict[str, Any]) -> None:
    """Called by a child at the end of its step; adds the child's own peak RSS."""
    payload = {**result, "peak_rss_gb": round(peak_rss_gb(), 3)}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain aligned text table: numbers right-aligned, text left-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    numeric = [
        all(isinstance(row[i], int | float) or row[i] is None for row in rows)
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        out = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(out).rstrip()

    print(line(list(headers)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print(line(row))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def emit_json(figures: dict[str, Any]) -> None:
    """The final line of every benchmark: one JSON object with every figure."""
    print(json.dumps(figures, separators=(", ", ": ")), flush=True)


def rounded(value: float, digits: int = 3) -> float:
    return round(value, digits)


if __name__ == "__main__":
    print("bench/_common.py holds helpers for the benchmarks; nothing to measure here.")
