"""The step interface and its runners: decisions on every row, stats, executors, shard markers."""

from __future__ import annotations

import functools
import json
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from filters.base import (
    Filter,
    StepStats,
    apply_filters,
    as_sample_batch,
    frame_step,
    merge_stats,
    reasoning_and_answer,
    stats_markdown,
)
from filters.executor import (
    ExecutorError,
    ShardSpec,
    marker_path,
    output_path,
    run_batches,
    run_sharded,
    shards_for,
)
from filters.rejection import R1Format, Truncated
from store.record import SAMPLE_SCHEMA, to_table, validate_sample


def sample(i: int, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "prompt": f"What is {i} + {i}?",
        "completion": f"<think>{i} + {i} = {2 * i}.</think><answer>{2 * i}</answer>",
        "domain": "math",
        "track": "reasoning",
        "source": "toy-arithmetic",
        "sample_index": i,
        "finish_reason": "stop",
    }
    row.update(overrides)
    return validate_sample(row)


def table(n: int, **overrides: Any) -> pa.Table:
    return to_table([sample(i, **overrides) for i in range(n)])


@dataclass(frozen=True)
class NoAnswer(Filter):
    """The module docstring's fifteen-line example, as a user would write it."""

    name: ClassVar[str] = "no_answer"
    columns: ClassVar[tuple[str, ...]] = ("answer",)

    def keep(self, sample: Mapping[str, Any]) -> tuple[bool, str | None]:
        if sample["answer"]:
            return True, None
        return False, "empty"


@dataclass(frozen=True)
class Spy(Filter):
    """Fails every row, and remembers which keys it was shown (in-process only)."""

    name: ClassVar[str] = "spy"
    columns: ClassVar[tuple[str, ...]] = ("answer",)
    seen: list[set[str]]

    def keep(self, sample: Mapping[str, Any]) -> tuple[bool, str | None]:
        self.seen.append(set(sample))
        return False, None


def test_every_row_gets_a_decision_and_nothing_is_deleted() -> None:
    rows = [
        sample(0),
        sample(1, completion="no tags at all"),
        sample(2, finish_reason="length"),
        sample(3, finish_reason="length", completion="broken"),
    ]
    out, stats = apply_filters(to_table(rows), [R1Format(), Truncated()], step="rejection")
    assert out.num_rows == 4
    assert out.schema.equals(SAMPLE_SCHEMA)
    assert out.column("kept").to_pylist() == [True, False, False, False]
    assert out.column("filter_reason").to_pylist() == [
        None,
        "format:missing_think",
        "truncated:length",
        "format:missing_think",  # the first failing filter decides
    ]
    assert out.column("sample_id").to_pylist() == [r["sample_id"] for r in rows]
    assert stats.step == "rejection"
    assert (stats.rows_in, stats.kept, stats.skipped) == (4, 1, 0)
    assert stats.dropped == Counter({"format:missing_think": 2, "truncated:length": 1})
    assert stats.seconds >= 0


def test_rows_dropped_earlier_keep_their_reason() -> None:
    rows = [
        sample(0, kept=False, filter_reason="earlier:step"),
        sample(1, kept=True),
        sample(2, kept=True, finish_reason="length"),
    ]
    out, stats = apply_filters(to_table(rows), [Truncated()])
    assert out.column("kept").to_pylist() == [False, True, False]
    assert out.column("filter_reason").to_pylist() == ["earlier:step", None, "truncated:length"]
    assert (stats.rows_in, stats.kept, stats.skipped) == (3, 1, 1)
    assert stats.dropped == Counter({"truncated:length": 1})


def test_a_user_filter_is_fifteen_lines_and_gets_a_default_reason() -> None:
    rows = [sample(0, answer="0"), sample(1, answer=None)]
    out, _ = apply_filters(to_table(rows), [NoAnswer()])
    assert out.column("filter_reason").to_pylist() == [None, "no_answer:empty"]
    seen: list[set[str]] = []
    out, _ = apply_filters(to_table(rows[:1]), [Spy(seen)])
    assert out.column("filter_reason").to_pylist() == ["spy:rejected"]
    # Only the declared columns and the decision columns are converted to Python.
    assert seen == [{"answer", "kept", "filter_reason"}]


