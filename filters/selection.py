"""Per-prompt selection: a difficulty window on pass rates, and at most k samples per prompt.

Both steps work on polars frames of Sample rows and only ever drop: they set
`kept = False` with a reason on rows they reject and leave every other row as
it was (a row an earlier step dropped keeps its reason). Row order is kept.
`filters.base.frame_step` runs either one and counts what it dropped.

- `pass_rate_window(lf, lo, hi)`: a prompt's pass rate is the share of its
  judged samples (verdict `correct` or `incorrect` from the accuracy
  verifiers) that are correct, over all of its N samples, whatever other
  filters said about them: it measures how hard the prompt is for the model.
  Prompts whose rate lies outside [lo, hi] lose all their samples, with reason
  `pass_rate:{rate:.2f}_outside_[lo,hi]`. Prompts without any judged sample
  (general prompts, or only `unverifiable` verdicts) have no rate and are left
  alone. `lo` drops prompts the model never solves (their few correct samples
  are likely lucky), `hi` drops prompts it always solves (nothing to learn).
- `select_per_prompt(lf, k, seed)`: among a prompt's candidates (rows not
  dropped so far; run VerifiedCorrect first so that these are the correct
  ones) keep at most k, chosen to be diverse and short: greedily, each pick
  maximises the smallest Jaccard distance (over lower-cased word sets) to the
  samples picked so far, and among picks within `tolerance` of the best, the
  shortest wins (completion tokens, else characters / CHARS_PER_TOKEN), then
  a seeded hash of the sample id. The first pick is the shortest. The others
  get `selection:over_k`. Prompts with at most k candidates are settled in
  polars without looking at any text.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import polars as pl

from filters.base import CHARS_PER_TOKEN

ACCURACY_VERIFIERS = ("math", "code")
_WORD = re.compile(r"\w+")


def judgement(verifiers: Sequence[str] = ACCURACY_VERIFIERS) -> pl.Expr:
    """Per row: `incorrect` if any of `verifiers` says so, else `correct`, else `unverifiable`, else null.

    The same precedence as `rejection.VerifiedCorrect`, as a polars expression.
    """
    verdicts = pl.col("verdicts").list.eval(
        pl.element()
        .struct.field("verdict")
        .filter(pl.element().struct.field("verifier").is_in(list(verifiers)))
    )
    return (
        pl.when(verdicts.list.contains("incorrect"))
        .then(pl.lit("incorrect"))
        .when(verdicts.list.contains("correct"))
        .then(pl.lit("correct"))
        .when(verdicts.list.contains("unverifiable"))
        .then(pl.lit("unverifiable"))
        .otherwise(pl.lit(None, pl.String))
    )


def _not_dropped() -> pl.Expr:
    return pl.col("kept").fill_null(True)


def _drop_where(condition: pl.Expr, reason: pl.Expr) -> list[pl.Expr]:
    """Set kept=False and the reason on rows matching `condition` that are not dropped already."""
    hit = condition.fill_null(False) & _not_dropped()
    return [
        pl.when(hit).then(pl.lit(False)).otherwise(pl.col("kept")).alias("kept"),
        pl.when(hit).then(reason).otherwise(pl.col("filter_reason")).alias("filter_reason"),
    ]


def _fixed2(value: pl.Expr) -> pl.Expr:
    """`value` (in [0, 1]) as text with two decimals, like Python's `f"{value:.2f}"`."""
    hundredths = (value * 100).round(0).cast(pl.Int64)
    return pl.format("{}.{}", hundredths // 100, (hundredths % 100).cast(pl.String).str.zfill(2))


def pass_rates(lf: pl.LazyFrame, verifiers: Sequence[str] = ACCURACY_VERIFIERS) -> pl.LazyFrame:
    """One row per prompt: `prompt_id`, `samples`, `judged`, `correct`, `pass_rate` (null if unjudged)."""
    j = judgement(verifiers)
    return (
        lf.group_by("prompt_id", maintain_order=True)
        .agg(
            pl.len().alias("samples"),
            j.is_in(["correct", "incorrect"]).sum().alias("judged"),
            (j == "correct").sum().alias("correct"),
        )
        .with_columns(
            pl.when(pl.col("judged") > 0)
            .then(pl.col("correct") / pl.col("judged"))
            .otherwise(pl.lit(None, pl.Float64))
            .alias("pass_rate")
        )
    )


def pass_rate_window(
    lf: pl.LazyFrame,
    lo: float,
    hi: float,
    *,
    verifiers: Sequence[str] = ACCURACY_VERIFIERS,
) -> pl.LazyFrame:
    """Drop every sample of prompts whose pass rate lies outside [lo, hi]; see the module docstring."""
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"need 0 <= lo <= hi <= 1, got lo={lo}, hi={hi}")
    j = judgement(verifiers)
    judged = j.is_in(["correct", "incorrect"]).sum().over("prompt_id")
    correct = (j == "correct").sum().over("prompt_id")
    rate = pl.when(judged > 0).then(correct / judged).otherwise(pl.lit(None, pl.Float64))
    reason = pl.format(
        "pass_rate:{}_outside_[{},{}]", _fixed2(rate), pl.lit(f"{lo:g}"), pl.lit(f"{hi:g}")
    )
    return lf.with_columns(_drop_where((rate < lo) | (rate > hi), reason))


