"""Mixture assembly: from the pool of kept samples to the SFT mixture R1 trains on.

R1's SFT data is about 600k reasoning and 200k non-reasoning samples.
`assemble(pool, spec)` decides how many samples each (track, domain, source)
group contributes and which ones. It reads only small columns
(`sample_id`, `track`, `domain`, `source`); texts never enter it.

**How many per group.** Per track, the target is split over domains, then
each domain's share over its sources:

- `domain_quotas` are fixed counts, taken off the track target first;
- the rest is split by `domain_weights`, normalised over the domains that
  take part. Without weights the split follows the pool (a domain's weight
  is its number of samples: the natural mix). With weights, a domain not
  listed gets `other_weight` (0 by default: left out);
- within a domain, `source_weights` split the domain's share the same way
  (natural when empty, `other_weight` for unlisted sources).

A group can give at most `floor(pool * max_upsample)` rows. A group whose
share is more than that gives what it can, and the rest goes to the other
groups of the same track in proportion to their weights (water-filling),
until the target is met or every group is full. A quota domain's shortfall
goes to the weighted domains; weighted shortfalls never go to quota domains
(a quota is a fixed count). Shares are rounded to whole rows by largest
remainder, so a track's rows add up to its target exactly when it can be met.

**Which rows.** Within a group, rows are ranked by a stable hash of
`(seed, sample_id)` (blake2b, the same in every process, version and
platform) and taken from the top. A row's rank does not depend on the other
rows, so a larger pool keeps most of an earlier selection, and the same pool
and seed give the same mixture.

**Upsampling.** A group allocated `m` rows from a pool of `n < m` gives each
row `m // n` copies and the first `m % n` rows one more, so no row appears
more than `ceil(max_upsample)` times (`max_upsample = 1.0`, the default,
means no repeats). Copy 0 keeps the row's `sample_id`; copy k >= 1 is
`copy_id(sample_id, k)` = `"{sample_id}~{k}"`, so the store's key stays
unique. `expand_copies` writes the copies of an Arrow batch.

**Never short without saying so.** `MixtureReport` lists, per track and per
group, the target (or the weighted share, `desired`), what was achieved,
unique rows and repeats; `warnings` names every track below target, every
group below its share, every weighted domain the pool lacks and every pool
track the spec leaves out.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

POOL_COLUMNS = ("sample_id", "track", "domain", "source")
COPY_SEPARATOR = "~"
# The source label of a domain the spec names but the pool does not hold.
ABSENT_SOURCE = "(none in pool)"


def copy_id(sample_id: str, k: int) -> str:
    """The key of copy k of a row: copy 0 is the row itself, copy k >= 1 is `{id}~{k}`."""
    if k < 0:
        raise ValueError(f"copy index must be >= 0, got {k}")
    return sample_id if k == 0 else f"{sample_id}{COPY_SEPARATOR}{k}"


def _check_weights(label: str, weights: Mapping[str, float]) -> None:
    for name, w in weights.items():
        if not (math.isfinite(w) and w >= 0):
            raise ValueError(f"{label}[{name!r}] must be a finite number >= 0, got {w}")


@dataclass(frozen=True)
class TrackSpec:
    """How many samples one track contributes and how they split over domains and sources."""

    target: int
    domain_weights: dict[str, float] = field(default_factory=dict)
    domain_quotas: dict[str, int] = field(default_factory=dict)
    source_weights: dict[str, float] = field(default_factory=dict)
    # Weight of a domain (or source) that the non-empty weights do not list.
    other_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.target < 0:
            raise ValueError(f"target must be >= 0, got {self.target}")
        _check_weights("domain_weights", self.domain_weights)
        _check_weights("source_weights", self.source_weights)
        if not (math.isfinite(self.other_weight) and self.other_weight >= 0):
            raise ValueError(f"other_weight must be a finite number >= 0, got {self.other_weight}")
        for name, q in self.domain_quotas.items():
            if q < 0:
                raise ValueError(f"domain_quotas[{name!r}] must be >= 0, got {q}")
        both = sorted(set(self.domain_quotas) & set(self.domain_weights))
        if both:
            raise ValueError(
                f"domain {both[0]!r} has both a quota and a weight; give it one or the other"
            )
        if sum(self.domain_quotas.values()) > self.target:
            raise ValueError(
                f"domain_quotas add up to {sum(self.domain_quotas.values()):,}, "
                f"more than the track target {self.target:,}"
            )


def default_tracks() -> dict[str, TrackSpec]:
    """R1's mixture: 600k reasoning and 200k non-reasoning samples, each in its natural mix."""
    return {"reasoning": TrackSpec(600_000), "non_reasoning": TrackSpec(200_000)}


