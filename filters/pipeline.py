"""The filter-and-assemble run: store tables in, a candidates table and the SFT mixture out.

`run_filter_pipeline(store, cfg, lineage)` takes exact versions of the input
tables and runs R1's rejection-sampling stage over them, in this order:

| stage | where | what |
|---|---|---|
| `analyse` | per batch, on the executor | CoT routing (optional), rejection filters (per track), decontamination, dedup hashes (exact hash + MinHash signature) |
| `dedup` | main process, small columns | exact groups, then MinHash-LSH clusters over the exact survivors |
| `pass_rate` | main process, small columns | the pass-rate window (optional) |
| `selection` | main process | at most k diverse samples per prompt (optional); reads the texts of crowded prompts only |
| `mixture` | main process, small columns | `filters.mixture.assemble` |
| `write` | stream, two threads | the candidates table (every input row with its final `kept` / `filter_reason`) and the mixture (the chosen rows and their copies): one commit each, the mixture's after the candidates' |

**Reports.** The step stats, the decontamination report and the mixture
report go into both commits as `store.reports.Report`s (`filter.steps`,
`filter.decontamination`, `filter.mixture`), in the same atomic commit as
the rows they describe. The run renders no card: a version's card is
rendered from the store (`data_cards.from_store`), by `r1f filter run`,
`r1f datasets card` and `r1f datasets export` alike.

**Memory.** Texts are held only inside a batch. Between the stages the run
keeps, per row, a few short columns (ids, track, domain, source, decision,
and the verdicts while the pass-rate window needs them) and, per row that
survives the filters, one 8-byte exact hash and a `num_perm x 4`-byte
signature (512 bytes at 128 permutations: 0.5 GB per million rows). The
inputs are read three times (analyse, then the two writes side by side) and
the texts of crowded prompts a fourth time when `per_prompt` is set, rather
than spilled. Each later pass checks that it sees the same `sample_id`s in
the same order as the first, so a table that changed under the run is an
error, never a silent mismatch.

**Reasons** written into `filter_reason` besides the filters' own:
`decontam:{benchmark}`, `dedup:exact` (byte-identical dedup text to a kept
sample; the survivor of a group is its smallest `sample_id`), `dedup:near`
(MinHash-estimated Jaccard at or above the threshold), `pass_rate:...`,
`selection:over_k`, `mixture:not_sampled` (kept by every filter, left out by
the sampler because its group had enough) and `mixture:excluded` (its track,
domain or source has no share in the spec). In the candidates table, `kept`
is true exactly for the samples in the mixture.

**Execution.** The `analyse` stage is one picklable step object run through
`filters.executor` (`local`, `process` or `ray`); the same step code runs
under each. With routing on, the writing passes re-route each batch (the
rules are deterministic), also on the executor.

Dedup and decontamination look only at samples that survive the rejection
filters: a rejected sample cannot be the kept copy of anything, and a leak
among rejects never reaches the mixture. The decontamination report counts
the samples it checked.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from filters.base import Filter, StepStats, apply_filters, frame_step, merge_stats, stats_markdown
from filters.decontam import BenchmarkIndex, DecontamReport, Hit, report_markdown
from filters.dedup import NearDedup
from filters.executor import Executor, _map_ordered
from filters.minhash import MinHasher
from filters.mixture import (
    MixtureReport,
    MixtureSpec,
    TrackSpec,
    assemble,
    default_tracks,
    expand_copies,
)
from filters.rejection import Policy, default_rejection_filters
from filters.routing import route_batch
from filters.selection import pass_rate_window, select_per_prompt
from store.lineage import Lineage, TableRef
from store.reports import Report
from store.store import Store, key_for

# Text fields dedup and decontamination may read.
TEXT_FIELDS = ("prompt", "completion", "reasoning", "answer")
STAGES = (
    "analyse",
    "dedup",
    "pass_rate",
    "selection",
    "mixture",
    "write",
)
NOT_SAMPLED = "mixture:not_sampled"
EXCLUDED = "mixture:excluded"


class PipelineError(RuntimeError):
    """The run cannot go on as configured or as the store stands; the message says why."""


# --- config ------------------------------------------------------------------------


def _check_fields(label: str, names: Sequence[str]) -> None:
    if not names:
        raise ValueError(f"{label}: name at least one of {', '.join(TEXT_FIELDS)}")
    unknown = [n for n in names if n not in TEXT_FIELDS]
    if unknown:
        raise ValueError(f"{label}: {unknown[0]!r} is not one of {', '.join(TEXT_FIELDS)}")


@dataclass(frozen=True)
class InputTable:
    table: str
    # None: the latest version when the run starts; the exact one is recorded in lineage.
    version: int | None = None


@dataclass(frozen=True)
class OutputsConfig:
    candidates: str = "sft-candidates"  # every input row with its decision
    mixture: str = "sft-mixture"  # the assembled SFT mixture
    # `r1f filter run` (flows.filter_run) renders the mixture version's card to
    # {card_dir}/{mixture}-v{version}/; the run itself writes none.
    card_dir: str = field(default="work/cards", metadata={"path": True})


@dataclass(frozen=True)
class ExecutionConfig:
    executor: Executor = "process"
    workers: int = 2
    batch_rows: int = 2048  # rows per step call: ~12 MB of text at 6 KB per row
    # Write the candidates and the mixture side by side (two threads): faster
    # on two or more cores, at the price of a second writer's buffers (about
    # 2 GB more peak memory at a million 6 KB rows).
    parallel_writes: bool = True

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.batch_rows < 1:
            raise ValueError(f"batch_rows must be >= 1, got {self.batch_rows}")


@dataclass(frozen=True)
class RejectionConfig:
    enabled: bool = True
    language: str = "en"
    max_tokens: int | None = None
    unverifiable: Policy = "drop"
    # The reasoning track must carry an accuracy verdict; the non-reasoning
    # track has no accuracy verifier (greetings, translation), so it keeps
    # unjudged samples by default.
    unjudged: Policy = "drop"
    unjudged_non_reasoning: Policy = "keep"


@dataclass(frozen=True)
class DecontamConfig:
    # JSONL/Parquet files; none: skipped
    benchmarks: list[str] = field(default_factory=list, metadata={"path": True})
    n: list[int] = field(default_factory=lambda: [13])
    fields: list[str] = field(default_factory=lambda: ["prompt", "completion"])
    min_tokens: int = 8
    text_field: str | None = None
    max_examples: int = 5

    def __post_init__(self) -> None:
        _check_fields("decontam.fields", self.fields)
        if not self.n or min(self.n) < 1:
            raise ValueError(f"decontam.n must list gram lengths >= 1, got {self.n}")


@dataclass(frozen=True)
class DedupConfig:
    enabled: bool = True
    # Joined with newlines: by default a duplicate is the same answer to the same prompt.
    fields: list[str] = field(default_factory=lambda: ["prompt", "completion"])
    near: bool = True  # MinHash-LSH after the exact pass
    threshold: float = 0.8
    num_perm: int = 128
    shingle: int = 5
    bands: int | None = None
    rows: int | None = None
    minhash_seed: int = 1

    def __post_init__(self) -> None:
        _check_fields("dedup.fields", self.fields)
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"dedup.threshold must be in (0, 1], got {self.threshold}")


@dataclass(frozen=True)
class SelectionConfig:
    pass_rate_window: tuple[float, float] | None = None  # [lo, hi]; none: off
    per_prompt: int | None = None  # k; none: no cap
    tolerance: float = 0.05

    def __post_init__(self) -> None:
        if self.pass_rate_window is not None:
            lo, hi = self.pass_rate_window
            if not 0.0 <= lo <= hi <= 1.0:
                raise ValueError(f"pass_rate_window needs 0 <= lo <= hi <= 1, got [{lo}, {hi}]")
        if self.per_prompt is not None and self.per_prompt < 1:
            raise ValueError(f"per_prompt must be >= 1, got {self.per_prompt}")


@dataclass(frozen=True)
class MixtureConfig:
    """`filters.mixture.MixtureSpec` without the seed, which is the run's."""

    tracks: dict[str, TrackSpec] = field(default_factory=default_tracks)
    max_upsample: float = 1.0

    def spec(self, seed: int) -> MixtureSpec:
        return MixtureSpec(tracks=self.tracks, max_upsample=self.max_upsample, seed=seed)

    def __post_init__(self) -> None:
        self.spec(0)  # MixtureSpec's checks, raised at load time