def test_input_forms_table_chunks_polars_and_errors() -> None:
    chunked = pa.concat_tables([table(2), table(3)])
    out, stats = apply_filters(chunked, [Truncated()])
    assert out.num_rows == 5 and stats.rows_in == 5
    from_polars = pl.from_arrow(table(3)).to_arrow()  # large strings, large lists
    assert isinstance(from_polars, pa.Table)
    out, _ = apply_filters(from_polars, [Truncated()])
    assert out.schema.equals(SAMPLE_SCHEMA)
    empty, stats = apply_filters(SAMPLE_SCHEMA.empty_table(), [Truncated()])
    assert empty.num_rows == 0 and stats.rows_in == 0
    with pytest.raises(ValueError, match="missing columns"):
        as_sample_batch(table(1).drop_columns(["kept"]))


def test_step_stats_merge_render_and_round_trip() -> None:
    a = StepStats("rejection", rows_in=10, dropped=Counter({"format:x": 2}), skipped=1, seconds=1.0)
    b = StepStats("rejection", rows_in=5, dropped=Counter({"format:x": 1, "length:too_long": 1}))
    merged = a.merge(b)
    assert (merged.rows_in, merged.kept, merged.skipped) == (15, 10, 1)
    assert merged.dropped == Counter({"format:x": 3, "length:too_long": 1})
    assert StepStats.from_dict(json.loads(json.dumps(merged.to_dict()))) == merged
    assert merged.to_dict()["kept"] == 10
    with pytest.raises(ValueError, match="cannot merge"):
        a.merge(StepStats("selection"))
    routing = StepStats("routing", rows_in=3, tallies=Counter({"rule:greeting": 3}))
    steps = merge_stats([a, routing, b])
    assert [s.step for s in steps] == ["rejection", "routing"]
    text = stats_markdown([a, routing, b])
    assert "| rejection | 15 | 10 | 4 | 1 | 1.00 |" in text
    assert "| rejection | `format:x` | 3 | 21.4% |" in text
    assert "| routing | `rule:greeting` | 3 |" in text


def test_frame_step_counts_what_a_frame_step_dropped() -> None:
    frame = pl.from_arrow(table(4))
    assert isinstance(frame, pl.DataFrame)
    frame = frame.with_columns(
        pl.when(pl.col("sample_index") == 0)
        .then(pl.lit(False))
        .otherwise(pl.col("kept"))
        .alias("kept"),
        pl.when(pl.col("sample_index") == 0)
        .then(pl.lit("earlier:x"))
        .otherwise(pl.col("filter_reason"))
        .alias("filter_reason"),
    )

    def drop_odd(lf: pl.LazyFrame) -> pl.LazyFrame:
        odd = pl.col("sample_index") % 2 == 1
        return lf.with_columns(
            pl.when(odd).then(pl.lit(False)).otherwise(pl.col("kept")).alias("kept"),
            pl.when(odd)
            .then(pl.lit("odd:index"))
            .otherwise(pl.col("filter_reason"))
            .alias("filter_reason"),
        )

    out, stats = frame_step(frame, drop_odd, step="odd")
    assert out.height == 4
    assert (stats.rows_in, stats.kept, stats.skipped) == (4, 1, 1)
    assert stats.dropped == Counter({"odd:index": 2})


def test_reasoning_and_answer_prefers_columns_then_parses() -> None:
    assert reasoning_and_answer({"reasoning": "r", "answer": "a", "completion": "x"}) == ("r", "a")
    parsed = {"reasoning": None, "answer": None, "completion": "<think>r</think><answer>a</answer>"}
    assert reasoning_and_answer(parsed) == ("r", "a")
    released = {"reasoning": None, "answer": None, "completion": "<think>r</think>plain"}
    assert reasoning_and_answer(released) == ("r", "plain")
    assert reasoning_and_answer({"reasoning": None, "completion": "no tags"}) == (None, None)


# -- executors ---------------------------------------------------------------

STEP = functools.partial(apply_filters, filters=(R1Format(), Truncated()), step="rejection")


def mixed_batches() -> list[pa.RecordBatch]:
    rows = []
    for i in range(12):
        if i % 4 == 0:
            rows.append(sample(i, completion="broken"))
        elif i % 5 == 0:
            rows.append(sample(i, finish_reason="length"))
        else:
            rows.append(sample(i))
    return to_table(rows).to_batches(max_chunksize=3)


def test_local_and_process_executors_give_identical_outputs() -> None:
    batches = mixed_batches()
    local, local_stats = run_batches(batches, STEP, executor="local")
    pooled, pooled_stats = run_batches(batches, STEP, executor="process", workers=2)
    assert len(local) == len(pooled) == 4
    assert pa.Table.from_batches(local).equals(pa.Table.from_batches(pooled))
    assert local_stats.dropped == pooled_stats.dropped
    assert (local_stats.rows_in, local_stats.kept) == (pooled_stats.rows_in, pooled_stats.kept)
    assert local_stats.dropped == Counter({"format:missing_think": 3, "truncated:length": 2})