@dataclass(frozen=True)
class MixtureSpec:
    """Targets per track, a cap on repeats, and the seed of the row choice."""

    tracks: dict[str, TrackSpec] = field(default_factory=default_tracks)
    # Most rows a group may give, as a multiple of its pool: 1.0 = no repeats,
    # 2.0 = each sample at most twice.
    max_upsample: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_upsample) and self.max_upsample >= 1.0):
            raise ValueError(f"max_upsample must be >= 1.0, got {self.max_upsample}")
        if not self.tracks:
            raise ValueError("the mixture needs at least one track")


@dataclass(frozen=True)
class GroupResult:
    """One (track, domain, source) group: its pool, its share and what it gave."""

    track: str
    domain: str
    source: str
    pool: int
    quota: bool  # the group belongs to a quota domain
    weight: float  # share of the track's weighted part (or of its domain's quota)
    desired: float  # rows the weights (or the quota) ask for, before caps
    achieved: int
    unique: int

    @property
    def repeats(self) -> int:
        return self.achieved - self.unique

    def to_dict(self) -> dict[str, Any]:
        return {
            "track": self.track,
            "domain": self.domain,
            "source": self.source,
            "pool": self.pool,
            "quota": self.quota,
            "weight": round(self.weight, 6),
            "desired": round(self.desired, 3),
            "achieved": self.achieved,
            "unique": self.unique,
            "repeats": self.repeats,
        }


@dataclass(frozen=True)
class TrackResult:
    track: str
    target: int
    pool: int
    achieved: int
    unique: int

    @property
    def repeats(self) -> int:
        return self.achieved - self.unique

    @property
    def shortfall(self) -> int:
        return max(0, self.target - self.achieved)

    def to_dict(self) -> dict[str, Any]:
        return {
            "track": self.track,
            "target": self.target,
            "pool": self.pool,
            "achieved": self.achieved,
            "unique": self.unique,
            "repeats": self.repeats,
            "shortfall": self.shortfall,
        }


@dataclass(frozen=True)
class MixtureReport:
    """Target against achieved, per track and per group, and every reason to look twice."""

    seed: int
    max_upsample: float
    tracks: tuple[TrackResult, ...]
    groups: tuple[GroupResult, ...]
    excluded: dict[str, int]  # pool rows of tracks the spec leaves out, per track
    warnings: tuple[str, ...]

    @property
    def target(self) -> int:
        return sum(t.target for t in self.tracks)

    @property
    def achieved(self) -> int:
        return sum(t.achieved for t in self.tracks)

    @property
    def short(self) -> bool:
        return any(t.shortfall for t in self.tracks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "max_upsample": self.max_upsample,
            "target": self.target,
            "achieved": self.achieved,
            "short": self.short,
            "tracks": [t.to_dict() for t in self.tracks],
            "groups": [g.to_dict() for g in self.groups],
            "excluded": dict(self.excluded),
            "warnings": list(self.warnings),
        }

    def markdown(self) -> str:
        """The data card's mixture section: per track, then per group, then warnings."""
        lines = [
            f"Sampled with seed {self.seed}; at most {self.max_upsample:g}x a group's pool "
            f"(`max_upsample`). Upsampled copies carry `sample_id~k`.",
            "",
            "| track | target | achieved | unique | repeats | pool | short by |",
            "| --- | --: | --: | --: | --: | --: | --: |",
        ]
        for t in self.tracks:
            lines.append(
                f"| `{t.track}` | {t.target:,} | {t.achieved:,} | {t.unique:,} | {t.repeats:,} "
                f"| {t.pool:,} | {t.shortfall:,} |"
            )
        lines += [
            "",
            "| track | domain | source | pool | weight | desired | achieved | repeats |",
            "| --- | --- | --- | --: | --: | --: | --: | --: |",
        ]
        for g in self.groups:
            weight = f"quota {g.weight:.3f}" if g.quota else f"{g.weight:.3f}"
            lines.append(
                f"| `{g.track}` | `{g.domain}` | `{g.source}` | {g.pool:,} | {weight} "
                f"| {g.desired:,.1f} | {g.achieved:,} | {g.repeats:,} |"
            )
        if self.warnings:
            lines += ["", "Warnings:", ""] + [f"- {w}" for w in self.warnings]
        else:
            lines += ["", "Every track met its target and every group its share."]
        return "\n".join(lines)