@dataclass(frozen=True)
class FilterRunConfig:
    """The `filter:` section of a run config."""

    inputs: list[InputTable] = field(default_factory=list)
    outputs: OutputsConfig = field(default_factory=OutputsConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    routing: bool = False
    rejection: RejectionConfig = field(default_factory=RejectionConfig)
    decontam: DecontamConfig = field(default_factory=DecontamConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    mixture: MixtureConfig = field(default_factory=MixtureConfig)

    def __post_init__(self) -> None:
        names = {i.table for i in self.inputs}
        for label, out in (
            ("candidates", self.outputs.candidates),
            ("mixture", self.outputs.mixture),
        ):
            if out in names:
                raise ValueError(
                    f"outputs.{label} {out!r} is also an input; write to another table"
                )
        if self.outputs.candidates == self.outputs.mixture:
            raise ValueError("outputs.candidates and outputs.mixture must be different tables")


# --- progress and report -------------------------------------------------------------


class Progress(Protocol):
    """What a caller sees while the run goes: a stage starts, rows go by."""

    def stage(self, name: str, total: int | None) -> None: ...

    def advance(self, rows: int) -> None: ...


@dataclass(frozen=True)
class StageTiming:
    name: str
    seconds: float
    rows: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "seconds": round(self.seconds, 3), "rows": self.rows}


@dataclass
class PipelineReport:
    inputs: list[TableRef]
    rows: int
    candidates: TableRef
    mixture: TableRef
    mixture_rows: int
    steps: list[StepStats]
    decontam: DecontamReport | None
    dedup: dict[str, Any]
    mixture_report: MixtureReport
    stages: list[StageTiming]

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [str(r) for r in self.inputs],
            "rows": self.rows,
            "candidates": str(self.candidates),
            "mixture": str(self.mixture),
            "mixture_rows": self.mixture_rows,
            "steps": [s.to_dict() for s in self.steps],
            "decontam": self.decontam.as_dict() if self.decontam else None,
            "dedup": self.dedup,
            "mixture_report": self.mixture_report.to_dict(),
            "stages": [s.to_dict() for s in self.stages],
        }


# --- the analyse step (runs on the executor) -----------------------------------------


@dataclass(frozen=True)
class _DecontamSpec:
    """What a worker needs to build the benchmark index once (hashable: cached per process)."""

    paths: tuple[str, ...]
    n: tuple[int, ...]
    min_tokens: int
    text_field: str | None
    fields: tuple[str, ...]


