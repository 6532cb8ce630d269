"""The step interface: a filter says `keep(sample) -> (bool, reason)`, the machinery does the rest.

A filter looks at one sample (a mapping of Sample fields) and says whether to
keep it and, when not, a short reason code. `apply_filters` runs a list of
filters over an Arrow batch and writes the decision into every row's `kept`
and `filter_reason` columns; nothing is deleted, so a rejected sample stays in
its table with the reason that rejected it. It also returns `StepStats`: rows
in, kept, dropped per reason and the time spent, which merge across batches
and render into a data card section with `stats_markdown`.

A new filter is about fifteen lines:

    @dataclass(frozen=True)
    class NoAnswer(Filter):
        name: ClassVar[str] = "no_answer"
        columns: ClassVar[tuple[str, ...]] = ("answer",)

        def keep(self, sample: Mapping[str, Any]) -> tuple[bool, str | None]:
            if sample["answer"]:
                return True, None
            return False, "empty"

Rules the machinery applies, so filters need not:

- the first failing filter decides; its reason is written `"{filter.name}:{reason}"`;
- a row already dropped (`kept == False`) by an earlier step is passed through
  untouched and keeps its earlier reason (counted as `skipped`);
- a row every filter keeps gets `kept = True` and `filter_reason = null`.

Filters are frozen dataclasses holding only plain values, so they pickle: the
same objects run in-process, in a process pool or on Ray (see `executor`).
"""

from __future__ import annotations

import functools
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import polars as pl
import pyarrow as pa

from store.record import SAMPLE_FIELDS, SAMPLE_SCHEMA
from verifiers.format import FormatResult, check_r1_format

# The token count a filter assumes when a row has no `completion_tokens`:
# about four characters per token is the usual figure for English text under
# a byte-level BPE. It is an estimate, used only when no count was recorded.
CHARS_PER_TOKEN = 4.0

_DECISION_COLUMNS = ("kept", "filter_reason")


class Filter(ABC):
    """One rejection rule. Subclasses set `name` and, to read less, `columns`."""

    # Prefix of every reason this filter writes, and its row in the stats.
    name: ClassVar[str]
    # The Sample fields `keep` reads; a batch runner converts only these to
    # Python objects, which is most of the cost on wide rows.
    columns: ClassVar[tuple[str, ...]] = SAMPLE_FIELDS

    @abstractmethod
    def keep(self, sample: Mapping[str, Any]) -> tuple[bool, str | None]:
        """`(True, None)` to keep `sample`, `(False, reason)` to drop it."""


