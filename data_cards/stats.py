"""Statistics behind a dataset card, computed from a lazy Sample table in one streaming collect.

`compute_stats(lf)` takes a `pl.LazyFrame` with the Sample schema (a Delta or
Parquet scan, or an in-memory frame made lazy) and returns `CardStats`, a plain
frozen dataclass that `to_dict()` turns into JSON and `from_dict()` reads back.

Why it scales: the texts never come back to Python. Every figure is a
`group_by` count computed inside one `pl.collect_all(..., engine="streaming")`
call, and each length is reduced to its *distribution*, `(track, length) ->
count`, inside the query. The engine streams each text column in morsels,
turns it into `str.len_chars()` and counts; what comes back is one row per
distinct length (bounded by the longest text, a few hundred thousand at
most), not one row per sample. Quantiles, means and histograms are then exact
arithmetic on those counts.

Conventions the card relies on:

- A length counts only non-null values (`count`); zero-length strings are
  counted in `empty` and left out of the histogram, because a log axis has no
  place for zero. So `sum(histogram.counts) + empty == count`.
- Quantiles use the nearest-rank definition: p-th percentile is the smallest
  observed length with at least p% of values at or below it. It is always a
  length that occurs in the data, and easy to check by hand.
- Histogram bins are half-open `[edges[i], edges[i+1])` with integer edges
  (lengths are integers, so fractional edges would only make empty spikes).
  They are log-spaced when the positive lengths span at least a decade, which
  is the usual long-tailed case (a few short answers, a long CoT tail), and
  linear otherwise. Rounding to integers merges some narrow log bins at the
  short end, so there may be fewer bins than asked for.
- A null `finish_reason` is counted under the key `NULL_KEY`, so the counts
  sum to `rows` and the dict stays JSON-serialisable.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

NULL_KEY = "(null)"
# Length fields: card name -> expression on the Sample schema. Character counts
# (not bytes) because a CJK or math-symbol heavy CoT would look 3x longer in bytes.
CHAR_FIELDS: dict[str, str] = {
    "prompt_chars": "prompt",
    "completion_chars": "completion",
    "reasoning_chars": "reasoning",
    "answer_chars": "answer",
}
TOKEN_FIELDS: dict[str, str] = {"completion_tokens": "completion_tokens"}
# Every other column the card reads; the rest of the Sample schema is never touched.
KIND_COLUMNS = ("domain", "track", "source", "finish_reason", "verdicts", "kept", "filter_reason")
PERCENTILES = (50, 90, 99)
# Positive lengths spanning at least this ratio (max / min) get log-spaced bins.
LOG_SCALE_MIN_RATIO = 10


@dataclass(frozen=True)
class CompositionRow:
    domain: str
    track: str
    source: str
    count: int


@dataclass(frozen=True)
class VerdictRow:
    verifier: str
    verdict: str
    reason: str | None
    count: int


@dataclass(frozen=True)
class DecisionRow:
    kept: bool | None  # None: no filter has decided on these rows yet
    filter_reason: str | None
    count: int


@dataclass(frozen=True)
class Histogram:
    """Counts of positive lengths in bins `[edges[i], edges[i+1])`; `scale` is "log" or "linear"."""

    scale: str
    edges: list[int]
    counts: list[int]


@dataclass(frozen=True)
class LengthStats:
    """Distribution of one length field. All None (and an empty histogram) when count == 0."""

    count: int  # non-null values
    empty: int  # values equal to zero
    mean: float | None
    min: int | None
    p50: int | None
    p90: int | None
    p99: int | None
    max: int | None
    histogram: Histogram


@dataclass(frozen=True)
class CardStats:
    rows: int
    composition: list[CompositionRow]
    domains: dict[str, int]
    tracks: dict[str, int]
    sources: list[str]
    lengths: dict[str, LengthStats]
    # Same fields per track, binned with the overall edges so the plots can overlay them.
    lengths_by_track: dict[str, dict[str, LengthStats]]
    verdicts: list[VerdictRow]
    unjudged: int  # rows with no verdict from any verifier
    decisions: list[DecisionRow]
    finish_reasons: dict[str, int]
    histogram_bins: int = field(default=40)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (only str, int, float, bool, None, lists and dicts)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CardStats:
        """Inverse of `to_dict`, so a card can be re-rendered from saved stats."""

        def length(d: Mapping[str, Any]) -> LengthStats:
            return LengthStats(**{**d, "histogram": Histogram(**d["histogram"])})

        return cls(
            rows=data["rows"],
            composition=[CompositionRow(**r) for r in data["composition"]],
            domains=dict(data["domains"]),
            tracks=dict(data["tracks"]),
            sources=list(data["sources"]),
            lengths={k: length(v) for k, v in data["lengths"].items()},
            lengths_by_track={
                t: {k: length(v) for k, v in fields.items()}
                for t, fields in data["lengths_by_track"].items()
            },
            verdicts=[VerdictRow(**r) for r in data["verdicts"]],
            unjudged=data["unjudged"],
            decisions=[DecisionRow(**r) for r in data["decisions"]],
            finish_reasons=dict(data["finish_reasons"]),
            histogram_bins=data["histogram_bins"],
        )


def _null_last(value: Any) -> tuple[bool, Any]:
    """Sort key that puts None after every real value (None does not compare with str)."""
    return (value is None, "" if value is None else value)


def _by_count(counts: Mapping[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _edges(lo: int, hi: int, bins: int) -> tuple[str, list[int]]:
    """Integer bin edges covering [lo, hi), log-spaced when hi spans a decade over lo."""
    scale = "log" if hi - 1 >= LOG_SCALE_MIN_RATIO * lo else "linear"
    if scale == "log":
        ratio = math.log(hi / lo)
        points = [round(lo * math.exp(ratio * i / bins)) for i in range(bins + 1)]
    else:
        points = [lo + round((hi - lo) * i / bins) for i in range(bins + 1)]
    # The ends are pinned: float rounding must not drop the smallest or largest length.
    return scale, sorted({lo, hi, *points})


def _histogram(values: Sequence[int], counts: Sequence[int], edges: list[int]) -> list[int]:
    """Sum `counts` of positive `values` into the bins given by `edges`."""
    out = [0] * (len(edges) - 1)
    if not out:
        return out
    index = pl.Series(edges).search_sorted(pl.Series(values, dtype=pl.Int64), side="right")
    for i, v, c in zip(index.to_list(), values, counts, strict=True):
        if v > 0:
            out[i - 1] += c
    return out


def _length_stats(dist: Mapping[int, int], edges: list[int], scale: str) -> LengthStats:
    """Exact summary of a length distribution given as {length: count}."""
    values = sorted(dist)
    counts = [dist[v] for v in values]
    n = sum(counts)
    hist = Histogram(scale=scale, edges=edges, counts=_histogram(values, counts, edges))
    if n == 0:
        return LengthStats(0, 0, None, None, None, None, None, None, hist)
    quantiles: list[int] = []
    for pct in PERCENTILES:
        rank = max(1, -(-pct * n // 100))  # ceil(pct * n / 100) in integers: no float drift
        seen = 0
        for v, c in zip(values, counts, strict=True):
            seen += c
            if seen >= rank:
                quantiles.append(v)
                break
    return LengthStats(
        count=n,
        empty=dist.get(0, 0),
        mean=sum(v * c for v, c in zip(values, counts, strict=True)) / n,
        min=values[0],
        p50=quantiles[0],
        p90=quantiles[1],
        p99=quantiles[2],
        max=values[-1],
        histogram=hist,
    )


def _lengths(
    frames: Mapping[str, pl.DataFrame], tracks: Sequence[str], bins: int
) -> tuple[dict[str, LengthStats], dict[str, dict[str, LengthStats]]]:
    overall: dict[str, LengthStats] = {}
    by_track: dict[str, dict[str, LengthStats]] = {t: {} for t in tracks}
    for name, df in frames.items():
        per_track: dict[str, dict[int, int]] = {t: {} for t in tracks}
        total: dict[int, int] = {}
        for track, n, c in df.iter_rows():
            per_track.setdefault(track, {})[n] = c
            total[n] = total.get(n, 0) + c
        if name in TOKEN_FIELDS and not total:
            continue  # no generator recorded token counts: say nothing rather than "0 rows"
        positive = [v for v in total if v > 0]
        if positive:
            scale, edges = _edges(min(positive), max(positive) + 1, bins)
        else:
            scale, edges = "linear", []
        overall[name] = _length_stats(total, edges, scale)
        for track, dist in per_track.items():
            by_track.setdefault(track, {})[name] = _length_stats(dist, edges, scale)
    return overall, by_track


def _rows(df: pl.DataFrame) -> list[tuple[Any, ...]]:
    return list(df.iter_rows())


def compute_stats(lf: pl.LazyFrame, *, histogram_bins: int = 40) -> CardStats:
    """Every figure a card shows, from one streaming `collect_all` over a Sample table.

    `lf` must carry the Sample columns the card reads (domain, track, source,
    prompt, completion, reasoning, answer, completion_tokens, finish_reason,
    verdicts, kept, filter_reason); other columns are never read.
    """
    if histogram_bins < 1:
        raise ValueError(f"histogram_bins must be >= 1, got {histogram_bins}")
    needed = [*KIND_COLUMNS, *CHAR_FIELDS.values(), *TOKEN_FIELDS.values()]
    # Resolving the schema of a scan reads only file metadata, not rows.
    schema = lf.collect_schema()
    missing = [c for c in needed if c not in schema]
    if missing:
        raise ValueError(
            f"compute_stats: the table lacks column(s) {', '.join(missing)}; it needs the "
            "Sample schema (store.record.SAMPLE_SCHEMA)"
        )
    count = pl.len().cast(pl.Int64).alias("count")
    queries: dict[str, pl.LazyFrame] = {
        "composition": lf.group_by("domain", "track", "source").agg(count),
        "verdicts": lf.select(pl.col("verdicts").explode(empty_as_null=False, keep_nulls=False))
        .unnest("verdicts")
        .group_by("verifier", "verdict", "reason")
        .agg(count),
        "unjudged": lf.select(pl.col("verdicts").list.len().fill_null(0).eq(0).sum()),
        "decisions": lf.group_by("kept", "filter_reason").agg(count),
        "finish_reasons": lf.group_by("finish_reason").agg(count),
    }
    length_exprs = {name: pl.col(col).str.len_chars() for name, col in CHAR_FIELDS.items()}
    length_exprs |= {name: pl.col(col).cast(pl.Int64) for name, col in TOKEN_FIELDS.items()}
    for name, expr in length_exprs.items():
        # One query per field so each streams a single text column; the result is the
        # length distribution per track, one row per distinct (track, length).
        queries[name] = (
            lf.select("track", expr.cast(pl.Int64).alias("n"))
            .drop_nulls("n")
            .group_by("track", "n")
            .agg(count)
        )
    # Common-subplan elimination would rewrite these queries to share one cached scan of
    # every text column (visible in the plan as a CACHE node); switched off, each query
    # scans only its own column, and peak memory stays at a few row groups.
    frames = dict(
        zip(
            queries,
            pl.collect_all(
                queries.values(),
                engine="streaming",
                optimizations=pl.QueryOptFlags(comm_subplan_elim=False),
            ),
            strict=True,
        )
    )

    composition = sorted(
        (CompositionRow(*row) for row in _rows(frames["composition"])),
        key=lambda r: (-r.count, r.domain, r.track, r.source),
    )
    domains: dict[str, int] = {}
    tracks: dict[str, int] = {}
    for r in composition:
        domains[r.domain] = domains.get(r.domain, 0) + r.count
        tracks[r.track] = tracks.get(r.track, 0) + r.count
    verdicts = sorted(
        (VerdictRow(*row) for row in _rows(frames["verdicts"])),
        key=lambda r: (r.verifier, r.verdict, -r.count, _null_last(r.reason)),
    )
    decisions = sorted(
        (DecisionRow(*row) for row in _rows(frames["decisions"])),
        # kept first, then rejected, then undecided; reasons by count within each.
        key=lambda r: ({True: 0, False: 1, None: 2}[r.kept], -r.count, _null_last(r.filter_reason)),
    )
    finish = {NULL_KEY if k is None else k: c for k, c in _rows(frames["finish_reasons"])}
    lengths, lengths_by_track = _lengths(
        {name: frames[name] for name in length_exprs}, sorted(tracks), histogram_bins
    )
    return CardStats(
        rows=sum(tracks.values()),
        composition=composition,
        domains=_by_count(domains),
        tracks=_by_count(tracks),
        sources=sorted({r.source for r in composition}),
        lengths=lengths,
        lengths_by_track=lengths_by_track,
        verdicts=verdicts,
        unjudged=int(frames["unjudged"].item() or 0),
        decisions=decisions,
        finish_reasons=_by_count(finish),
        histogram_bins=histogram_bins,
    )