def rank_keys(sample_ids: Sequence[str], seed: int) -> np.ndarray:
    """A stable 64-bit rank per id: blake2b of `"{seed}\\0{id}"`, (n,) uint64.

    Polars' and Python's own hashes change across versions and processes;
    this one does not, so a mixture is reproducible anywhere. About 1 s per
    million ids.
    """
    prefix = f"{seed}\x00".encode()
    blake = hashlib.blake2b
    digests = b"".join(blake(prefix + sid.encode(), digest_size=8).digest() for sid in sample_ids)
    return np.frombuffer(digests, dtype=">u8").astype(np.uint64)


def _water_fill(total: float, weights: Sequence[float], caps: Sequence[int]) -> list[float]:
    """Split `total` by `weights`, no share above its cap; overflow goes to the others by weight."""
    alloc = [0.0] * len(weights)
    active = [i for i, (w, c) in enumerate(zip(weights, caps, strict=True)) if w > 0 and c > 0]
    remaining = float(total)
    while active and remaining > 0:
        wsum = sum(weights[i] for i in active)
        full = [i for i in active if remaining * weights[i] / wsum >= caps[i]]
        if not full:
            for i in active:
                alloc[i] = remaining * weights[i] / wsum
            break
        for i in full:
            alloc[i] = float(caps[i])
            remaining -= caps[i]
        active = [i for i in active if i not in full]
    return alloc


def _round_shares(shares: Sequence[float], caps: Sequence[int]) -> list[int]:
    """Whole rows by largest remainder: the sum is the rounded total, no share above its cap."""
    floors = [min(math.floor(s + 1e-9), c) for s, c in zip(shares, caps, strict=True)]
    missing = round(sum(shares)) - sum(floors)
    # Earlier groups win ties, so the rounding is as deterministic as the group order.
    order = sorted(range(len(shares)), key=lambda i: (-(shares[i] - floors[i]), i))
    for i in order:
        if missing <= 0:
            break
        if floors[i] < caps[i] and shares[i] - floors[i] > 1e-9:
            floors[i] += 1
            missing -= 1
    return floors