@functools.lru_cache(maxsize=4)
def _benchmark_index(spec: _DecontamSpec) -> BenchmarkIndex:
    # Built in each worker on first use rather than pickled with every batch.
    return BenchmarkIndex.from_files(
        list(spec.paths), text_field=spec.text_field, n=spec.n, min_tokens=spec.min_tokens
    )


@dataclass
class _Analysed:
    """What one batch leaves behind: small columns, stats, and dedup keys of its survivors."""

    small: pa.RecordBatch
    stats: list[StepStats]
    hits: list[tuple[str, list[tuple[str, Hit]]]]  # (sample_id, [(field, hit)]) per leak
    checked: int  # rows checked for contamination
    dedup_rows: np.ndarray  # (m,) int64, row indices in the batch
    exact: np.ndarray  # (m,) uint64
    signatures: np.ndarray | None  # (m, num_perm) uint32
    dedup_seconds: float


def _exact_hashes(texts: Sequence[str]) -> np.ndarray:
    """First 8 bytes of blake2b of each text's UTF-8, (n,) uint64: about 400 MB/s."""
    blake = hashlib.blake2b
    digests = b"".join(blake(t.encode(), digest_size=8).digest() for t in texts)
    return np.frombuffer(digests, dtype=">u8").astype(np.uint64)


def _reject(
    batch: pa.RecordBatch, by_track: dict[str, tuple[Filter, ...]]
) -> tuple[pa.RecordBatch, StepStats]:
    """Rejection filters chosen per track (a track without its own list uses `reasoning`'s)."""
    tracks = batch.column("track")
    names = pc.unique(tracks).to_pylist()
    if len(names) <= 1:
        chain = by_track.get(names[0] if names else "reasoning", by_track["reasoning"])
        return apply_filters(batch, chain, step="rejection")
    parts, order, stats = [], [], []
    for name in names:
        rows = np.flatnonzero(pc.equal(tracks, name).to_numpy(zero_copy_only=False))
        chain = by_track.get(name, by_track["reasoning"])
        out, part_stats = apply_filters(batch.take(pa.array(rows)), chain, step="rejection")
        parts.append(out)
        order.append(rows)
        stats.append(part_stats)
    merged = pa.concat_batches(parts)
    return merged.take(pa.array(np.argsort(np.concatenate(order)))), merge_stats(stats)[0]


@dataclass(frozen=True)
class _AnalyseStep:
    """Routing, rejection, decontamination and dedup keys for one batch; pickles to workers."""

    routing: bool
    rejection: dict[str, tuple[Filter, ...]] | None
    decontam: _DecontamSpec | None
    dedup_fields: tuple[str, ...] | None
    hasher: MinHasher | None
    small_columns: tuple[str, ...]

    def __call__(self, batch: pa.RecordBatch) -> _Analysed:
        stats: list[StepStats] = []
        if self.routing:
            batch, routed = route_batch(batch)
            stats.append(routed)
        if self.rejection is not None:
            batch, rejected = _reject(batch, self.rejection)
            stats.append(rejected)
        n = batch.num_rows
        kept: list[bool | None] = batch.column("kept").to_pylist()
        reasons: list[str | None] = batch.column("filter_reason").to_pylist()
        alive = [i for i in range(n) if kept[i] is not False]
        texts: dict[str, list[str]] = {}

        def field_texts(name: str) -> list[str]:
            if name not in texts:
                values = batch.column(name).take(pa.array(alive, pa.int64())).to_pylist()
                texts[name] = [v or "" for v in values]
            return texts[name]

        hits: list[tuple[str, list[tuple[str, Hit]]]] = []
        checked = 0
        if self.decontam is not None:
            start = time.perf_counter()
            step = StepStats("decontamination", rows_in=n, skipped=n - len(alive))
            index = _benchmark_index(self.decontam)
            found: list[list[Hit | None]] = []
            for name in self.decontam.fields:
                values = field_texts(name)
                # Samples of one prompt share it: check each distinct text once.
                distinct = list(dict.fromkeys(values))
                by_text = dict(zip(distinct, index.check(distinct), strict=True))
                found.append([by_text[v] for v in values])
            ids = batch.column("sample_id").to_pylist()
            survivors = []
            for j, i in enumerate(alive):
                row_hits: list[tuple[str, Hit]] = []
                for name, column in zip(self.decontam.fields, found, strict=True):
                    hit = column[j]
                    if hit is not None:
                        row_hits.append((name, hit))
                if not row_hits:
                    survivors.append(j)
                    continue
                reason = f"decontam:{row_hits[0][1].benchmark}"
                kept[i], reasons[i] = False, reason
                step.dropped[reason] += 1
                hits.append((ids[i], row_hits))
            checked = len(alive)
            alive = [alive[j] for j in survivors]
            texts = {k: [v[j] for j in survivors] for k, v in texts.items()}
            step.seconds = time.perf_counter() - start
            stats.append(step)
        dedup_rows = np.asarray(alive, dtype=np.int64)
        exact = np.zeros(0, dtype=np.uint64)
        signatures = None
        dedup_seconds = 0.0
        if self.dedup_fields is not None:
            start = time.perf_counter()
            columns = [field_texts(name) for name in self.dedup_fields]
            joined = (
                columns[0]
                if len(columns) == 1
                else ["\n".join(p) for p in zip(*columns, strict=True)]
            )
            exact = _exact_hashes(joined)
            if self.hasher is not None:
                signatures = self.hasher.signatures(joined)
            dedup_seconds = time.perf_counter() - start
        small = batch.select(list(self.small_columns))
        small = _set(small, "kept", pa.array(kept, pa.bool_()))
        small = _set(small, "filter_reason", pa.array(reasons, pa.string()))
        return _Analysed(small, stats, hits, checked, dedup_rows, exact, signatures, dedup_seconds)


