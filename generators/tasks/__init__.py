"""Seeded, deterministic toy task sources: the default world's prompts with exact answers.

    from generators.tasks import SOURCES, generate_mixture

    tasks = list(SOURCES["toy-arithmetic"].generate(100, seed=0, difficulty=1))
    mixed = list(generate_mixture({"toy-countdown": 50, "toy-facts": 10}, seed=0, difficulty=2))

Each task carries a gold answer in its family's canonical format and a worked
solution in the R1 format; see README.md for the families and their knobs.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping

from generators.tasks import algebra, arithmetic, conversation, countdown, linear
from generators.tasks.base import (
    MAX_DIFFICULTY,
    FamilySource,
    Task,
    TaskSource,
    check_request,
    render_pretraining_text,
)

__all__ = [
    "MAX_DIFFICULTY",
    "SOURCES",
    "FamilySource",
    "Task",
    "TaskSource",
    "generate_mixture",
    "render_pretraining_text",
]

SOURCES: dict[str, TaskSource] = {
    source.name: source
    for source in (
        arithmetic.SOURCE,
        countdown.SOURCE,
        linear.SOURCE,
        algebra.SOURCE,
        conversation.GREETING,
        conversation.SELF_COGNITION,
        conversation.FACTS,
        conversation.TRANSLATION,
    )
}


def generate_mixture(counts: Mapping[str, int], seed: int, difficulty: int) -> Iterator[Task]:
    """`counts[name]` tasks from each named source, in one seeded shuffled order.

    Each source is asked for its own prefix with the same seed, so a family's
    tasks in a mixture are exactly its `generate(count, seed, difficulty)`. The
    shuffle depends only on (counts, seed, difficulty), not on the mapping's
    order, and spreads the families so that any prefix of the mixture is mixed.
    """
    unknown = sorted(set(counts) - set(SOURCES))
    if unknown:
        raise KeyError(f"unknown task sources {unknown}; known: {sorted(SOURCES)}")
    for name, count in counts.items():
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ValueError(f"counts[{name!r}] must be an int >= 0, got {count!r}")
    check_request(0, seed, difficulty)
    tasks = [
        task
        for name in sorted(counts)
        for task in SOURCES[name].generate(counts[name], seed, difficulty)
    ]
    random.Random(f"mixture:{seed}:{difficulty}").shuffle(tasks)
    return iter(tasks)