def _words(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))


def _jaccard_distance(a: frozenset[str], b: frozenset[str]) -> float:
    union = len(a | b)
    return 1.0 - len(a & b) / union if union else 0.0


def _tiebreak(seed: int, sample_id: str) -> str:
    return hashlib.sha256(f"{seed}\x00{sample_id}".encode()).hexdigest()


def pick_diverse(
    candidates: Sequence[tuple[str, float, str]], k: int, *, seed: int = 0, tolerance: float = 0.05
) -> list[str]:
    """Greedy max-min diverse pick of at most k `(sample_id, length, text)`; returns ids in pick order.

    Sort by (length, seeded hash of the id); take the first; then repeatedly
    take the candidate whose smallest Jaccard distance to the picks is largest,
    the earliest in sort order among those within `tolerance` of that best.
    """
    order = sorted(candidates, key=lambda c: (c[1], _tiebreak(seed, c[0])))
    if len(order) <= k:
        return [c[0] for c in order]
    words = [_words(c[2]) for c in order]
    picked = [0]
    # Smallest distance of each candidate to anything picked so far, updated per pick.
    nearest = [_jaccard_distance(w, words[0]) for w in words]
    nearest[0] = -1.0
    while len(picked) < k:
        best = max(nearest)
        choice = next(i for i, d in enumerate(nearest) if d >= best - tolerance and d >= 0.0)
        picked.append(choice)
        nearest[choice] = -1.0
        for i, w in enumerate(words):
            if nearest[i] >= 0.0:
                nearest[i] = min(nearest[i], _jaccard_distance(w, words[choice]))
    return [order[i][0] for i in picked]


def select_per_prompt(
    lf: pl.LazyFrame, k: int, seed: int = 0, *, tolerance: float = 0.05
) -> pl.LazyFrame:
    """Keep at most k diverse, short candidates per prompt; the rest get `selection:over_k`."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    frame = lf.collect()
    candidates_per_prompt = _not_dropped().cast(pl.Int64).sum().over("prompt_id")
    crowded = frame.filter(_not_dropped() & (candidates_per_prompt > k))
    length = (
        pl.col("completion_tokens")
        .cast(pl.Float64)
        .fill_null(pl.col("completion").str.len_chars() / CHARS_PER_TOKEN)
    )
    rows = crowded.select("prompt_id", "sample_id", length.alias("_length"), "completion")
    chosen: list[str] = []
    groups: dict[str, list[tuple[str, float, str]]] = {}
    for row in rows.iter_rows(named=True):
        groups.setdefault(row["prompt_id"], []).append(
            (row["sample_id"], row["_length"], row["completion"])
        )
    for candidates in groups.values():
        chosen.extend(pick_diverse(candidates, k, seed=seed, tolerance=tolerance))
    losers = pl.col("prompt_id").is_in(list(groups)) & ~pl.col("sample_id").is_in(chosen)
    return frame.with_columns(_drop_where(losers, pl.lit("selection:over_k"))).lazy()
