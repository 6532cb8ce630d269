"""The task record, the source interface and the helpers every family shares.

A family is written as one `build(rng, difficulty) -> Draft` function: it draws
one problem from the private `rng` it is handed and returns the prompt, the gold
answer and the worked solution's reasoning and answer. `FamilySource` turns
that function into a `TaskSource`, giving every family the same identity,
seeding and validation rules:

- each task gets its own `random.Random` seeded from a string naming the family,
  seed, difficulty and index. String seeds are hashed with SHA-512 by the
  standard library, so the stream is the same on every run and machine and does
  not depend on `PYTHONHASHSEED`; the global RNG is never touched.
- because task `i` depends on nothing but `i`, `generate(n)` is prefix-stable
  (its first k tasks are `generate(k)`) and a family may redraw a rejected
  candidate as often as it likes without shifting later tasks.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

DOMAINS = ("math", "general")
TRACKS = ("reasoning", "non_reasoning")

# Shapes are defined for difficulties 1..MAX_DIFFICULTY; past it some families
# would run out of distinct items to draw (names, goods, words).
MAX_DIFFICULTY = 8


@dataclass(frozen=True)
class Task:
    """One prompt with its reference answer and a worked solution.

    `gold` is a string in the family's canonical format (see the README);
    `solution` is `<think>reasoning</think><answer>answer</answer>`, with an
    empty think block for non-reasoning tasks, as R1 answers them.
    """

    prompt_id: str
    prompt: str
    gold: str
    solution: str
    domain: str
    track: str
    source: str
    difficulty: int


class TaskSource(Protocol):
    """A named, seeded generator of tasks."""

    # A read-only property, so that frozen dataclasses satisfy the protocol.
    @property
    def name(self) -> str: ...

    def generate(self, n: int, seed: int, difficulty: int = 1) -> Iterator[Task]: ...


@dataclass(frozen=True)
class Draft:
    """What a family's `build` returns: one task before identity is attached."""

    prompt: str
    gold: str
    think: str
    answer: str


Builder = Callable[[random.Random, int], Draft]


def render_solution(think: str, answer: str) -> str:
    """The R1 completion format: reasoning inside `<think>`, answer inside `<answer>`."""
    return f"<think>{think}</think><answer>{answer}</answer>"


def make_prompt_id(source: str, difficulty: int, seed: int, index: int) -> str:
    """A readable id that is stable across runs and unique per (source, d, seed, index)."""
    return f"{source}-d{difficulty}-s{seed}-{index}"


def task_rng(source: str, seed: int, difficulty: int, index: int) -> random.Random:
    """The private random stream of one task."""
    return random.Random(f"{source}:{seed}:{difficulty}:{index}")


def check_request(n: int, seed: int, difficulty: int) -> None:
    """Reject arguments a caller can get wrong, naming the argument and the fix."""
    for label, value in (("n", n), ("seed", seed), ("difficulty", difficulty)):
        # bool is an int subclass; `difficulty=True` is a bug, not a level.
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{label} must be an int, got {value!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 1 <= difficulty <= MAX_DIFFICULTY:
        raise ValueError(f"difficulty must be between 1 and {MAX_DIFFICULTY}, got {difficulty}")


def fmt_number(value: Fraction | int) -> str:
    """An exact number as the gold strings write it: `4`, `-7/3`."""
    return str(Fraction(value))


@dataclass(frozen=True)
class FamilySource:
    """A `TaskSource` built from one family's `build` function."""

    name: str
    domain: str
    track: str
    build: Builder

    def __post_init__(self) -> None:
        if self.domain not in DOMAINS:
            raise ValueError(f"{self.name}: domain must be one of {DOMAINS}, got {self.domain!r}")
        if self.track not in TRACKS:
            raise ValueError(f"{self.name}: track must be one of {TRACKS}, got {self.track!r}")

    def generate(self, n: int, seed: int, difficulty: int = 1) -> Iterator[Task]:
        # Validate now rather than on the first next(): a bad call should fail
        # where it is made, not wherever the iterator happens to be consumed.
        check_request(n, seed, difficulty)
        return self._tasks(n, seed, difficulty)

    def _tasks(self, n: int, seed: int, difficulty: int) -> Iterator[Task]:
        for index in range(n):
            draft = self.build(task_rng(self.name, seed, difficulty, index), difficulty)
            yield Task(
                prompt_id=make_prompt_id(self.name, difficulty, seed, index),
                prompt=draft.prompt,
                gold=draft.gold,
                solution=render_solution(draft.think, draft.answer),
                domain=self.domain,
                track=self.track,
                source=self.name,
                difficulty=difficulty,
            )


def render_pretraining_text(task: Task) -> str:
    """The prompt followed by its worked solution: one document of the toy base model's corpus."""
    return f"{task.prompt}\n{task.solution}"