def _normalised(weights: Mapping[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    return {k: (w / total if total > 0 else 0.0) for k, w in weights.items()}


@dataclass
class _Group:
    domain: str
    source: str
    pool: int
    cap: int
    quota: bool
    weight: float = 0.0
    desired: float = 0.0
    alloc: int = 0


def _plan_track(
    name: str, spec: TrackSpec, counts: Mapping[tuple[str, str], int], max_upsample: float
) -> tuple[list[_Group], list[str]]:
    """Allocate one track's target over its groups; also the warnings it raises."""
    warnings: list[str] = []
    domains: dict[str, dict[str, int]] = {}
    for (domain, source), n in sorted(counts.items()):
        domains.setdefault(domain, {})[source] = n
    for domain in [*spec.domain_quotas, *spec.domain_weights]:
        if domain not in domains and (
            spec.domain_quotas.get(domain, 0) > 0 or spec.domain_weights.get(domain, 0) > 0
        ):
            domains[domain] = {ABSENT_SOURCE: 0}
            warnings.append(f"{name}/{domain}: named in the spec, but the pool has no samples")

    def source_shares(sources: Mapping[str, int]) -> dict[str, float]:
        if sum(sources.values()) == 0:
            # An empty domain keeps its whole share on the absent label, so the
            # report shows what the missing domain was meant to give.
            return {s: 1.0 / len(sources) for s in sources}
        if not spec.source_weights:
            return _normalised({s: float(n) for s, n in sources.items()})
        return _normalised({s: spec.source_weights.get(s, spec.other_weight) for s in sources})

    def cap(n: int) -> int:
        return math.floor(n * max_upsample + 1e-9)

    groups: list[_Group] = []
    # Quota domains first: each fills its own sources, up to their caps.
    quota_given = 0
    for domain, quota in sorted(spec.domain_quotas.items()):
        sources = domains.get(domain, {})
        shares = source_shares(sources)
        members = [
            _Group(domain, s, n, cap(n), quota=True, weight=shares[s], desired=quota * shares[s])
            for s, n in sources.items()
        ]
        real = _water_fill(quota, [g.weight for g in members], [g.cap for g in members])
        for g, whole in zip(members, _round_shares(real, [g.cap for g in members]), strict=True):
            g.alloc = whole
        quota_given += sum(g.alloc for g in members)
        groups += members
    # The rest of the target, by weight, over the other domains.
    free = {d: s for d, s in domains.items() if d not in spec.domain_quotas}
    if spec.domain_weights:
        raw = {d: spec.domain_weights.get(d, spec.other_weight) for d in free}
    else:
        raw = {d: float(sum(s.values())) for d, s in free.items()}
    domain_shares = _normalised(raw)
    rest = spec.target - quota_given
    weighted: list[_Group] = []
    for domain, sources in free.items():
        for source, share in source_shares(sources).items():
            n = sources[source]
            weight = domain_shares[domain] * share
            weighted.append(_Group(domain, source, n, cap(n), quota=False, weight=weight))
    desired_total = spec.target - sum(spec.domain_quotas.values())
    for g in weighted:
        g.desired = desired_total * g.weight
    real = _water_fill(rest, [g.weight for g in weighted], [g.cap for g in weighted])
    for g, whole in zip(weighted, _round_shares(real, [g.cap for g in weighted]), strict=True):
        g.alloc = whole
    groups += weighted
    achieved = sum(g.alloc for g in groups)
    moved = "" if achieved < spec.target else "; the rest went to other groups"
    for g in groups:
        if g.alloc + 0.5 < g.desired and g.pool > 0:
            warnings.append(
                f"{name}/{g.domain}/{g.source}: {g.alloc:,} of the {g.desired:,.0f} its "
                f"{'quota' if g.quota else 'weight'} asks for (pool {g.pool:,}, at most "
                f"{g.cap:,} with max_upsample {max_upsample:g}){moved}"
            )
    if achieved < spec.target:
        room = sum(g.cap for g in groups if g.weight > 0)
        pool = sum(g.pool for g in groups)
        warnings.insert(
            0,
            f"{name}: {achieved:,} of the {spec.target:,} target (short by "
            f"{spec.target - achieved:,}): the pool holds {pool:,} samples and its weighted "
            f"groups allow at most {room:,} rows with max_upsample {max_upsample:g}",
        )
    return groups, warnings


def _check_pool(pool: pl.DataFrame) -> None:
    missing = [c for c in POOL_COLUMNS if c not in pool.columns]
    if missing:
        raise ValueError(f"the pool needs columns {list(POOL_COLUMNS)}; missing {missing}")
    for column in POOL_COLUMNS:
        nulls = pool.get_column(column).null_count()
        if nulls:
            raise ValueError(f"the pool's {column!r} column has {nulls:,} null value(s)")
    if pool.get_column("sample_id").is_duplicated().any():
        example = pool.filter(pl.col("sample_id").is_duplicated()).get_column("sample_id")[0]
        raise ValueError(f"the pool repeats sample_id {example!r}; ids must be unique")


def assemble(pool: pl.DataFrame, spec: MixtureSpec) -> tuple[pl.DataFrame, MixtureReport]:
    """Choose the mixture from `pool`; returns (`sample_id`, `copies`) rows and the report.

    `pool` holds one row per kept sample with at least `POOL_COLUMNS`. Only
    rows with `copies >= 1` are returned, ordered by track, domain, source and
    rank. See the module docstring for the rules.
    """
    _check_pool(pool)
    small = pool.select(POOL_COLUMNS)
    counts_frame = small.group_by("track", "domain", "source").len()
    counts: dict[str, dict[tuple[str, str], int]] = {}
    for track, domain, source, n in counts_frame.iter_rows():
        counts.setdefault(track, {})[(domain, source)] = n
    warnings: list[str] = []
    excluded = {t: sum(c.values()) for t, c in sorted(counts.items()) if t not in spec.tracks}
    for track, n in excluded.items():
        warnings.append(f"track {track!r}: {n:,} samples in the pool, not in the spec: left out")
    track_results: list[TrackResult] = []
    group_results: list[GroupResult] = []
    plan_rows: list[tuple[str, str, str, int, int]] = []
    for track, track_spec in spec.tracks.items():
        groups, track_warnings = _plan_track(
            track, track_spec, counts.get(track, {}), spec.max_upsample
        )
        warnings += track_warnings
        for g in groups:
            unique = min(g.alloc, g.pool)
            group_results.append(
                GroupResult(
                    track, g.domain, g.source, g.pool, g.quota, g.weight, g.desired, g.alloc, unique
                )
            )
            if g.alloc:
                plan_rows.append((track, g.domain, g.source, g.alloc, g.pool))
        track_results.append(
            TrackResult(
                track=track,
                target=track_spec.target,
                pool=sum(g.pool for g in groups),
                achieved=sum(g.alloc for g in groups),
                unique=sum(min(g.alloc, g.pool) for g in groups),
            )
        )
    report = MixtureReport(
        seed=spec.seed,
        max_upsample=spec.max_upsample,
        tracks=tuple(track_results),
        groups=tuple(group_results),
        excluded=excluded,
        warnings=tuple(warnings),
    )
    return _choose(small, plan_rows, spec.seed), report


def _choose(
    small: pl.DataFrame, plan_rows: Sequence[tuple[str, str, str, int, int]], seed: int
) -> pl.DataFrame:
    """Copies per row: each group's top `alloc` rows by rank, wrapping around when upsampling."""
    empty = pl.DataFrame(schema={"sample_id": pl.String, "copies": pl.Int64})
    if not plan_rows:
        return empty
    plan = pl.DataFrame(
        plan_rows,
        schema={
            "track": pl.String,
            "domain": pl.String,
            "source": pl.String,
            "_alloc": pl.Int64,
            "_pool": pl.Int64,
        },
        orient="row",
    )
    chosen = small.join(plan, on=["track", "domain", "source"], how="inner")
    ranks = rank_keys(chosen.get_column("sample_id").to_list(), seed)
    keys = ["track", "domain", "source"]
    return (
        chosen.with_columns(pl.Series("_rank", ranks, dtype=pl.UInt64))
        .sort([*keys, "_rank", "sample_id"])
        .with_columns(pl.int_range(pl.len(), dtype=pl.Int64).over(keys).alias("_pos"))
        .with_columns(
            (
                pl.col("_alloc") // pl.col("_pool")
                + (pl.col("_pos") < pl.col("_alloc") % pl.col("_pool")).cast(pl.Int64)
            ).alias("copies")
        )
        .filter(pl.col("copies") > 0)
        .select("sample_id", "copies")
    )


def expand_copies(batch: pa.RecordBatch, copies: np.ndarray | Sequence[int]) -> pa.RecordBatch:
    """The rows of `batch`, row i repeated `copies[i]` times (0 drops it), copy ids per `copy_id`.

    Copies follow their row directly, so a batch keeps its order.
    """
    counts = np.asarray(copies, dtype=np.int64)
    if counts.shape != (batch.num_rows,):
        raise ValueError(
            f"copies must hold one count per row ({batch.num_rows}), got {counts.shape}"
        )
    if (counts < 0).any():
        raise ValueError("copies must be >= 0")
    take = np.repeat(np.arange(batch.num_rows), counts)
    out = batch.take(pa.array(take))
    if (counts <= 1).all():
        return out
    # k-th copy of its row: position minus the position of the row's first copy.
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    k = np.arange(len(take)) - starts
    ids = out.column("sample_id")
    suffix = pc.if_else(
        pa.array(k > 0),
        pc.binary_join_element_wise(COPY_SEPARATOR, pa.array(k.astype(str)), ""),
        "",
    )
    new_ids = pc.binary_join_element_wise(ids, suffix, "")
    index = out.schema.get_field_index("sample_id")
    return out.set_column(index, out.schema.field(index), new_ids)
