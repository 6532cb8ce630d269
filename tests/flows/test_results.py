"""flows.results: the study's means, Student-t intervals, results.json and results.md, by hand."""

from __future__ import annotations

import math

import pytest

from flows.results import (
    SEED_KEYS,
    assemble,
    mean_ci,
    render_markdown,
    t_quantile,
    t_two_sided_prob,
    verdicts,
)


@pytest.mark.parametrize(
    ("df", "t975"),
    # Student-t 0.975 quantiles from printed tables (e.g. NIST/SEMATECH e-Handbook 1.3.6.7.2).
    [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (9, 2.262), (29, 2.045)],
)
def test_t_quantile_matches_the_printed_table(df: int, t975: float) -> None:
    assert t_quantile(0.95, df) == pytest.approx(t975, abs=1e-3)


def test_t_probability_is_exact_where_closed_forms_exist() -> None:
    # df 1 is the Cauchy: P(|T| < 1) = 1/2; df 2: P(|T| < t) = t / sqrt(2 + t^2).
    assert t_two_sided_prob(1.0, 1) == pytest.approx(0.5, abs=1e-12)
    assert t_two_sided_prob(3.0, 2) == pytest.approx(3 / math.sqrt(11), abs=1e-12)
    assert t_two_sided_prob(0.0, 5) == 0.0
    with pytest.raises(ValueError):
        t_two_sided_prob(1.0, 0)


def test_mean_ci_by_hand() -> None:
    # mean 0.23, sample sd 0.03, half-width t(0.975, 2) * 0.03 / sqrt(3) = 0.074524
    got = mean_ci([0.20, 0.26, 0.23])
    assert got["mean"] == pytest.approx(0.23)
    assert got["sd"] == pytest.approx(0.03)
    assert got["ci95"] == pytest.approx([0.23 - 0.0745241, 0.23 + 0.0745241], abs=1e-6)
    assert got["values"] == [0.20, 0.26, 0.23]
    one = mean_ci([0.5])
    assert one["mean"] == 0.5 and one["ci95"] is None
    assert mean_ci([0.1, 0.1])["ci95"] == pytest.approx([0.1, 0.1])
    with pytest.raises(ValueError):
        mean_ci([])


def _seed(gain: float, **overrides: float) -> dict[str, float]:
    row = {
        "r1_zero.accuracy_after": 0.10 + gain,
        "r1_zero.format_rate_after": 0.99,
        "distillation.student_distilled": 0.20,
        "distillation.student_rl": 0.05,
        "language.mixed_rate_without": 0.08,
        "language.mixed_rate_with": 0.01,
        "language.accuracy_without": 0.10 + gain,
        "language.accuracy_with": 0.10 + gain,
        "filtering.student_filtered": 0.20,
        "filtering.student_unfiltered": 0.20,
    }
    row.update(overrides)
    return row


def test_assemble_has_every_key_and_paired_differences() -> None:
    per_seed = [
        _seed(0.10, **{"distillation.student_rl": 0.04}),
        _seed(0.20, **{"distillation.student_rl": 0.06}),
        _seed(0.30, **{"distillation.student_rl": 0.05}),
    ]
    results = assemble(per_seed, {"r1_zero.accuracy_before": 0.10}, seeds=[0, 1, 2], seconds=1234.0)
    for key in (*SEED_KEYS, "r1_zero.accuracy_before"):
        group, name = key.split(".")
        entry = results[group][name]
        assert set(entry) >= {"mean", "ci95"} and len(entry["ci95"]) == 2
    assert results["r1_zero"]["accuracy_before"]["ci95"] == [0.10, 0.10]
    assert results["seconds"]["mean"] == 1234.0 and results["seconds"]["ci95"] == [1234.0] * 2
    gain = results["differences"]["r1_zero"]["accuracy_gain"]
    assert gain["values"] == pytest.approx([0.10, 0.20, 0.30])
    # paired: mean 0.2, sd 0.1, half-width 4.3027 * 0.1 / sqrt(3) = 0.248418
    assert gain["ci95"] == pytest.approx([0.2 - 0.248418, 0.2 + 0.248418], abs=1e-5)
    dist = results["differences"]["distillation"]["distilled_minus_rl"]
    assert dist["values"] == pytest.approx([0.16, 0.14, 0.15])
    assert results["seeds"] == [0, 1, 2]


def test_assemble_refuses_missing_figures() -> None:
    bad = _seed(0.1)
    del bad["language.mixed_rate_with"]
    with pytest.raises(ValueError, match="mixed_rate_with"):
        assemble([bad], {"r1_zero.accuracy_before": 0.1}, seeds=[0], seconds=1.0)
    with pytest.raises(ValueError, match="no seed"):
        assemble([], {"r1_zero.accuracy_before": 0.1}, seeds=[], seconds=1.0)


def test_verdicts_follow_the_intervals() -> None:
    steady = [_seed(0.20), _seed(0.21), _seed(0.22)]
    results = assemble(steady, {"r1_zero.accuracy_before": 0.10}, seeds=[0, 1, 2], seconds=1.0)
    said = verdicts(results)
    assert "**holds**" in said["r1_zero"] and "**above 95%**" in said["r1_zero"]
    assert "**holds**" in said["distillation"]  # 0.20 against 0.05 in every seed
    assert "**holds**" in said["language"] and "no drop shown" in said["language"]
    assert "**not shown**" in said["filtering"]  # equal in every seed: interval [0, 0]
    # One seed has no interval: nothing can hold.
    one = assemble([_seed(0.2)], {"r1_zero.accuracy_before": 0.1}, seeds=[0], seconds=1.0)
    assert all("**holds**" not in v for v in verdicts(one).values())


def test_markdown_page_shows_the_numbers() -> None:
    rows = [_seed(0.20), _seed(0.21), _seed(0.22)]
    results = assemble(
        rows,
        {"r1_zero.accuracy_before": 0.10},
        seeds=[0, 1, 2],
        seconds=600.0,
        extra_per_seed={"student_rl.cpu_seconds": [30.0, 31.0, 32.0]},
    )
    page = render_markdown(results, header=["HEADER LINE"], plots=["results.png"])
    assert page.startswith("# The R1 recipe at toy scale: results over 3 seeds")
    assert "HEADER LINE" in page and "![results.png](results.png)" in page
    assert "| R1-Zero | accuracy after | 31.0% [" in page
    assert "10.0% (no spread: shared)" in page
    assert "| student_rl.cpu_seconds | 31.0 [28.5, 33.5] | 30.0, 31.0, 32.0 |" in page
