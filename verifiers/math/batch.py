"""`r1f verify math`: stream a JSONL file of (gold, completion) rows through a MathVerifier.

Every output row is its input row, in the same order, with `verdict`,
`reason` and `extracted` added (other fields pass through untouched). The
output is written atomically: a temporary file beside it, renamed into place
once every row is judged, so an output that is also the input is replaced
only after it has been read to the end.

Bad input, decided per case; every input line gets an output row:

- a line that is not a JSON object (invalid JSON or UTF-8, a lone surrogate,
  an array; see `store.jsonl`) becomes a row holding its text as `raw`, its
  `line` and a `message` (`line N: reason`), with verdict `unverifiable` and reason
  `bad_input: invalid JSON` (or `not UTF-8`, ...); the rest of the file is
  judged as usual, the same rule as `r1f verify code`;
- a row without a usable `gold` or `completion` (missing, null, or neither a
  string nor a number) is kept, with verdict `unverifiable` and reason
  `bad_input: missing 'gold'` (or `null`, or `not a string`), so that one bad
  row does not cost the run. Numbers are read as their decimal text.
"""

from __future__ import annotations

import json
from collections import Counter, deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from store.jsonl import BadLine, BadLines, atomic_output, dumps_row, read_jsonl
from verifiers.math.pool import MathVerifier
from verifiers.math.verdict import BAD_INPUT, Verdict


def verify_jsonl(
    input_path: str | Path,
    output_path: str | Path,
    *,
    timeout: float,
    workers: int,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Verify every row of `input_path` into `output_path`; returns counts.

    The summary holds `rows`, one count per verdict (`correct`, `incorrect`,
    `unverifiable`), `reasons` (count per reason code), `bad_lines` and
    `bad_line_examples`. `progress(n)` is called with the number of rows
    finished since its last call.
    """
    source = Path(input_path)
    bad_lines = BadLines(source)
    # Rows wait here, in order, until their verdict comes back: the verifier
    # reads a window of pairs ahead of the verdicts it yields.
    waiting: deque[tuple[dict[str, Any], str | None]] = deque()

    def pairs() -> Iterator[tuple[str, str]]:
        for number, row in read_jsonl(source):
            if isinstance(row, BadLine):
                bad_lines.add(number, row.reason)
                waiting.append(_bad_line_row(row))
                yield "", ""
                continue
            problem = _problem(row)
            waiting.append((row, problem))
            # A bad row still takes its place in the stream; its verdict is replaced below.
            yield ("", "") if problem else (_text(row["gold"]), _text(row["completion"]))

    verdicts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    with (
        MathVerifier(workers=workers, timeout=timeout) as verifier,
        atomic_output(output_path) as out,
    ):
        for verdict in verifier.verify_iter(pairs(), progress=progress):
            row, problem = waiting.popleft()
            if problem is not None:
                verdict = Verdict("unverifiable", f"{BAD_INPUT}: {problem}")
            row.update(verdict.as_dict())
            out.write(dumps_row(row))
            verdicts[verdict.verdict] += 1
            reasons[verdict.reason] += 1
    return {
        "rows": sum(verdicts.values()),
        "correct": verdicts["correct"],
        "incorrect": verdicts["incorrect"],
        "unverifiable": verdicts["unverifiable"],
        "reasons": dict(reasons.most_common()),
        **bad_lines.to_dict(),
    }


def _bad_line_row(bad: BadLine) -> tuple[dict[str, Any], str]:
    """The output row of a line that is not a JSON object: its text, kept so nothing is lost."""
    return {"line": bad.line, "raw": bad.raw, "message": f"line {bad.line}: {bad.reason}"}, bad.kind


def _problem(row: dict[str, Any]) -> str | None:
    for key in ("gold", "completion"):
        if key not in row:
            return f"missing '{key}'"
        value = row[key]
        if value is None:
            return f"'{key}' is null"
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            return f"'{key}' is not a string"
    return None


def _text(value: str | float) -> str:
    return value if isinstance(value, str) else json.dumps(value)