def _set(batch: pa.RecordBatch, name: str, values: pa.Array) -> pa.RecordBatch:
    index = batch.schema.get_field_index(name)
    return batch.set_column(index, batch.schema.field(index), values)


# --- the writing step (runs on the executor when routing is on) ----------------------


@dataclass(frozen=True)
class _FinalizeStep:
    """Re-route a batch (when routing is on) and write the run's decisions into it."""

    routing: bool

    def __call__(
        self, item: tuple[pa.RecordBatch, pa.Array, pa.Array, np.ndarray | None]
    ) -> pa.RecordBatch:
        batch, kept, reasons, copies = item
        if copies is not None:
            # Only the mixture's rows: routing decides per prompt, so a subset routes alike.
            chosen = np.flatnonzero(copies > 0)
            batch = batch.take(pa.array(chosen))
            kept, reasons, copies = kept.take(chosen), reasons.take(chosen), copies[chosen]
        if self.routing:
            batch, _ = route_batch(batch)
        batch = _set(batch, "kept", kept)
        batch = _set(batch, "filter_reason", reasons)
        return batch if copies is None else expand_copies(batch, copies)


# --- the run -------------------------------------------------------------------------


class _Run:
    """State of one run: the inputs, the small per-row frame, stats and timings."""

    def __init__(
        self, store: Store, cfg: FilterRunConfig, seed: int, progress: Progress | None
    ) -> None:
        self.store = store
        self.cfg = cfg
        self.seed = seed
        self.progress = progress
        self.inputs = self._resolve_inputs()
        self.rows_per_input = [self.store.info(r.table, r.version).rows for r in self.inputs]
        self.rows = sum(self.rows_per_input)
        self.steps: list[StepStats] = []
        self.stages: list[StageTiming] = []
        self.frame = pl.DataFrame()
        self.ids = pa.array([], pa.string())
        # Built before any reading, so a bad benchmark file fails the run at once.
        self.decontam_spec: _DecontamSpec | None = None
        self.decontam_report: DecontamReport | None = None
        if cfg.decontam.benchmarks:
            d = cfg.decontam
            self.decontam_spec = _DecontamSpec(
                tuple(d.benchmarks), tuple(d.n), d.min_tokens, d.text_field, tuple(d.fields)
            )
            try:
                index = _benchmark_index(self.decontam_spec)
            except ValueError as err:
                raise PipelineError(f"filter.decontam: {err}") from err
            self.decontam_report = DecontamReport.for_index(
                index, d.fields, max_examples=d.max_examples
            )
        self.near: NearDedup | None = None
        if cfg.dedup.enabled and cfg.dedup.near:
            dd = cfg.dedup
            self.near = NearDedup(
                threshold=dd.threshold,
                num_perm=dd.num_perm,
                shingle=dd.shingle,
                bands=dd.bands,
                rows=dd.rows,
                seed=dd.minhash_seed,
            )

    def _resolve_inputs(self) -> list[TableRef]:
        if not self.cfg.inputs:
            raise PipelineError("filter.inputs is empty: name at least one store table")
        refs = []
        for item in self.cfg.inputs:
            if not self.store.exists(item.table):
                known = ", ".join(self.store.tables()) or "none"
                raise PipelineError(
                    f"input table {item.table!r} is not in store {self.store.root} "
                    f"(tables: {known})"
                )
            if key_for(item.table) != "sample_id":
                raise PipelineError(f"input {item.table!r} is a quarantine table, not samples")
            version = item.version
            if version is None:
                version = self.store.latest_version(item.table)
            self.store.info(item.table, version)  # a clear error for a missing version
            refs.append(TableRef(item.table, version))
        return refs

    # -- plumbing --

    def _stage(self, name: str, total: int | None) -> float:
        if self.progress is not None:
            self.progress.stage(name, total)
        return time.perf_counter()

    def _done(self, name: str, started: float, rows: int) -> None:
        self.stages.append(StageTiming(name, time.perf_counter() - started, rows))

    def _advance(self, rows: int) -> None:
        if self.progress is not None:
            self.progress.advance(rows)

    def _read(self, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        # `iter_batches` opens each Delta table now and reads only when asked:
        # opening one later, while `write_deltalake` pulls these batches from
        # inside its Rust runtime, panics ("Cannot start a runtime from within
        # a runtime"), and starting every scan at once would hold each table's
        # read-ahead in memory while the one before it streams.
        readers = [
            self.store.iter_batches(
                ref.table, ref.version, columns=columns, batch_rows=self.cfg.execution.batch_rows
            )
            for ref in self.inputs
        ]
        return itertools.chain.from_iterable(readers)

    def _aligned(self, columns: list[str] | None = None) -> Iterator[tuple[int, pa.RecordBatch]]:
        """(first row, batch) over the inputs, checked against the first pass's row order."""
        offset = 0
        for batch in self._read(columns):
            expected = self.ids.slice(offset, batch.num_rows)
            if len(expected) != batch.num_rows or not batch.column("sample_id").equals(expected):
                raise PipelineError(
                    "the inputs did not read back in the order of the first pass "
                    f"(at row {offset:,}); were the tables rewritten during the run?"
                )
            yield offset, batch
            offset += batch.num_rows
        if offset != len(self.ids):
            raise PipelineError(f"the inputs read back {offset:,} rows, not {len(self.ids):,}")

    def _map(self, fn: Callable[[Any], Any], items: Iterator[Any]) -> Iterator[Any]:
        ex = self.cfg.execution
        return _map_ordered(fn, items, ex.executor, ex.workers)

    def _drop(self, rows: np.ndarray, reasons: Sequence[str] | str) -> None:
        """Mark rows (positions in the frame) dropped with their reasons."""
        if not len(rows):
            return
        values = [reasons] * len(rows) if isinstance(reasons, str) else list(reasons)
        new = (
            pl.repeat(None, self.frame.height, dtype=pl.String, eager=True)
            .alias("_new")
            .scatter(rows, values)
        )
        hit = new.is_not_null()
        self.frame = self.frame.with_columns(
            pl.when(hit).then(pl.lit(False)).otherwise(pl.col("kept")).alias("kept"),
            pl.when(hit).then(new).otherwise(pl.col("filter_reason")).alias("filter_reason"),
        )

    def _alive(self) -> pl.Expr:
        return pl.col("kept").fill_null(True)

    def _dropped_so_far(self) -> int:
        return int(self.frame.select((~self._alive()).sum()).item())

    def _analyse_step(self) -> _AnalyseStep:
        cfg = self.cfg
        rejection = None
        if cfg.rejection.enabled:
            r = cfg.rejection

            def chain(unjudged: Policy) -> tuple[Filter, ...]:
                return tuple(
                    default_rejection_filters(
                        language=r.language,
                        max_tokens=r.max_tokens,
                        unverifiable=r.unverifiable,
                        unjudged=unjudged,
                    )
                )

            rejection = {
                "reasoning": chain(r.unjudged),
                "non_reasoning": chain(r.unjudged_non_reasoning),
            }
        small_columns = ["sample_id", "prompt_id", "track", "domain", "source"]
        small_columns += ["kept", "filter_reason"]
        if cfg.selection.pass_rate_window is not None:
            small_columns.append("verdicts")
        return _AnalyseStep(
            routing=cfg.routing,
            rejection=rejection,
            decontam=self.decontam_spec,
            dedup_fields=tuple(cfg.dedup.fields) if cfg.dedup.enabled else None,
            hasher=self.near.hasher if self.near is not None else None,
            small_columns=tuple(small_columns),
        )

    # -- stages --

    def analyse(self) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], float]:
        """Pass 1: the per-batch steps; keeps small columns and dedup keys of survivors."""
        started = self._stage("analyse", self.rows)
        step = self._analyse_step()
        smalls: list[pa.RecordBatch] = []
        stats: list[StepStats] = []
        rows: list[np.ndarray] = []
        exact: list[np.ndarray] = []
        signatures: list[np.ndarray] = []
        dedup_seconds = 0.0
        offset = 0
        for out in self._map(step, self._read()):
            smalls.append(out.small)
            stats += out.stats
            if self.decontam_report is not None:
                for sample_id, row_hits in out.hits:
                    self.decontam_report.record(sample_id, row_hits)
                self.decontam_report.samples += out.checked - len(out.hits)
            rows.append(out.dedup_rows + offset)
            exact.append(out.exact)
            if out.signatures is not None:
                signatures.append(out.signatures)
            dedup_seconds += out.dedup_seconds
            offset += out.small.num_rows
            self._advance(out.small.num_rows)
        if not smalls:
            raise PipelineError(
                "the inputs hold no rows: " + ", ".join(str(r) for r in self.inputs)
            )
        table = pa.Table.from_batches(smalls)
        del smalls
        self.ids = table.column("sample_id").combine_chunks()
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        self.frame = frame
        repeated = self.frame.filter(pl.col("sample_id").is_duplicated())
        if repeated.height:
            raise PipelineError(
                f"{repeated.height:,} rows share a sample_id with another input row "
                f"(e.g. {repeated.get_column('sample_id')[0]!r}); the store keeps one row "
                "per key, so the candidates table could not hold them all: "
                "de-duplicate the inputs or filter them in separate runs"
            )
        self.steps += merge_stats(stats)
        self._done("analyse", started, offset)
        return rows, exact, signatures, dedup_seconds

    def dedup(
        self,
        rows: list[np.ndarray],
        exact: list[np.ndarray],
        signatures: list[np.ndarray],
        worker_seconds: float,
    ) -> dict[str, Any]:
        """Exact groups, then near-duplicate clusters among their survivors."""
        started = self._stage("dedup", None)
        skipped = self._dropped_so_far()
        positions = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        hashes = np.concatenate(exact) if exact else np.zeros(0, np.uint64)
        ids = self.frame.get_column("sample_id").gather(positions)
        keys = pl.DataFrame({"_pos": np.arange(len(positions)), "sample_id": ids, "_h": hashes})
        ordered = keys.sort(["_h", "sample_id"])
        first = ordered.get_column("_h").is_first_distinct().to_numpy()
        exact_dups = ordered.get_column("_pos").to_numpy()[~first]
        self._drop(positions[exact_dups], "dedup:exact")
        survivor = np.ones(len(positions), dtype=bool)
        survivor[exact_dups] = False
        details: dict[str, Any] = {"method": "exact", "exact_duplicates": len(exact_dups)}
        near_dups = 0
        if self.near is not None:
            near = self.near
            start = 0
            ids_list = ids.to_list()
            # Hand the survivors' signatures over block by block, freeing ours as we go.
            while signatures:
                block = signatures.pop(0)
                keep = survivor[start : start + len(block)]
                chosen = np.flatnonzero(keep) + start
                near.add_signatures([ids_list[i] for i in chosen], block[keep])
                start += len(block)
            del ids_list
            result = near.finish()
            dup_at = [i for i, d in enumerate(result.duplicate_of) if d is not None]
            surviving_positions = positions[survivor]
            self._drop(surviving_positions[np.asarray(dup_at, dtype=np.int64)], "dedup:near")
            near_dups = len(dup_at)
            details = {
                "method": "exact+near",
                "exact_duplicates": len(exact_dups),
                **result.stats,
                # Signatures were computed in the analyse stage, on the workers.
                "signature_seconds": round(worker_seconds, 3),
            }
        details["fields"] = list(self.cfg.dedup.fields)
        seconds = time.perf_counter() - started
        dropped: Counter[str] = Counter()
        if len(exact_dups):
            dropped["dedup:exact"] = len(exact_dups)
        if near_dups:
            dropped["dedup:near"] = near_dups
        self.steps.append(
            StepStats(
                "dedup",
                rows_in=self.frame.height,
                dropped=dropped,
                skipped=skipped,
                seconds=worker_seconds + seconds,
            )
        )
        self._done("dedup", started, len(positions))
        return details

    def pass_rate(self) -> None:
        window = self.cfg.selection.pass_rate_window
        if window is None:
            return
        started = self._stage("pass_rate", self.frame.height)
        lo, hi = window
        self.frame, stats = frame_step(
            self.frame, lambda lf: pass_rate_window(lf, lo, hi), step="pass_rate"
        )
        self.frame = self.frame.drop("verdicts")
        self.steps.append(stats)
        self._done("pass_rate", started, self.frame.height)

    def selection(self) -> None:
        """At most k per prompt; reads the texts of crowded prompts' candidates only."""
        k = self.cfg.selection.per_prompt
        if k is None:
            return
        frame = self.frame.with_row_index("_pos")
        alive = frame.filter(self._alive())
        crowded = alive.group_by("prompt_id").len().filter(pl.col("len") > k)
        need = alive.join(crowded.select("prompt_id"), on="prompt_id", how="semi")
        started = self._stage("selection", need.height)
        skipped = self._dropped_so_far()
        dropped: Counter[str] = Counter()
        if need.height:
            mask = np.zeros(frame.height, dtype=bool)
            mask[need.get_column("_pos").to_numpy()] = True
            # Routing rewrites non-reasoning completions, so it reads whole rows then.
            columns = None if self.cfg.routing else ["sample_id", "completion", "completion_tokens"]
            parts: list[pa.RecordBatch] = []
            for offset, batch in self._aligned(columns):
                rows = np.flatnonzero(mask[offset : offset + batch.num_rows])
                if len(rows):
                    sub = batch.take(pa.array(rows))
                    if self.cfg.routing:
                        sub, _ = route_batch(sub)
                    parts.append(sub.select(["sample_id", "completion", "completion_tokens"]))
                self._advance(len(rows))
            texts = pl.from_arrow(pa.Table.from_batches(parts))
            assert isinstance(texts, pl.DataFrame)
            del parts
            candidates = need.select(
                "_pos", "sample_id", "prompt_id", "kept", "filter_reason"
            ).join(texts, on="sample_id", how="left")
            decided = select_per_prompt(
                candidates.lazy(), k, self.seed, tolerance=self.cfg.selection.tolerance
            ).collect()
            losers = decided.filter(pl.col("kept").fill_null(True).not_())
            self._drop(
                losers.get_column("_pos").to_numpy(), losers.get_column("filter_reason").to_list()
            )
            dropped.update(Counter(losers.get_column("filter_reason").to_list()))
        self.steps.append(
            StepStats(
                "selection",
                rows_in=self.frame.height,
                dropped=dropped,
                skipped=skipped,
                seconds=time.perf_counter() - started,
            )
        )
        self._done("selection", started, need.height)

    def mixture(self) -> tuple[MixtureReport, np.ndarray]:
        started = self._stage("mixture", None)
        skipped = self._dropped_so_far()
        spec = self.cfg.mixture.spec(self.seed)
        frame = self.frame.with_row_index("_pos")
        pool = frame.filter(self._alive())
        chosen, report = assemble(pool.select("sample_id", "track", "domain", "source"), spec)
        copies_frame = pool.join(chosen, on="sample_id", how="left").with_columns(
            pl.col("copies").fill_null(0)
        )
        copies = np.zeros(frame.height, dtype=np.int64)
        copies[copies_frame.get_column("_pos").to_numpy()] = copies_frame.get_column(
            "copies"
        ).to_numpy()
        served = {(g.track, g.domain, g.source) for g in report.groups if g.achieved > 0}
        left = copies_frame.filter(pl.col("copies") == 0)
        reasons = [
            NOT_SAMPLED if key in served else EXCLUDED
            for key in left.select("track", "domain", "source").iter_rows()
        ]
        self._drop(left.get_column("_pos").to_numpy(), reasons)
        # The mixture's rows are kept: rows no filter ever decided (rejection off) included.
        in_mix = copies > 0
        self.frame = self.frame.with_columns(
            pl.when(pl.Series(in_mix)).then(pl.lit(True)).otherwise(pl.col("kept")).alias("kept")
        )
        tallies = Counter({f"copies:{c}": n for c, n in Counter(copies[in_mix].tolist()).items()})
        self.steps.append(
            StepStats(
                "mixture",
                rows_in=frame.height,
                dropped=Counter(reasons),
                skipped=skipped,
                seconds=time.perf_counter() - started,
                tallies=tallies,
            )
        )
        self._done("mixture", started, pool.height)
        return report, copies

    def _decisions(self) -> tuple[pa.Array, pa.Array]:
        kept = self.frame.get_column("kept").to_arrow().cast(pa.bool_())
        reasons = self.frame.get_column("filter_reason").to_arrow().cast(pa.string())
        return kept, reasons

    def write(
        self,
        name: str,
        lineage: Lineage,
        copies: np.ndarray | None,
        total: int,
        *,
        reports: Sequence[Report] = (),
        before_commit: Callable[[], None] | None = None,
    ) -> int:
        """Stream the inputs again with the decisions (and copies) applied; one overwrite commit.

        `total` is the number of rows the commit must write; progress counts
        input rows. `reports` go into the commit. `before_commit` runs after
        the last batch, before the commit: raising there abandons the commit.
        """
        kept, reasons = self._decisions()
        step = _FinalizeStep(self.cfg.routing)

        def items() -> Iterator[tuple[pa.RecordBatch, pa.Array, pa.Array, np.ndarray | None]]:
            for offset, batch in self._aligned():
                n = batch.num_rows
                part = None if copies is None else copies[offset : offset + n]
                if part is not None and not part.any():
                    self._advance(n)
                    continue
                yield batch, kept.slice(offset, n), reasons.slice(offset, n), part
                self._advance(n)
            if before_commit is not None:
                before_commit()

        # Without routing the step is a few column swaps: not worth a trip to a worker.
        outputs = self._map(step, items()) if self.cfg.routing else map(step, items())
        result = self.store.commit(
            name, outputs, lineage=lineage, mode="overwrite", reports=reports
        )
        if result.rows_written != total:
            raise PipelineError(
                f"{name}: wrote {result.rows_written:,} rows, expected {total:,} "
                f"({result.rows_skipped:,} skipped as repeated keys)"
            )
        return result.version


