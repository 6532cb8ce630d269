"""`r1f verify code`: verify a JSONL file of completions with tests, streaming, in order.

Each input row carries `completion` and `tests` (ARCHITECTURE.md); the
output row is the input row with `verdict`, `detail` and `message` added.
Rows are read lazily and written in input order, with a bounded number in
flight, so memory stays flat whatever the file's size.
"""

from __future__ import annotations

import json
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from verifiers.code.check import CodeVerdict, verify_code
from verifiers.code.sandbox import SandboxConfig, SandboxPool

# Rows queued per worker: enough to keep every worker busy while the oldest row finishes.
IN_FLIGHT_PER_WORKER = 4


def verify_jsonl(
    input_path: str | Path,
    output_path: str | Path,
    *,
    workers: int,
    timeout: float,
    progress: Callable[[int], None] | None = None,
    config: SandboxConfig | None = None,
) -> dict[str, Any]:
    """Verify every row of `input_path` into `output_path`; return summary counts.

    `workers` sandboxes run in parallel; `timeout` is the wall-clock limit of
    one run (one stdio case, or one assert run). `progress(n)` is called with
    the number of rows finished since its last call. A row that is not a JSON
    object, or whose `completion` or `tests` are malformed, gets `unverifiable`
    with detail `bad_input` and a `message` naming the problem. Raises
    SandboxUnavailable, before anything is written, when the sandbox cannot
    run here.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    started = time.perf_counter()
    verdicts: Counter[str] = Counter()
    details: Counter[str] = Counter()
    with (
        SandboxPool(workers, config) as pool,
        ThreadPoolExecutor(workers, thread_name_prefix="verify-code") as executor,
        open(input_path, encoding="utf-8") as source,
        open(output_path, "w", encoding="utf-8") as sink,
    ):
        window: deque[Future[dict[str, Any]]] = deque()

        def write_oldest() -> None:
            row = window.popleft().result()
            verdicts[row["verdict"]] += 1
            details[row["detail"]] += 1
            sink.write(json.dumps(row, ensure_ascii=False) + "\n")
            if progress is not None:
                progress(1)

        for number, line, row, problem in _rows(source):
            if row is None:
                # Nothing to pass through but the text itself, kept so no input is lost.
                window.append(_done(_bad(number, {"raw": line.rstrip("\n")}, problem)))
            else:
                window.append(executor.submit(_verify_row, number, row, pool, timeout))
            if len(window) >= workers * IN_FLIGHT_PER_WORKER:
                write_oldest()
        while window:
            write_oldest()
    seconds = time.perf_counter() - started
    rows = sum(verdicts.values())
    return {
        "rows": rows,
        **{v: verdicts[v] for v in ("correct", "incorrect", "unverifiable")},
        "details": dict(sorted(details.items())),
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds, 2) if seconds > 0 else 0.0,
    }


def _rows(source: Iterable[str]) -> Iterator[tuple[int, str, dict[str, Any] | None, str]]:
    """(line number, line, row, problem) for every non-blank line; row is None and
    problem says why when the line is not a JSON object."""
    for number, line in enumerate(source, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            yield number, line, None, f"not valid JSON ({exc})"
            continue
        if not isinstance(row, dict):
            yield number, line, None, f"expected a JSON object, got {type(row).__name__}"
            continue
        yield number, line, row, ""


def _verify_row(
    number: int, row: dict[str, Any], pool: SandboxPool, timeout: float
) -> dict[str, Any]:
    if not isinstance(row.get("completion"), str):
        return _bad(number, row, "completion: expected a string")
    if "tests" not in row:
        return _bad(number, row, "tests: missing")
    verdict = verify_code(row["completion"], row["tests"], pool, timeout=timeout)
    if verdict.detail == "bad_input":
        return _bad(number, row, verdict.message)
    return _with(row, verdict)


def _bad(number: int, row: dict[str, Any], problem: str) -> dict[str, Any]:
    return _with(row, CodeVerdict("unverifiable", "bad_input", f"line {number}: {problem}"))


def _with(row: dict[str, Any], verdict: CodeVerdict) -> dict[str, Any]:
    return {**row, "verdict": verdict.verdict, "detail": verdict.detail, "message": verdict.message}


def _done(row: dict[str, Any]) -> Future[dict[str, Any]]:
    future: Future[dict[str, Any]] = Future()
    future.set_result(row)
    return future
