"""`r1f verify code`: verify a JSONL file of completions with tests, streaming, in order.

Each input row carries `completion` and `tests` (ARCHITECTURE.md); the
output row is the input row with `verdict`, `detail` and `message` added.
Rows are read lazily and written in input order, with a bounded number in
flight, so memory stays flat whatever the file's size. Lines are read by
`store.jsonl.read_jsonl`, as in every command: a line that is not a JSON
object gets a `bad_input` row holding its text (`raw`) and the rest of the
file is judged. The output is written atomically (a temporary file renamed
into place at the end), so it may be the input itself.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from store.jsonl import BadLine, BadLines, atomic_output, dumps_row, read_jsonl
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
    run here. On Ctrl-C the sandboxes are killed at once and the output is
    left as it was.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    started = time.perf_counter()
    source = Path(input_path)
    bad_lines = BadLines(source)
    verdicts: Counter[str] = Counter()
    details: Counter[str] = Counter()
    pool = SandboxPool(workers, config)
    executor = ThreadPoolExecutor(workers, thread_name_prefix="verify-code")
    try:
        with atomic_output(output_path) as sink:
            window: deque[Future[dict[str, Any]]] = deque()

            def write_oldest() -> None:
                row = window.popleft().result()
                verdicts[row["verdict"]] += 1
                details[row["detail"]] += 1
                sink.write(dumps_row(row))
                if progress is not None:
                    progress(1)

            for number, row in read_jsonl(source):
                if isinstance(row, BadLine):
                    bad_lines.add(number, row.reason)
                    # Nothing to pass through but the text itself, kept so no input is lost.
                    kept = {"line": number, "raw": row.raw}
                    window.append(_done(_bad(number, kept, row.reason)))
                else:
                    window.append(executor.submit(_verify_row, number, row, pool, timeout))
                if len(window) >= workers * IN_FLIGHT_PER_WORKER:
                    write_oldest()
            while window:
                write_oldest()
    except BaseException:
        # Ctrl-C or a failure: end the sandboxes now rather than after the runs in
        # flight, and drop the queued rows, so the command stops within a moment.
        executor.shutdown(wait=False, cancel_futures=True)
        pool.kill()
        raise
    finally:
        executor.shutdown(wait=True)
        pool.close()
    seconds = time.perf_counter() - started
    rows = sum(verdicts.values())
    return {
        "rows": rows,
        **{v: verdicts[v] for v in ("correct", "incorrect", "unverifiable")},
        "details": dict(sorted(details.items())),
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds, 2) if seconds > 0 else 0.0,
        **bad_lines.to_dict(),
    }


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
