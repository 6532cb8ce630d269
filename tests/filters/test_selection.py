"""Per-prompt selection: the pass-rate window and at most k diverse, short samples per prompt."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import polars as pl
import pytest

from filters.base import frame_step
from filters.selection import pass_rate_window, pass_rates, pick_diverse, select_per_prompt
from store.record import to_table, validate_sample


def verdict(verifier: str, value: str) -> dict[str, Any]:
    return {"verifier": verifier, "verdict": value, "reason": None, "version": "1"}


def sample(prompt_id: str, index: int, *verdicts: str, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "prompt_id": prompt_id,
        "prompt": f"prompt {prompt_id}",
        "completion": f"<think>attempt {index}</think><answer>{index}</answer>",
        "domain": "math",
        "track": "reasoning",
        "source": "toy",
        "sample_index": index,
        "verdicts": [verdict("format", "correct")] + [verdict("math", v) for v in verdicts],
    }
    row.update(overrides)
    return validate_sample(row)


def frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    df = pl.from_arrow(to_table(rows))
    assert isinstance(df, pl.DataFrame)
    return df


def pass_rate_rows() -> list[dict[str, Any]]:
    rows = [sample("never", i, "incorrect") for i in range(4)]
    rows[0] = sample("never", 0, "incorrect", kept=False, filter_reason="format:missing_think")
    rows += [sample("half", i, "correct" if i < 2 else "incorrect") for i in range(4)]
    rows += [sample("always", i, "correct") for i in range(4)]
    # unverifiable samples are not attempts the verifier could score: 1 of 2 judged
    rows += [sample("mixed", i, v) for i, v in enumerate(["correct", "incorrect", "unverifiable"])]
    rows += [sample("general", i, domain="general") for i in range(3)]  # no accuracy verdict
    rows += [sample("third", i, "correct" if i == 0 else "incorrect") for i in range(3)]
    return rows


def test_pass_rates_per_prompt() -> None:
    rates = pass_rates(frame(pass_rate_rows()).lazy()).collect()
    got = dict(zip(rates["prompt_id"], rates["pass_rate"], strict=True))
    assert got == {
        "never": 0.0,
        "half": 0.5,
        "always": 1.0,
        "mixed": 0.5,
        "general": None,
        "third": pytest.approx(1 / 3),
    }
    assert rates.filter(pl.col("prompt_id") == "mixed")["judged"].item() == 2


def test_pass_rate_window_drops_too_easy_and_too_hard_prompts() -> None:
    df = frame(pass_rate_rows())
    out = pass_rate_window(df.lazy(), 0.4, 0.75).collect()
    assert out["sample_id"].to_list() == df["sample_id"].to_list()  # order kept, nothing deleted
    reasons = dict(
        out.group_by("prompt_id", maintain_order=True)
        .agg(pl.col("filter_reason").drop_nulls().unique().sort())
        .iter_rows()
    )
    assert reasons == {
        # the row dropped earlier keeps its reason, yet still counted as an attempt
        "never": ["format:missing_think", "pass_rate:0.00_outside_[0.4,0.75]"],
        "half": [],
        "always": ["pass_rate:1.00_outside_[0.4,0.75]"],
        "mixed": [],
        "general": [],
        "third": ["pass_rate:0.33_outside_[0.4,0.75]"],
    }
    inside = out.filter(pl.col("prompt_id").is_in(["half", "mixed", "general"]))
    assert inside["kept"].is_null().all()  # the window only drops; it never marks kept
    dropped = out.filter(pl.col("prompt_id").is_in(["never", "always", "third"]))
    assert not dropped["kept"].any()


def test_pass_rate_window_bounds_are_inclusive_and_checked() -> None:
    df = frame(pass_rate_rows())
    out = pass_rate_window(df.lazy(), 0.0, 1.0).collect()
    assert out["filter_reason"].drop_nulls().to_list() == ["format:missing_think"]
    only_half = pass_rate_window(df.lazy(), 0.5, 0.5).collect()
    assert only_half.filter(pl.col("prompt_id") == "half")["kept"].is_null().all()
    with pytest.raises(ValueError, match="lo <= hi"):
        pass_rate_window(df.lazy(), 0.8, 0.2)


def test_pass_rate_window_stats_through_frame_step() -> None:
    _, stats = frame_step(
        frame(pass_rate_rows()), lambda lf: pass_rate_window(lf, 0.4, 0.75), step="pass_rate"
    )
    assert stats.dropped == Counter(
        {
            "pass_rate:0.00_outside_[0.4,0.75]": 3,
            "pass_rate:1.00_outside_[0.4,0.75]": 4,
            "pass_rate:0.33_outside_[0.4,0.75]": 3,
        }
    )
    assert (stats.rows_in, stats.skipped, stats.kept) == (21, 1, 10)


# -- select_per_prompt ---------------------------------------------------------

ADD_FIRST = "add twelve and seven to get nineteen then subtract five to get fourteen"
SUBTRACT_FIRST = "take five away from seven leaving two and two more than twelve is fourteen"
COUNT_UP = (
    "count upward from twelve by seven steps reaching nineteen minus five equals fourteen exactly"
)


def completion(text: str) -> str:
    return f"<think>{text}</think><answer>14</answer>"


def words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def crowded_rows() -> list[dict[str, Any]]:
    return [
        sample("p", 0, "correct", completion=completion(ADD_FIRST), completion_tokens=20, kept=True),
        # a near copy of the first, slightly longer
        sample("p", 1, "correct", completion=completion(ADD_FIRST + " indeed"), completion_tokens=21, kept=True),
        sample("p", 2, "correct", completion=completion(SUBTRACT_FIRST), completion_tokens=25, kept=True),
        sample("p", 3, "correct", completion=completion(COUNT_UP), completion_tokens=200, kept=True),
        sample("p", 4, "incorrect", completion=completion("wrong"), completion_tokens=3, kept=False, filter_reason="verified:incorrect"),
        sample("q", 0, "correct", completion_tokens=10, kept=True),
        sample("q", 1, "correct", completion_tokens=10, kept=True),
    ]  # fmt: skip


def test_select_keeps_k_diverse_short_samples_and_marks_the_rest() -> None:
    df = frame(crowded_rows())
    out = select_per_prompt(df.lazy(), k=2).collect()
    assert out["sample_id"].to_list() == df["sample_id"].to_list()
    assert out["filter_reason"].to_list() == [
        None,  # the shortest is picked first
        "selection:over_k",  # a near copy of a pick adds nothing
        None,  # as diverse as the 200-token sample, within tolerance, and shorter
        "selection:over_k",
        "verified:incorrect",  # not a candidate: dropped earlier, reason kept
        None,  # prompt q has only 2 candidates: untouched
        None,
    ]
    assert out["kept"].to_list() == [True, False, True, False, False, True, True]


def test_select_diversity_beats_length_outside_the_tolerance() -> None:
    out = select_per_prompt(frame(crowded_rows()).lazy(), k=2, tolerance=0.0).collect()
    picked = out.filter(pl.col("prompt_id") == "p", pl.col("kept"))["sample_index"].to_list()
    first = words(completion(ADD_FIRST))
    distances = {
        i: 1 - len(first & words(completion(text))) / len(first | words(completion(text)))
        for i, text in ((2, SUBTRACT_FIRST), (3, COUNT_UP))
    }
    # The long one is more diverse, by less than the default tolerance of 0.05.
    assert 0 < distances[3] - distances[2] < 0.05
    assert picked == [0, 3]


def test_select_k1_keeps_the_shortest_and_is_deterministic() -> None:
    lf = frame(crowded_rows()).lazy()
    first = select_per_prompt(lf, k=1, seed=7).collect()
    assert first.filter(pl.col("prompt_id") == "p", pl.col("kept"))["sample_index"].to_list() == [0]
    assert first.equals(select_per_prompt(lf, k=1, seed=7).collect())


def test_seed_breaks_exact_ties_only() -> None:
    rows = [sample("t", i, "correct", completion_tokens=10, kept=True) for i in range(2)]
    for row in rows:
        row["completion"] = completion("the same words")
    lf = frame(rows).lazy()
    winners = {
        select_per_prompt(lf, k=1, seed=seed)
        .collect()
        .filter(pl.col("kept"))["sample_index"]
        .item()
        for seed in range(8)
    }
    assert winners == {0, 1}


def test_select_counts_null_kept_as_a_candidate_and_checks_k() -> None:
    rows = [
        sample("u", i, "correct", completion=completion(f"way {i} " * (i + 1))) for i in range(3)
    ]
    out, stats = frame_step(frame(rows), lambda lf: select_per_prompt(lf, k=2), step="selection")
    assert out["filter_reason"].to_list().count("selection:over_k") == 1
    assert out["kept"].null_count() == 2  # selection drops; it never marks kept
    assert stats.dropped == Counter({"selection:over_k": 1}) and stats.kept == 2
    with pytest.raises(ValueError, match="k must be >= 1"):
        select_per_prompt(frame(rows).lazy(), k=0)


def test_pick_diverse_directly() -> None:
    candidates = [
        ("a", 5.0, "one two three"),
        ("b", 6.0, "one two three"),
        ("c", 9.0, "four five six"),
        ("d", 7.0, "one two four"),
    ]
    assert pick_diverse(candidates, 1) == ["a"]
    assert pick_diverse(candidates, 2) == ["a", "c"]
    assert pick_diverse(candidates, 3) == ["a", "c", "d"]
    assert sorted(pick_diverse(candidates, 10)) == ["a", "b", "c", "d"]
