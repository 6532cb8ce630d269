"""Mixture assembly: targets, weights, quotas, redistribution, the upsampling cap, determinism."""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from filters.mixture import (
    ABSENT_SOURCE,
    MixtureSpec,
    TrackSpec,
    assemble,
    copy_id,
    expand_copies,
    rank_keys,
)


def pool_of(groups: dict[tuple[str, str, str], int]) -> pl.DataFrame:
    """A pool with `n` rows per (track, domain, source); ids name their group."""
    rows = [
        (f"{track}-{domain}-{source}-{i:05d}", track, domain, source)
        for (track, domain, source), n in groups.items()
        for i in range(n)
    ]
    return pl.DataFrame(rows, schema=["sample_id", "track", "domain", "source"], orient="row")


def achieved(chosen: pl.DataFrame, pool: pl.DataFrame) -> dict[tuple[str, str, str], int]:
    """Rows (copies counted) per group of a selection."""
    joined = chosen.join(pool, on="sample_id").group_by("track", "domain", "source")
    counts = joined.agg(pl.col("copies").sum())
    return {(t, d, s): n for t, d, s, n in counts.iter_rows()}


R1 = ("reasoning", "math", "a")
R2 = ("reasoning", "code", "b")
N1 = ("non_reasoning", "general", "c")


def test_targets_met_exactly_in_the_natural_mix() -> None:
    pool = pool_of({R1: 600, R2: 300, N1: 200})
    spec = MixtureSpec(tracks={"reasoning": TrackSpec(450), "non_reasoning": TrackSpec(150)})
    chosen, report = assemble(pool, spec)
    got = achieved(chosen, pool)
    assert got == {R1: 300, R2: 150, N1: 150}  # 2:1 as in the pool
    assert chosen.get_column("copies").max() == 1
    assert not report.short and not report.warnings
    assert [t.achieved for t in report.tracks] == [450, 150]


def test_weights_are_normalised_and_unlisted_domains_left_out() -> None:
    extra = ("reasoning", "science", "d")
    pool = pool_of({R1: 1000, R2: 1000, extra: 1000})
    spec = MixtureSpec(tracks={"reasoning": TrackSpec(600, domain_weights={"math": 3, "code": 1})})
    chosen, report = assemble(pool, spec)
    assert achieved(chosen, pool) == {R1: 450, R2: 150}
    science = next(g for g in report.groups if g.domain == "science")
    assert science.weight == 0 and science.achieved == 0


def test_source_weights_split_a_domain() -> None:
    a, b = ("reasoning", "math", "a"), ("reasoning", "math", "b")
    pool = pool_of({a: 500, b: 500})
    spec = MixtureSpec(tracks={"reasoning": TrackSpec(400, source_weights={"a": 1, "b": 3})})
    chosen, _ = assemble(pool, spec)
    assert achieved(chosen, pool) == {a: 100, b: 300}


def test_shortfall_goes_to_other_groups_in_proportion() -> None:
    small = ("reasoning", "code", "b")
    other = ("reasoning", "science", "d")
    pool = pool_of({R1: 1000, small: 50, other: 1000})
    weights = {"math": 2.0, "code": 1.0, "science": 1.0}
    spec = MixtureSpec(tracks={"reasoning": TrackSpec(800, domain_weights=weights)})
    chosen, report = assemble(pool, spec)
    got = achieved(chosen, pool)
    # code wanted 200 but has 50; the other 150 split 2:1 between math and science.
    assert got == {R1: 400 + 100, small: 50, other: 200 + 50}
    assert sum(got.values()) == 800 and not report.short
    assert any("reasoning/code/b: 50 of the 200" in w for w in report.warnings)


def test_upsampling_stops_at_the_cap_and_the_report_says_short() -> None:
    pool = pool_of({N1: 100})
    spec = MixtureSpec(tracks={"non_reasoning": TrackSpec(300)}, max_upsample=2.0)
    chosen, report = assemble(pool, spec)
    assert achieved(chosen, pool) == {N1: 200}
    assert chosen.get_column("copies").max() == 2
    track = report.tracks[0]
    assert (track.achieved, track.unique, track.repeats, track.shortfall) == (200, 100, 100, 100)
    assert report.short
    assert report.warnings[0].startswith("non_reasoning: 200 of the 300 target (short by 100)")
    assert "short by" in report.markdown()


def test_partial_upsampling_gives_extra_copies_to_the_top_ranked_rows() -> None:
    pool = pool_of({N1: 100})
    spec = MixtureSpec(tracks={"non_reasoning": TrackSpec(150)}, max_upsample=1.5)
    chosen, report = assemble(pool, spec)
    counts = chosen.get_column("copies").value_counts().sort("copies")
    assert counts.rows() == [(1, 50), (2, 50)]
    assert report.tracks[0].repeats == 50 and not report.short


def test_no_repeats_by_default() -> None:
    pool = pool_of({N1: 100})
    chosen, report = assemble(pool, MixtureSpec(tracks={"non_reasoning": TrackSpec(150)}))
    assert chosen.height == 100 and chosen.get_column("copies").max() == 1
    assert report.tracks[0].shortfall == 50