@dataclass
class StepStats:
    """What one step did: rows seen, kept, dropped per reason, time spent.

    `skipped` counts rows an earlier step had dropped already (passed through
    untouched). `tallies` holds counts that are not drops, such as the routing
    rule that decided each prompt. `seconds` is time spent inside the step,
    summed over batches: with several workers it exceeds the wall time.
    """

    step: str
    rows_in: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    skipped: int = 0
    seconds: float = 0.0
    tallies: Counter[str] = field(default_factory=Counter)

    @property
    def kept(self) -> int:
        return self.rows_in - self.skipped - sum(self.dropped.values())

    def merge(self, other: StepStats) -> StepStats:
        """The stats of both runs of the same step together (a new object)."""
        if other.step != self.step:
            raise ValueError(f"cannot merge stats of step {other.step!r} into {self.step!r}")
        return StepStats(
            step=self.step,
            rows_in=self.rows_in + other.rows_in,
            dropped=self.dropped + other.dropped,
            skipped=self.skipped + other.skipped,
            seconds=self.seconds + other.seconds,
            tallies=self.tallies + other.tallies,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "rows_in": self.rows_in,
            "kept": self.kept,
            "dropped": dict(sorted(self.dropped.items())),
            "skipped": self.skipped,
            "seconds": round(self.seconds, 6),
            "tallies": dict(sorted(self.tallies.items())),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StepStats:
        return cls(
            step=data["step"],
            rows_in=int(data["rows_in"]),
            dropped=Counter({k: int(v) for k, v in data.get("dropped", {}).items()}),
            skipped=int(data.get("skipped", 0)),
            seconds=float(data.get("seconds", 0.0)),
            tallies=Counter({k: int(v) for k, v in data.get("tallies", {}).items()}),
        )


def merge_stats(stats: Iterable[StepStats]) -> list[StepStats]:
    """Stats of the same step merged into one, steps in the order first seen."""
    merged: dict[str, StepStats] = {}
    for s in stats:
        merged[s.step] = merged[s.step].merge(s) if s.step in merged else s
    return list(merged.values())


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|")


def stats_markdown(stats: Sequence[StepStats]) -> str:
    """A data-card section: one row per step, then every drop reason with its count."""
    steps = merge_stats(stats)
    lines = [
        "| step | rows in | kept | dropped | already dropped | seconds |",
        "| --- | --: | --: | --: | --: | --: |",
    ]
    for s in steps:
        lines.append(
            f"| {_cell(s.step)} | {s.rows_in:,} | {s.kept:,} | {sum(s.dropped.values()):,} "
            f"| {s.skipped:,} | {s.seconds:.2f} |"
        )
    reasons = [(s, r, n) for s in steps for r, n in sorted(s.dropped.items())]
    if reasons:
        lines += ["", "| step | reason | rows | share of step |", "| --- | --- | --: | --: |"]
        for s, reason, n in reasons:
            judged = s.rows_in - s.skipped
            share = f"{100 * n / judged:.1f}%" if judged else "-"
            lines.append(f"| {_cell(s.step)} | `{_cell(reason)}` | {n:,} | {share} |")
    tallies = [(s, k, n) for s in steps for k, n in sorted(s.tallies.items())]
    if tallies:
        lines += ["", "| step | tally | rows |", "| --- | --- | --: |"]
        lines += [f"| {_cell(s.step)} | `{_cell(k)}` | {n:,} |" for s, k, n in tallies]
    return "\n".join(lines)


def as_sample_batch(data: pa.RecordBatch | pa.Table) -> pa.RecordBatch:
    """`data` as one RecordBatch in SAMPLE_SCHEMA, with a clear error when columns are missing."""
    if isinstance(data, pa.Table):
        batches = data.to_batches()
        if not batches:
            return pa.RecordBatch.from_pylist([], schema=SAMPLE_SCHEMA)
        data = pa.concat_batches(batches) if len(batches) > 1 else batches[0]
    if data.schema.equals(SAMPLE_SCHEMA):
        return data
    missing = [f for f in SAMPLE_SCHEMA.names if f not in data.schema.names]
    if missing:
        raise ValueError(f"batch is not a Sample batch: missing columns {missing}")
    return data.select(SAMPLE_SCHEMA.names).cast(SAMPLE_SCHEMA)


def apply_filters(
    data: pa.RecordBatch | pa.Table, filters: Sequence[Filter], *, step: str = "filters"
) -> tuple[pa.RecordBatch, StepStats]:
    """Decide `kept` and `filter_reason` for every row of `data`; see the module docstring."""
    start = time.perf_counter()
    batch = as_sample_batch(data)
    wanted = set(_DECISION_COLUMNS).union(*(f.columns for f in filters))
    # Keep schema order so the projection is one cheap select.
    rows = batch.select([n for n in SAMPLE_FIELDS if n in wanted]).to_pylist()
    kept: list[bool] = []
    reasons: list[str | None] = []
    stats = StepStats(step=step, rows_in=len(rows))
    for row in rows:
        if row["kept"] is False:
            kept.append(False)
            reasons.append(row["filter_reason"])
            stats.skipped += 1
            continue
        verdict: str | None = None
        for f in filters:
            ok, reason = f.keep(row)
            if not ok:
                verdict = f"{f.name}:{reason or 'rejected'}"
                break
        kept.append(verdict is None)
        reasons.append(verdict)
        if verdict is not None:
            stats.dropped[verdict] += 1
    batch = _set_decisions(batch, kept, reasons)
    stats.seconds = time.perf_counter() - start
    return batch, stats


def _set_decisions(
    batch: pa.RecordBatch, kept: Sequence[bool], reasons: Sequence[str | None]
) -> pa.RecordBatch:
    for name, values in (("kept", kept), ("filter_reason", reasons)):
        index = batch.schema.get_field_index(name)
        field_ = SAMPLE_SCHEMA.field(name)
        batch = batch.set_column(index, field_, pa.array(values, field_.type))
    return batch


def frame_step(
    frame: pl.DataFrame | pl.LazyFrame,
    fn: Callable[[pl.LazyFrame], pl.LazyFrame],
    *,
    step: str,
) -> tuple[pl.DataFrame, StepStats]:
    """Run a frame-level step (selection, pass-rate window) and count what it dropped.

    Rows are matched by `sample_id`: a row counts as dropped by this step when
    it was not `kept == False` before and is after; its new `filter_reason` is
    the reason counted.
    """
    start = time.perf_counter()
    before = frame.lazy()
    after = fn(before).collect()
    seconds = time.perf_counter() - start
    previous = before.select("sample_id", pl.col("kept").alias("_kept_before")).collect()
    joined = after.join(previous, on="sample_id", how="left")
    was_dropped = pl.col("_kept_before").fill_null(True).not_()
    newly = joined.filter(~was_dropped & pl.col("kept").not_())
    counts = newly.group_by("filter_reason").len()
    dropped = Counter(
        {str(r): int(n) for r, n in zip(counts["filter_reason"], counts["len"], strict=True)}
    )
    stats = StepStats(
        step=step,
        rows_in=after.height,
        dropped=dropped,
        skipped=int(joined.select(was_dropped.sum()).item()),
        seconds=seconds,
    )
    return after, stats


def reasoning_and_answer(sample: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The sample's reasoning and answer: the stored columns, else parsed from the completion.

    The parse accepts the released R1 form (plain answer after `</think>`), so
    a filter about readability or degeneracy can judge the reasoning even when
    the strict template check fails; that failure is R1Format's to report.
    """
    reasoning, answer = sample.get("reasoning"), sample.get("answer")
    if reasoning is not None:
        return reasoning, answer
    completion = sample.get("completion")
    if completion is None:
        return None, answer
    result = parse_r1_cached(completion, require_answer=False)
    return result.reasoning, answer if answer is not None else result.answer


@functools.lru_cache(maxsize=16)
def parse_r1_cached(completion: str, *, require_answer: bool = True) -> FormatResult:
    """`check_r1_format`, remembered for the last few completions.

    The filters of one chain ask about the same row in turn (the format
    filter strictly, the reasoning filters leniently); a hit on the same
    string object costs no hashing. A completion that passes the strict
    check parses the same way leniently, so that answer is reused.
    """
    if not require_answer:
        strict = parse_r1_cached(completion, require_answer=True)
        if strict.ok:
            return strict
    return check_r1_format(completion, require_answer=require_answer)