def _decontam_section(report: DecontamReport | None) -> str:
    if report is None:
        return "No benchmark files were configured (`filter.decontam.benchmarks`): not checked."
    text = report_markdown(report).strip()
    # The card adds its own section heading.
    first, _, rest = text.partition("\n")
    return rest.strip() if first.startswith("#") else text


def run_reports(
    steps: Sequence[StepStats],
    dedup: dict[str, Any],
    decontam: DecontamReport | None,
    mixture: MixtureReport,
) -> list[Report]:
    """What the run knows about its two output versions, stored in both commits."""
    decontam_data = {"checked": False} if decontam is None else decontam.as_dict()
    return [
        Report(
            "filter.steps",
            "Filter steps",
            {"steps": [s.to_dict() for s in steps], "dedup": dedup},
            _steps_section(steps, dedup),
        ),
        Report(
            "filter.decontamination", "Decontamination", decontam_data, _decontam_section(decontam)
        ),
        Report("filter.mixture", "Mixture", mixture.to_dict(), mixture.markdown()),
    ]


# The report a generation run stores with each commit (generators.generate.COST_KIND); read
# here as plain data, so that filters need not import generators.
GENERATION_COST_KIND = "generation.cost"


def yield_report(
    store: Store, inputs: Sequence[TableRef], rows_per_input: Sequence[int], copies: np.ndarray
) -> Report:
    """What each input gave the mixture: its rows, the samples accepted (in the mixture, after
    verification and every filter), and, for a generated input, what generating it cost per
    accepted sample (its version's `generation.cost` report, followed through the lineage)."""
    entries = []
    offset = 0
    for ref, rows in zip(inputs, rows_per_input, strict=True):
        accepted = int(np.count_nonzero(copies[offset : offset + rows]))
        offset += rows
        entry: dict[str, Any] = {
            "table": ref.table,
            "version": ref.version,
            "rows": rows,
            "accepted": accepted,
            "acceptance": round(accepted / rows, 4) if rows else None,
            "generation": None,
        }
        cost = store.reports(ref.table, ref.version).get(GENERATION_COST_KIND)
        total = cost.report.data.get("total") if cost is not None else None
        if isinstance(total, dict):
            tokens = int(total.get("completion_tokens") or 0)
            entry["generation"] = {
                "version": cost.version if cost is not None else None,
                "samples": int(total.get("samples") or 0),
                "completion_tokens": tokens,
                "seconds": total.get("seconds"),
                "tokens_per_accepted": round(tokens / accepted, 1) if accepted else None,
            }
        entries.append(entry)
    lines = [
        "Samples each input gave the mixture after verification and filtering. For a "
        "generated input, the cost is its version's `generation.cost` report.",
        "",
        "| input | rows | accepted | acceptance | generated | completion tokens | "
        "tokens per accepted sample |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for e in entries:
        gen = e["generation"]
        rate = "" if e["acceptance"] is None else f"{e['acceptance']:.1%}"
        made = "" if gen is None else f"{gen['samples']:,}"
        tokens_text = "" if gen is None else f"{gen['completion_tokens']:,}"
        per = (
            ""
            if gen is None or gen["tokens_per_accepted"] is None
            else f"{gen['tokens_per_accepted']:,}"
        )
        lines.append(
            f"| `{e['table']}@{e['version']}` | {e['rows']:,} | {e['accepted']:,} | {rate} | "
            f"{made} | {tokens_text} | {per} |"
        )
    return Report(
        "filter.yield", "Yield and cost per accepted sample", {"inputs": entries}, "\n".join(lines)
    )


def _steps_section(steps: Sequence[StepStats], dedup: dict[str, Any]) -> str:
    lines = [
        "Every step of the filter run, in order. `seconds` is time inside the step, summed "
        "over workers. Rows dropped by a step keep its reason in the candidates table.",
        "",
        stats_markdown(steps),
    ]
    if "describe" in dedup:
        lines += ["", f"Dedup on {' + '.join(dedup['fields'])}: {dedup['describe']}."]
    else:
        lines += ["", f"Dedup on {' + '.join(dedup.get('fields', []))}: exact only."]
    return "\n".join(lines)


def _write_outputs(
    run: _Run,
    candidates_lineage: Lineage,
    mixture_lineage: Callable[[TableRef], Lineage],
    copies: np.ndarray,
    mixture_rows: int,
    reports: Sequence[Report],
) -> tuple[int, int]:
    """Write the candidates and the mixture tables, by default at once in two threads.

    Each write reads the inputs again and spends most of its time encoding
    and compressing in deltalake's native code, so two of them keep two cores
    busy where one after the other would not. The order of the commits stays
    as if sequential: the mixture's lineage names the candidates version, so
    its writer waits, after its last batch and before committing, for the
    candidates commit, and abandons its own commit when that one failed or
    did not land at the version named.
    """
    store, cfg = run.store, run.cfg
    name = cfg.outputs.candidates
    started = run._stage("write", 2 * run.rows)
    if not cfg.execution.parallel_writes:
        version = run.write(name, candidates_lineage, None, run.rows, reports=reports)
        mixture_version = run.write(
            cfg.outputs.mixture,
            mixture_lineage(TableRef(name, version)),
            copies,
            mixture_rows,
            reports=reports,
        )
        run._done("write", started, run.rows + mixture_rows)
        return version, mixture_version
    expected = store.latest_version(name) + 1 if store.exists(name) else 0
    candidates = TableRef(name, expected)
    done = threading.Event()
    outcome: dict[str, Any] = {}

    def write_candidates() -> None:
        try:
            outcome["version"] = run.write(
                name, candidates_lineage, None, run.rows, reports=reports
            )
        except BaseException as exc:  # handed to the main thread below
            outcome["error"] = exc
        finally:
            done.set()

    def candidates_committed() -> None:
        done.wait()
        if "error" in outcome:
            raise PipelineError(f"not committing the mixture: writing {name} failed")
        if outcome["version"] != expected:
            raise PipelineError(
                f"not committing the mixture: {name} landed at version "
                f"{outcome['version']}, not {expected} (another writer?)"
            )

    thread = threading.Thread(target=write_candidates, name="write-candidates", daemon=True)
    thread.start()
    try:
        mixture_version = run.write(
            cfg.outputs.mixture,
            mixture_lineage(candidates),
            copies,
            mixture_rows,
            reports=reports,
            before_commit=candidates_committed,
        )
    except BaseException as exc:
        thread.join()
        # The candidates' failure is the cause; the mixture's is its echo.
        raise outcome.get("error", exc) from None
    thread.join()  # the mixture committed, so the candidates did (`candidates_committed`)
    run._done("write", started, run.rows + mixture_rows)
    return outcome["version"], mixture_version


def run_filter_pipeline(
    store: Store,
    cfg: FilterRunConfig,
    lineage: Lineage,
    *,
    seed: int = 0,
    progress: Progress | None = None,
) -> PipelineReport:
    """Filter the input tables, assemble the mixture, commit both tables with their reports.

    `lineage` names the writer (and flow run, config hash); the parents of
    each commit are filled in here: the exact input versions for the
    candidates table, those plus the candidates version for the mixture.
    Both commits carry `run_reports` (step stats, decontamination, mixture),
    from which the card of either version is rendered (`data_cards.from_store`).
    """
    run = _Run(store, cfg, seed, progress)
    rows, exact, signatures, worker_seconds = run.analyse()
    dedup: dict[str, Any] = {"method": "off"}
    if cfg.dedup.enabled:
        dedup = run.dedup(rows, exact, signatures, worker_seconds)
    del rows, exact, signatures
    run.pass_rate()
    run.selection()
    mixture_report, copies = run.mixture()
    parents = tuple(run.inputs)
    sources = ", ".join(str(r) for r in parents)
    candidates_version, mixture_version = _write_outputs(
        run,
        dataclasses.replace(
            lineage, parents=parents, message=f"filter decisions for every row of {sources}"
        ),
        lambda candidates: dataclasses.replace(
            lineage,
            parents=(*parents, candidates),
            message=f"SFT mixture of {sources} (decisions in {candidates})",
        ),
        copies,
        mixture_report.achieved,
        [
            *run_reports(run.steps, dedup, run.decontam_report, mixture_report),
            yield_report(store, parents, run.rows_per_input, copies),
        ],
    )
    candidates = TableRef(cfg.outputs.candidates, candidates_version)
    mixture = TableRef(cfg.outputs.mixture, mixture_version)
    return PipelineReport(
        inputs=list(parents),
        rows=run.rows,
        candidates=candidates,
        mixture=mixture,
        mixture_rows=mixture_report.achieved,
        steps=run.steps,
        decontam=run.decontam_report,
        dedup=dedup,
        mixture_report=mixture_report,
        stages=run.stages,
    )
