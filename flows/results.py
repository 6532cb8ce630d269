"""The recipe study's numbers: means with Student-t confidence intervals over seeds, the
`results.json` document, and the `results.md` page. Pure functions (no files, no torch), so
that every figure on the page can be checked by hand (tests/flows/test_results.py).

    summary = mean_ci([0.20, 0.26, 0.23])       # {"mean": 0.23, "ci95": [lo, hi], "values": ...}
    results = assemble(per_seed, base, seconds=..., meta=...)
    page = render_markdown(results)

`per_seed` holds one flat mapping per seed (`"r1_zero.accuracy_after": 0.31, ...`, the keys of
`SEED_KEYS`); `base` the figures of the shared base model, which every seed starts from and so
has no seed-to-seed spread: its entry is `{"mean": m, "ci95": [m, m], "spread": "none: ..."}`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

# The figures every seed contributes (issue 11's results.json keys, less the shared base's).
SEED_KEYS = (
    "r1_zero.accuracy_after",
    "r1_zero.format_rate_after",
    "distillation.student_distilled",
    "distillation.student_rl",
    "language.mixed_rate_without",
    "language.mixed_rate_with",
    "language.accuracy_without",
    "language.accuracy_with",
    "filtering.student_filtered",
    "filtering.student_unfiltered",
)
BASE_KEYS = ("r1_zero.accuracy_before",)

# Paired comparisons (same seed on both sides): name -> (left, right); the difference is
# left - right, per seed, and its interval is the paired t interval.
COMPARISONS = {
    "r1_zero.accuracy_gain": ("r1_zero.accuracy_after", "r1_zero.accuracy_before"),
    "distillation.distilled_minus_rl": (
        "distillation.student_distilled",
        "distillation.student_rl",
    ),
    "language.mixed_rate_cut": ("language.mixed_rate_without", "language.mixed_rate_with"),
    "language.accuracy_cost": ("language.accuracy_without", "language.accuracy_with"),
    "filtering.filtered_minus_unfiltered": (
        "filtering.student_filtered",
        "filtering.student_unfiltered",
    ),
}


def t_two_sided_prob(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with `df` (an integer >= 1) degrees of freedom: the exact
    finite series of Abramowitz & Stegun 26.7.3-4 (integer df is all a count of seeds gives)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if t <= 0:
        return 0.0
    theta = math.atan(t / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    if df % 2 == 1:
        total, term = 0.0, c
        for k in range(1, (df - 1) // 2 + 1):
            if k > 1:
                term *= c * c * (2 * k - 2) / (2 * k - 1)
            total += term
        return (2 / math.pi) * (theta + s * total) if df > 1 else 2 * theta / math.pi
    total, term = 1.0, 1.0
    for k in range(1, df // 2):
        term *= c * c * (2 * k - 1) / (2 * k)
        total += term
    return s * total


def t_quantile(confidence: float, df: int) -> float:
    """The t such that P(|T| < t) = confidence (e.g. 4.303 for 0.95 and df 2), by bisection."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    lo, hi = 0.0, 1.0
    while t_two_sided_prob(hi, df) < confidence:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_two_sided_prob(mid, df) < confidence:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean and Student-t interval over seeds: mean +- t(df = n - 1) * s / sqrt(n), with s
    the sample standard deviation. One value has no interval (`ci95` None)."""
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("no values")
    n = len(xs)
    mean = sum(xs) / n
    out: dict[str, Any] = {"mean": mean, "ci95": None, "values": xs, "n": n}
    if n >= 2:
        sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
        half = t_quantile(confidence, n - 1) * sd / math.sqrt(n)
        out.update(ci95=[mean - half, mean + half], sd=sd)
    return out


def no_spread(value: float, why: str) -> dict[str, Any]:
    """A figure every seed shares (one model): its interval is the point itself."""
    return {"mean": float(value), "ci95": [float(value), float(value)], "spread": f"none: {why}"}


def _nested(flat: Mapping[str, Any]) -> dict[str, Any]:
    """`{"a.b": x}` -> `{"a": {"b": x}}`."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        group, name = key.split(".", 1)
        out.setdefault(group, {})[name] = value
    return out


