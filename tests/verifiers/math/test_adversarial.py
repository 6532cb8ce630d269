"""Hostile inputs, one per property: the in-process fast path has no deadline, so it must be
bounded by construction. Each case must come back quickly with a verdict or a hand-off (None).
"""

from __future__ import annotations

import json
import time

import pytest

from verifiers.math.check import check_fast

# A hang guard, not a speed target: the blow-ups these inputs once caused took minutes.
LIMIT_S = 10.0
COUNTDOWN = json.dumps({"target": 24, "numbers": [3, 5, 3]})

HOSTILE = {
    "unclosed answer tags": ("5", "<answer>" * 100_000),
    "unclosed boxes": ("5", "</think>" + "\\boxed{" * 100_000),
    "phrase repeated": ("5", "The final answer is " * 40_000 + "5"),
    "unit-like tail": ("5", "\\boxed{1 " + "a" * 3000 + "!}"),
    "many short words": ("5", "\\boxed{1 " + "ab " * 1000 + "1}"),
    "wall of asterisks": ("5", "<answer>" + "*" * 3900 + "5</answer>"),
    "nested text": ("5", "<answer>" + "\\text{" * 600 + "5" + "}" * 600 + "</answer>"),
    "unbalanced text": ("5", "<answer>" + "\\text{" * 600 + "</answer>"),
    "thousands everywhere": ("5", "<answer>" + "1,000 " * 600 + "</answer>"),
    "long sum": ("5", "\\boxed{" + "1+" * 499 + "1}"),
    "high degree": ("x", "\\boxed{x^{100000}}"),
    "squaring chain": ("x", "\\boxed{" + "(" * 30 + "x" + ")^2" * 30 + "}"),
    "huge factorial": ("1", "\\boxed{100000!}"),
    "huge binomial": ("1", "\\boxed{\\binom{100000000}{50000000}}"),
    "sixty-four item sets": (
        "\\{" + ",".join(f"x+{i}" for i in range(64)) + "\\}",
        "\\boxed{\\{" + ",".join(f"x+{i}" for i in range(63, -1, -1)) + "\\}}",
    ),
    "sets of sets": (
        "\\{"
        + ",".join("\\{" + ",".join(str(k * 99 + i) for i in range(12)) + "\\}" for k in range(25))
        + "\\}",
        "\\boxed{\\{"
        + ",".join(
            "\\{" + ",".join(str(k * 99 + i) for i in range(12)) + "\\}" for k in range(24, -1, -1)
        )
        + "\\}}",
    ),
    "plus-minus explosion": ("1", "\\boxed{" + "\\pm 1" * 20 + "}"),
    "countdown nesting": (COUNTDOWN, "<answer>" + "(" * 400 + "3" + ")" * 400 + "</answer>"),
    "countdown length": (COUNTDOWN, "<answer>" + "3+" * 600 + "3</answer>"),
    # The not-a-math-object check reads the gold before the parser's guards do.
    "gold of unclosed inline math": ("\\(" * 50_000, "<answer>5</answer>"),
    "gold of dollars and spaces": ("$ " * 50_000 + "part" + " " * 50_000, "<answer>5</answer>"),
    "gold of references without a close": ("part (" * 30_000, "<answer>5</answer>"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_fast_path_is_bounded(name: str) -> None:
    gold, completion = HOSTILE[name]
    started = time.perf_counter()
    check_fast(gold, completion)
    assert time.perf_counter() - started < LIMIT_S
