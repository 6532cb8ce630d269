"""Judge stored samples: run the verifiers over a table version and commit the verdicts.

A plain function, so tests and the demo call it directly; a Prefect flow
will wire it as a task. Which verifiers a sample gets depends on its domain:

- `math`: the math verifier against `gold` (a countdown gold is checked by
  evaluating the answer);
- `code`: the sandboxed code verifier, with `gold` holding the tests as JSON;
- every sample: the R1 format check.

Verdicts replace earlier verdicts of the same verifier, so a rerun with the
same verifier versions changes nothing and makes no new version.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

from store.lineage import Lineage, TableRef
from store.store import Store


@dataclass(frozen=True)
class JudgeReport:
    table: str
    judged_version: int
    version: int  # the table's version after the verdicts were committed
    rows: int
    changed: int
    verdicts: dict[str, dict[str, int]]  # verifier -> verdict -> rows


def _merge_verdicts(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    replaced = {v["verifier"] for v in new}
    return [v for v in old if v["verifier"] not in replaced] + new


def judge_table(
    store: Store,
    table: str,
    *,
    lineage: Lineage,
    version: int | None = None,
    workers: int = 2,
    math_timeout: float = 5.0,
    code_timeout: float = 10.0,
) -> JudgeReport:
    """Verify every sample of `table@version` and upsert the rows whose verdicts changed."""
    from verifiers.format import VERSION as FORMAT_VERSION
    from verifiers.format import check_r1_format
    from verifiers.math import VERSION as MATH_VERSION
    from verifiers.math import MathVerifier

    version = store.latest_version(table) if version is None else version
    rows = store.read(table, version).to_dicts()
    fresh: list[list[dict[str, Any]]] = [[] for _ in rows]

    for i, row in enumerate(rows):
        result = check_r1_format(row["completion"])
        fresh[i].append(
            _verdict(
                "format", "correct" if result.ok else "incorrect", result.reason, FORMAT_VERSION
            )
        )

    math_rows = [i for i, r in enumerate(rows) if r["domain"] == "math" and r["gold"] is not None]
    if math_rows:
        with MathVerifier(workers=workers, timeout=math_timeout) as verifier:
            pairs = [(rows[i]["gold"], rows[i]["completion"]) for i in math_rows]
            for i, verdict in zip(math_rows, verifier.verify_many(pairs), strict=True):
                fresh[i].append(_verdict("math", verdict.verdict, verdict.reason, MATH_VERSION))

    code_rows = [i for i, r in enumerate(rows) if r["domain"] == "code" and r["gold"] is not None]
    if code_rows:
        _judge_code(rows, code_rows, fresh, workers, code_timeout)

    changed = []
    for row, new in zip(rows, fresh, strict=True):
        merged = _merge_verdicts(row["verdicts"] or [], new)
        if merged != (row["verdicts"] or []):
            changed.append({**row, "verdicts": merged})
    counts: dict[str, Counter[str]] = {}
    for new in fresh:
        for entry in new:
            counts.setdefault(entry["verifier"], Counter())[entry["verdict"]] += 1
    parented = replace(
        lineage, parents=(TableRef(table, version),), message=f"verdicts for {table}@{version}"
    )
    new_version = version
    if changed:
        import polars as pl

        frame = pl.DataFrame(changed, schema=store.scan(table, version).collect_schema())
        new_version = store.upsert(table, frame.to_arrow(), lineage=parented).version
    return JudgeReport(
        table=table,
        judged_version=version,
        version=new_version,
        rows=len(rows),
        changed=len(changed),
        verdicts={k: dict(sorted(c.items())) for k, c in sorted(counts.items())},
    )


def _verdict(verifier: str, verdict: str, reason: str, version: str) -> dict[str, Any]:
    return {"verifier": verifier, "verdict": verdict, "reason": reason, "version": version}


def _judge_code(
    rows: list[dict[str, Any]],
    indices: list[int],
    fresh: list[list[dict[str, Any]]],
    workers: int,
    timeout: float,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from verifiers.code import VERSION, SandboxPool, verify_code

    def one(i: int) -> dict[str, Any]:
        try:
            tests = json.loads(rows[i]["gold"])
        except json.JSONDecodeError:
            return _verdict("code", "unverifiable", "bad_input: gold is not JSON tests", VERSION)
        v = verify_code(rows[i]["completion"], tests, pool, timeout=timeout)
        return _verdict("code", v.verdict, v.detail, VERSION)

    with SandboxPool(workers) as pool, ThreadPoolExecutor(workers) as executor:
        for i, verdict in zip(indices, executor.map(one, indices), strict=True):
            fresh[i].append(verdict)