def assemble(
    per_seed: Sequence[Mapping[str, float]],
    base: Mapping[str, float],
    *,
    seeds: Sequence[int],
    seconds: float,
    extra_per_seed: Mapping[str, Sequence[float]] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """results.json: every key of SEED_KEYS as `mean_ci` over the seeds, the base's as
    `no_spread`, `seconds` (the whole study's wall clock, one run: no spread), the paired
    differences of COMPARISONS, `extra_per_seed` (per-family figures, CPU-seconds, ...) as
    `mean_ci` too, and `meta` as it is."""
    if len(per_seed) != len(seeds):
        raise ValueError(f"{len(per_seed)} seed results for seeds {list(seeds)}")
    if not per_seed:
        raise ValueError("no seed finished: nothing to summarise")
    for i, row in enumerate(per_seed):
        missing = [k for k in SEED_KEYS if k not in row]
        if missing:
            raise ValueError(f"seed {seeds[i]}: missing {missing}")
    missing_base = [k for k in BASE_KEYS if k not in base]
    if missing_base:
        raise ValueError(f"base: missing {missing_base}")
    flat: dict[str, Any] = {k: mean_ci([row[k] for row in per_seed]) for k in SEED_KEYS}
    for k in base:  # BASE_KEYS and any other shared model's figure
        flat[k] = no_spread(base[k], "a shared model, the same for every seed")
    differences = {}
    for name, (left, right) in COMPARISONS.items():
        rights = (
            [base[right]] * len(per_seed) if right in base else [row[right] for row in per_seed]
        )
        differences[name] = mean_ci(
            [row[left] - r for row, r in zip(per_seed, rights, strict=True)]
        )
    results = _nested(flat)
    results["seconds"] = no_spread(seconds, "the wall clock of this one study run")
    results["differences"] = _nested(differences)
    results["seeds"] = list(seeds)
    if extra_per_seed:
        results["detail"] = {k: mean_ci(v) for k, v in sorted(extra_per_seed.items())}
    if meta:
        results["meta"] = dict(meta)
    return results


# --- verdicts -------------------------------------------------------------------------------


def _above_zero(d: Mapping[str, Any]) -> bool:
    return d.get("ci95") is not None and d["ci95"][0] > 0


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ci(entry: Mapping[str, Any]) -> str:
    if entry.get("ci95") is None:
        return f"{_pct(entry['mean'])} (one seed: no interval)"
    lo, hi = entry["ci95"]
    return f"{_pct(entry['mean'])} [{_pct(lo)}, {_pct(hi)}]"


def verdicts(results: Mapping[str, Any]) -> dict[str, str]:
    """One honest sentence per claim of issue 11, from the numbers alone: a claim holds when
    the paired difference's 95% interval lies above zero (with one seed, no claim holds)."""
    d = results["differences"]
    r0 = results["r1_zero"]
    gain = d["r1_zero"]["accuracy_gain"]
    fmt = r0["format_rate_after"]
    fmt_ok = fmt["mean"] > 0.95 and (fmt.get("ci95") is None or fmt["ci95"][0] > 0.95)
    out = {}
    out["r1_zero"] = (
        f"accuracy {_pct(r0['accuracy_before']['mean'])} -> {_ci(r0['accuracy_after'])}, "
        f"gain {_ci(gain)}: "
        + (
            "**holds** (the gain's interval is above zero)"
            if _above_zero(gain)
            else "**not shown**"
        )
        + f"; format rate {_ci(fmt)}: "
        + ("**above 95%**" if fmt_ok else "**not above 95%** over the interval")
    )
    dist = d["distillation"]["distilled_minus_rl"]
    out["distillation"] = (
        f"distilled {_ci(results['distillation']['student_distilled'])} against RL "
        f"{_ci(results['distillation']['student_rl'])}, difference {_ci(dist)}: "
        + ("**holds**" if _above_zero(dist) else "**not shown**")
    )
    cut = d["language"]["mixed_rate_cut"]
    cost = d["language"]["accuracy_cost"]
    lang = results["language"]
    out["language"] = (
        f"mixed-language rate {_ci(lang['mixed_rate_without'])} without the reward, "
        f"{_ci(lang['mixed_rate_with'])} with it, cut {_ci(cut)}: "
        + ("**holds**" if _above_zero(cut) else "**not shown**")
        + f"; accuracy cost (without - with) {_ci(cost)}"
        + (
            " (a drop: its interval is above zero)"
            if _above_zero(cost)
            else " (no drop shown: the interval reaches zero or below)"
        )
    )
    filt = d["filtering"]["filtered_minus_unfiltered"]
    out["filtering"] = (
        f"filtered {_ci(results['filtering']['student_filtered'])} against unfiltered "
        f"{_ci(results['filtering']['student_unfiltered'])}, difference {_ci(filt)}: "
        + ("**holds**" if _above_zero(filt) else "**not shown**")
    )
    return out


# --- the page -------------------------------------------------------------------------------

_ROWS = (
    ("R1-Zero", "accuracy before (the shared base)", "r1_zero", "accuracy_before"),
    ("R1-Zero", "accuracy after", "r1_zero", "accuracy_after"),
    ("R1-Zero", "format rate after (sampled)", "r1_zero", "format_rate_after"),
    ("Distillation", "student base, before SFT or RL", "distillation", "student_before"),
    ("Distillation", "student, SFT on the filtered mixture", "distillation", "student_distilled"),
    ("Distillation", "student, pure GRPO, same CPU-seconds", "distillation", "student_rl"),
    ("Language", "mixed-language rate without the reward", "language", "mixed_rate_without"),
    ("Language", "mixed-language rate with the reward", "language", "mixed_rate_with"),
    ("Language", "accuracy without the reward", "language", "accuracy_without"),
    ("Language", "accuracy with the reward", "language", "accuracy_with"),
    ("Filtering", "student on the filtered mixture", "filtering", "student_filtered"),
    ("Filtering", "student on as many unfiltered samples", "filtering", "student_unfiltered"),
)


def _per_seed(entry: Mapping[str, Any]) -> str:
    values = entry.get("values")
    return ", ".join(_pct(v) for v in values) if values else "shared"


def results_table(results: Mapping[str, Any]) -> list[str]:
    lines = [
        "| claim | figure | mean [95% CI over seeds] | per seed |",
        "|---|---|---|---|",
    ]
    for claim, label, group, key in _ROWS:
        entry = results[group].get(key)
        if entry is None:  # an optional figure (the student base's) not measured
            continue
        shown = f"{_pct(entry['mean'])} (no spread: shared)" if entry.get("spread") else _ci(entry)
        lines.append(f"| {claim} | {label} | {shown} | {_per_seed(entry)} |")
    return lines


def detail_table(results: Mapping[str, Any]) -> list[str]:
    """Per-family greedy and pass@k, CPU-seconds, steps: whatever `detail` holds."""
    detail = results.get("detail") or {}
    if not detail:
        return []
    lines = ["| figure | mean [95% CI] | per seed |", "|---|---|---|"]
    for key, entry in detail.items():
        values = entry["values"]
        if key.endswith(("cpu_seconds", "seconds", "steps", "rows")) or ".response_length." in key:
            shown = f"{entry['mean']:.1f}" + (
                f" [{entry['ci95'][0]:.1f}, {entry['ci95'][1]:.1f}]" if entry["ci95"] else ""
            )
            per = ", ".join(f"{v:.1f}" for v in values)
        else:
            shown, per = _ci(entry), ", ".join(_pct(v) for v in values)
        lines.append(f"| {key} | {shown} | {per} |")
    return lines


def render_markdown(
    results: Mapping[str, Any], *, header: Sequence[str] = (), plots: Sequence[str] = ()
) -> str:
    """The results page: `header` lines (command, load, caching), the table of results.json,
    the verdict per claim, the detail table, and the plots (file names beside the page)."""
    seeds = results["seeds"]
    lines = [
        f"# The R1 recipe at toy scale: results over {len(seeds)} seed{'s' if len(seeds) != 1 else ''}",
        "",
    ]
    lines += [*header, ""] if header else []
    lines += [
        "## Results",
        "",
        f"Seeds {', '.join(str(s) for s in seeds)}; "
        + (
            f"95% intervals are Student-t over the seeds (df = {len(seeds) - 1}); "
            if len(seeds) > 1
            else "one seed, so no intervals; "
        )
        + "accuracy is held-out greedy accuracy averaged over the "
        "families; the whole study took "
        f"{results['seconds']['mean']:.0f} s of wall clock.",
        "",
        *results_table(results),
        "",
        "## Verdicts",
        "",
    ]
    names = {
        "r1_zero": "1. R1-Zero",
        "distillation": "2. Distillation beats RL for the small model",
        "language": "3. Language consistency",
        "filtering": "4. Rejection filtering matters",
    }
    for key, sentence in verdicts(results).items():
        lines.append(f"- **{names[key]}**: {sentence}.")
    detail = detail_table(results)
    if detail:
        lines += ["", "## Detail", "", *detail]
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"