def test_executor_errors_name_the_fix() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        with pytest.raises(ExecutorError, match=r"pip install -e \.\[ray\]"):
            run_batches(mixed_batches(), STEP, executor="ray")
    with pytest.raises(ExecutorError, match="unknown executor 'dask'"):
        run_batches([], STEP, executor="dask")  # type: ignore[arg-type]
    with pytest.raises(ExecutorError, match="workers must be >= 1"):
        run_batches([], STEP, executor="local", workers=0)
    assert run_batches([], STEP)[1].rows_in == 0
    with pytest.raises(ExecutorError, match="does not pickle"):
        run_batches(mixed_batches(), lambda b: STEP(b), executor="process", workers=1)


def write_inputs(tmp_path: Path, shards: int = 3) -> list[str]:
    paths = []
    for s in range(shards):
        path = tmp_path / "in" / f"part-{s}.parquet"
        path.parent.mkdir(exist_ok=True)
        rows = [sample(10 * s + i, finish_reason="length" if i == 0 else "stop") for i in range(4)]
        pq.write_table(to_table(rows), path)
        paths.append(os.fspath(path))
    return paths


@dataclass
class CountingStep:
    """A step that records the first sample id of every batch it sees (local executor only)."""

    seen: list[str]

    def __call__(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, StepStats]:
        self.seen.append(batch.column("sample_id")[0].as_py())
        return STEP(batch)


def test_rerun_after_a_crash_redoes_only_the_unfinished_shard(tmp_path: Path) -> None:
    shards = shards_for(write_inputs(tmp_path))
    assert [s.shard_id for s in shards] == ["shard-00000", "shard-00001", "shard-00002"]
    out = tmp_path / "out"
    first = run_sharded(shards, STEP, out)
    assert first.ran == [s.shard_id for s in shards] and first.skipped == []
    assert (first.stats.rows_in, first.stats.kept) == (12, 9)
    for shard in shards:
        assert marker_path(out, shard).exists()
        assert pq.read_table(output_path(out, shard)).column("kept").to_pylist() == [
            False,
            True,
            True,
            True,
        ]
    # A crash while shard 1 was being written: its output is half there, its marker never landed.
    crashed = shards[1]
    marker_path(out, crashed).unlink()
    output_path(out, crashed).write_bytes(b"half a parquet file")
    done_before = {s.shard_id: output_path(out, s).stat().st_mtime_ns for s in shards}

    seen: list[str] = []
    second = run_sharded(shards, CountingStep(seen), out)
    assert second.ran == ["shard-00001"]
    assert second.skipped == ["shard-00000", "shard-00002"]
    assert len(seen) == 1  # one batch: only shard 1 was read
    for shard in (shards[0], shards[2]):
        assert output_path(out, shard).stat().st_mtime_ns == done_before[shard.shard_id]
    assert pq.read_table(output_path(out, crashed)).num_rows == 4
    # Stats of skipped shards come back from their markers.
    assert second.stats.to_dict() | {"seconds": 0} == first.stats.to_dict() | {"seconds": 0}
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]
    third = run_sharded(shards, CountingStep(seen), out)
    assert third.ran == [] and len(seen) == 1


def test_sharded_run_in_a_process_pool_matches_local(tmp_path: Path) -> None:
    shards = shards_for(write_inputs(tmp_path, shards=2), files_per_shard=2)
    assert len(shards) == 1 and len(shards[0].inputs) == 2
    local = run_sharded(shards, STEP, tmp_path / "local")
    pooled = run_sharded(shards, STEP, tmp_path / "pooled", executor="process", workers=2)
    assert pq.read_table(local.outputs[0]).equals(pq.read_table(pooled.outputs[0]))
    assert local.stats.dropped == pooled.stats.dropped == Counter({"truncated:length": 2})
    with pytest.raises(ValueError, match="plain file name"):
        ShardSpec("../escape", ())
    with pytest.raises(ValueError, match="unique"):
        run_sharded([shards[0], shards[0]], STEP, tmp_path / "dupes")


@pytest.mark.ray
def test_ray_executor_gives_what_local_gives() -> None:
    pytest.importorskip("ray", reason="the ray tests need `make test-ray`")
    batches = mixed_batches()
    local, local_stats = run_batches(batches, STEP, executor="local")
    on_ray, ray_stats = run_batches(batches, STEP, executor="ray", workers=2)
    assert pa.Table.from_batches(local).equals(pa.Table.from_batches(on_ray))
    assert local_stats.dropped == ray_stats.dropped
