"""The judge stage: run the verifiers over a stored table version and commit the verdicts.

    report = judge(store, JudgeConfig(table="toy-generated@3"), lineage)
    report.version, report.changed, report.verdicts["math"]      # {"correct": 12, ...}

    r1f verify table toy-generated@3 [--workers N] [--math-timeout S] [--code-timeout S]

A plain function of the project's stage shape, `stage(store, config, lineage, *, progress)`,
so tests and the demo call it directly and a Prefect flow wraps it as a task. Which verifiers
a sample gets depends on its domain:

- `math`: the math verifier against `gold` (a countdown gold is checked by evaluating the
  answer);
- `code`: the sandboxed code verifier, with `gold` holding the tests as JSON;
- every sample: the R1 format check.

Verdicts replace earlier verdicts of the same verifier and keep everyone else's (a human's,
another tool's). Only rows whose verdicts changed are written, in one upsert, so a rerun with
the same verifier versions changes nothing and makes no new version. The commit names the
judged version as its parent.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from store.lineage import Lineage, TableRef

if TYPE_CHECKING:
    from store.store import Store


@dataclass(frozen=True)
class JudgeConfig:
    """The `judge:` section of a run config."""

    table: str  # NAME (the latest version) or NAME@VERSION
    workers: int = 2  # math worker processes, and sandboxes for code
    math_timeout: float = 5.0  # seconds per math check
    code_timeout: float = 10.0  # seconds per code run

    def __post_init__(self) -> None:
        TableRef.parse(self.table)  # a malformed reference is a config error
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        for name in ("math_timeout", "code_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0 seconds, got {getattr(self, name)}")


class Progress(Protocol):
    """What a caller sees while the stage runs (the same shape as the other stages')."""

    def stage(self, name: str, total: int | None) -> None: ...

    def advance(self, rows: int) -> None: ...


@dataclass(frozen=True)
class JudgeReport:
    table: str
    judged_version: int
    version: int  # the table's version after the verdicts were committed
    rows: int
    changed: int
    verdicts: dict[str, dict[str, int]]  # verifier -> verdict -> rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "judged_version": self.judged_version,
            "version": self.version,
            "rows": self.rows,
            "changed": self.changed,
            "verdicts": self.verdicts,
        }


def _merge_verdicts(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    replaced = {v["verifier"] for v in new}
    return [v for v in old if v["verifier"] not in replaced] + new


def judge(
    store: Store, cfg: JudgeConfig, lineage: Lineage, *, progress: Progress | None = None
) -> JudgeReport:
    """Verify every sample of the configured table version; upsert the rows whose verdicts
    changed."""
    from verifiers.format import VERSION as FORMAT_VERSION
    from verifiers.format import check_r1_format
    from verifiers.math import VERSION as MATH_VERSION
    from verifiers.math import MathVerifier

    ref = TableRef.parse(cfg.table)
    table = ref.table
    version = store.latest_version(table) if ref.version is None else ref.version
    rows = store.read(table, version).to_dicts()
    fresh: list[list[dict[str, Any]]] = [[] for _ in rows]
    advance = progress.advance if progress is not None else None

    if progress is not None:
        progress.stage("format", len(rows))
    for i, row in enumerate(rows):
        result = check_r1_format(row["completion"])
        fresh[i].append(
            _verdict(
                "format", "correct" if result.ok else "incorrect", result.reason, FORMAT_VERSION
            )
        )
    if advance is not None:
        advance(len(rows))

    math_rows = [i for i, r in enumerate(rows) if r["domain"] == "math" and r["gold"] is not None]
    if math_rows:
        if progress is not None:
            progress.stage("math", len(math_rows))
        with MathVerifier(workers=cfg.workers, timeout=cfg.math_timeout) as verifier:
            pairs = [(rows[i]["gold"], rows[i]["completion"]) for i in math_rows]
            verdicts = verifier.verify_many(pairs, progress=advance)
            for i, verdict in zip(math_rows, verdicts, strict=True):
                fresh[i].append(_verdict("math", verdict.verdict, verdict.reason, MATH_VERSION))

    code_rows = [i for i, r in enumerate(rows) if r["domain"] == "code" and r["gold"] is not None]
    if code_rows:
        if progress is not None:
            progress.stage("code", len(code_rows))
        _judge_code(rows, code_rows, fresh, cfg.workers, cfg.code_timeout, advance)

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
    advance: Any,
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
            if advance is not None:
                advance(1)
