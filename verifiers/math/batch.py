"""`r1f verify math`: stream a JSONL file of (gold, completion) rows through a MathVerifier.

Every output row is its input row, in the same order, with `verdict`,
`reason` and `extracted` added (other fields pass through untouched).

Bad input, decided per case:

- a line that is not a JSON object raises ValueError naming the file and the
  line: the file itself is broken, and guessing would shift every row after it;
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
    `unverifiable`) and `reasons` (count per reason code). `progress(n)` is
    called with the number of rows finished since its last call.
    """
    source = Path(input_path)
    # Rows wait here, in order, until their verdict comes back: the verifier
    # reads a window of pairs ahead of the verdicts it yields.
    waiting: deque[tuple[dict[str, Any], str | None]] = deque()

    def pairs() -> Iterator[tuple[str, str]]:
        for row in _read(source):
            problem = _problem(row)
            waiting.append((row, problem))
            # A bad row still takes its place in the stream; its verdict is replaced below.
            yield ("", "") if problem else (_text(row["gold"]), _text(row["completion"]))

    verdicts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    target = Path(output_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with MathVerifier(workers=workers, timeout=timeout) as verifier, target.open("w") as out:
        for verdict in verifier.verify_iter(pairs(), progress=progress):
            row, problem = waiting.popleft()
            if problem is not None:
                verdict = Verdict("unverifiable", f"{BAD_INPUT}: {problem}")
            row.update(verdict.as_dict())
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            verdicts[verdict.verdict] += 1
            reasons[verdict.reason] += 1
    return {
        "rows": sum(verdicts.values()),
        "correct": verdicts["correct"],
        "incorrect": verdicts["incorrect"],
        "unverifiable": verdicts["unverifiable"],
        "reasons": dict(reasons.most_common()),
    }


def _read(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"{path}:{number}: not valid JSON ({error.msg}); "
                    "each line must be one JSON object with 'gold' and 'completion'"
                ) from None
            if not isinstance(row, dict):
                raise ValueError(
                    f"{path}:{number}: a JSON {type(row).__name__}, expected an object "
                    "with 'gold' and 'completion'"
                )
            yield row


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
