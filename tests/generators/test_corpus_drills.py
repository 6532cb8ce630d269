"""The corpus's arithmetic drills: every fact is true, and drills taken from the families'
worked steps follow how often those steps occur (so the facts the problems need most are
drilled most), unlike the uniform drills."""

from __future__ import annotations

import random
import re
from collections import Counter
from fractions import Fraction

import pytest

from generators.tasks import SOURCES
from generators.tasks.corpus import DRILL_SOURCE, CorpusConfig, build_corpus, drill_document

_FACT = re.compile(r"^(\d+)([-+*/])(\d+)=(\d+)\.$")
FAMILIES = ["toy-arithmetic", "toy-countdown"]


def _true(fact: str) -> bool:
    match = _FACT.match(fact)
    assert match is not None, fact
    a, op, b, c = int(match[1]), match[2], int(match[3]), int(match[4])
    value = {"+": a + b, "-": a - b, "*": a * b, "/": Fraction(a, b)}[op]
    return value == c


def _facts(rows: list[dict[str, object]]) -> list[str]:
    return [
        f for r in rows if r["source"] == DRILL_SOURCE for f in str(r["completion"]).split("\n")
    ]


def test_step_drills_are_true_facts_in_the_count_asked() -> None:
    cfg = CorpusConfig(
        families={"toy-arithmetic": 3},
        text_documents=0,
        drill_documents=20,
        drill_facts=6,
        drill_steps_from=FAMILIES,
    )
    rows = build_corpus(cfg)
    drills = [r for r in rows if r["source"] == DRILL_SOURCE]
    assert len(drills) == 20
    assert all(len(str(r["completion"]).split("\n")) == 6 for r in drills)
    assert all(_true(f) for f in _facts(rows))
    assert build_corpus(cfg) == rows  # deterministic


def test_step_drills_follow_the_steps_the_problems_use() -> None:
    # The steps of held-out-style problems (a seed no drill used): the drills drawn from the
    # worked steps cover far more of them with facts seen ten times or more than uniform drills
    # of the same size do.
    needed = [
        step
        for family in FAMILIES
        for task in SOURCES[family].generate(200, seed=1000, difficulty=1)
        for step in re.findall(r"\d+[-+*/]\d+=\d+", task.solution)
    ]

    def coverage(steps_from: list[str]) -> float:
        seen = Counter()
        for index in range(300):
            _, text = drill_document(random.Random(f"t:{index}"), 32, steps_from, [1])
            seen.update(f.rstrip(".") for f in text.split("\n"))
        return sum(seen[s] >= 10 for s in needed) / len(needed)

    from_steps, uniform = coverage(FAMILIES), coverage([])
    assert from_steps > 0.4 and from_steps > 5 * uniform


def test_drills_from_a_family_without_worked_steps_are_refused() -> None:
    with pytest.raises(ValueError, match="drill_steps_from"):
        CorpusConfig(drill_steps_from=["toy-nonexistent"])