def test_quotas_are_fixed_and_their_shortfall_goes_to_weighted_domains() -> None:
    few = ("reasoning", "planning", "e")
    pool = pool_of({R1: 1000, R2: 1000, few: 30})
    spec = MixtureSpec(
        tracks={"reasoning": TrackSpec(500, domain_quotas={"planning": 100, "code": 100})}
    )
    chosen, report = assemble(pool, spec)
    got = achieved(chosen, pool)
    assert got[R2] == 100  # the quota, not a natural share
    assert got[few] == 30
    assert got[R1] == 370  # the rest of the target, including planning's shortfall
    assert any("planning/e: 30 of the 100 its quota asks for" in w for w in report.warnings)


def test_a_domain_named_but_absent_is_reported() -> None:
    pool = pool_of({R1: 1000})
    spec = MixtureSpec(
        tracks={"reasoning": TrackSpec(200, domain_weights={"math": 1, "science": 1})}
    )
    chosen, report = assemble(pool, spec)
    assert achieved(chosen, pool) == {R1: 200}
    absent = next(g for g in report.groups if g.domain == "science")
    assert (absent.source, absent.pool, absent.desired, absent.achieved) == (
        ABSENT_SOURCE,
        0,
        100.0,
        0,
    )
    assert "reasoning/science: named in the spec, but the pool has no samples" in report.warnings


def test_tracks_outside_the_spec_are_excluded_and_reported() -> None:
    pool = pool_of({R1: 10, N1: 10})
    chosen, report = assemble(pool, MixtureSpec(tracks={"reasoning": TrackSpec(5)}))
    assert achieved(chosen, pool) == {R1: 5}
    assert report.excluded == {"non_reasoning": 10}
    assert any("non_reasoning" in w and "left out" in w for w in report.warnings)


def test_deterministic_for_a_seed_and_different_across_seeds() -> None:
    pool = pool_of({R1: 1000})
    spec = MixtureSpec(tracks={"reasoning": TrackSpec(100)}, seed=7)
    first, _ = assemble(pool, spec)
    shuffled, _ = assemble(pool.sample(fraction=1.0, shuffle=True, seed=1), spec)
    assert first.equals(shuffled)  # the pool's order does not matter
    other, _ = assemble(pool, MixtureSpec(tracks={"reasoning": TrackSpec(100)}, seed=8))
    assert set(first.get_column("sample_id")) != set(other.get_column("sample_id"))


def test_a_larger_pool_keeps_most_of_the_selection() -> None:
    base = pool_of({R1: 1000})
    grown = pool_of({R1: 1100})
    spec = MixtureSpec(tracks={"reasoning": TrackSpec(100)})
    a = set(assemble(base, spec)[0].get_column("sample_id"))
    b = set(assemble(grown, spec)[0].get_column("sample_id"))
    assert len(a & b) >= 85  # ranks are per row: new rows displace only a few


def test_rank_keys_are_stable() -> None:
    keys = rank_keys(["a", "b"], seed=0)
    assert keys.dtype == np.uint64
    assert keys.tolist() == rank_keys(["a", "b"], seed=0).tolist()
    assert keys.tolist() != rank_keys(["a", "b"], seed=1).tolist()
    # blake2b-64 of "0\0a", big-endian: the same on every platform and version.
    digest = hashlib.blake2b(b"0\x00a", digest_size=8).digest()
    assert int(keys[0]) == int.from_bytes(digest, "big")


def test_copies_get_distinct_ids_in_order() -> None:
    batch = pa.RecordBatch.from_pydict({"sample_id": ["a", "b", "c"], "n": [1, 2, 3]})
    out = expand_copies(batch, [2, 0, 3])
    assert out.column("sample_id").to_pylist() == ["a", "a~1", "c", "c~1", "c~2"]
    assert out.column("n").to_pylist() == [1, 1, 3, 3, 3]
    assert [copy_id("a", k) for k in range(3)] == ["a", "a~1", "a~2"]
    assert expand_copies(batch, [1, 1, 1]).column("sample_id").to_pylist() == ["a", "b", "c"]


def test_every_upsampled_id_is_unique() -> None:
    pool = pool_of({N1: 7})
    chosen, _ = assemble(pool, MixtureSpec(tracks={"non_reasoning": TrackSpec(20)}, max_upsample=3))
    batch = pa.RecordBatch.from_pydict({"sample_id": chosen.get_column("sample_id").to_list()})
    ids = expand_copies(batch, chosen.get_column("copies").to_numpy()).column("sample_id")
    assert len(ids) == 20 and len(set(ids.to_pylist())) == 20


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target": -1}, "target must be >= 0"),
        ({"target": 10, "domain_weights": {"math": -1.0}}, r"domain_weights\['math'\]"),
        ({"target": 10, "domain_quotas": {"math": 11}}, "more than the track target"),
        (
            {"target": 10, "domain_quotas": {"math": 1}, "domain_weights": {"math": 1.0}},
            "both a quota and a weight",
        ),
    ],
)
def test_track_spec_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrackSpec(**kwargs)  # type: ignore[arg-type]


def test_pool_errors() -> None:
    with pytest.raises(ValueError, match="missing"):
        assemble(pl.DataFrame({"sample_id": ["a"]}), MixtureSpec())
    twice = pool_of({R1: 1}).vstack(pool_of({R1: 1}))
    with pytest.raises(ValueError, match="repeats sample_id"):
        assemble(twice, MixtureSpec())
    with pytest.raises(ValueError, match="max_upsample"):
        MixtureSpec(max_upsample=0.5)
