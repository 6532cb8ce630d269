"""Countdown: reach a target from given numbers with + - * /, each number used at most once.

Difficulty d sets the shape: d + 2 numbers from 1..10 (from d=2 one of them may
be a "large" number, 25, 50, 75 or 100, as in the television game) and a
target between 1 and 100*d.

Every task is solvable by construction: the numbers are combined two at a time
in random order with random operators until one value is left, and that value
becomes the target. Intermediate values stay positive whole numbers (no
fractions, no zero), as in the game. The combination steps are the worked
solution; the expression they build is its answer.

Gold: a JSON object `{"target": 24, "numbers": [3, 5, 3]}`. Many expressions
are correct, so a verifier must evaluate the answer against the gold (at most
the given numbers, each at most once, value equal to the target), not compare
it with the constructed expression.
"""

from __future__ import annotations

import json
import operator
import random
from dataclasses import dataclass

from generators.tasks.base import Draft, FamilySource

NAME = "toy-countdown"

_LARGE = (25, 50, 75, 100)
# Precedence of an expression's top operator; a bare number binds tightest.
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
_LEAF = 3
# Floor division is exact here: `_allowed` offers / only when it divides evenly.
_APPLY = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.floordiv}


@dataclass(frozen=True)
class _Node:
    value: int
    text: str
    precedence: int


def _leaf(value: int) -> _Node:
    return _Node(value, str(value), _LEAF)


def _combine(a: _Node, op: str, b: _Node) -> _Node:
    value = _APPLY[op](a.value, b.value)
    p = _PRECEDENCE[op]
    left = a.text if a.precedence >= p else f"({a.text})"
    # The right side needs brackets at equal precedence under - and /:
    # 9-(4-1) is not 9-4-1, though 9+(4-1) is 9+4-1.
    keep_bare = b.precedence > p or (b.precedence == p and op in "+*")
    right = b.text if keep_bare else f"({b.text})"
    return _Node(value, f"{left}{op}{right}", p)


def _allowed(a: int, b: int, cap: int) -> list[str]:
    """Operators that keep the game's rules and avoid steps that do nothing."""
    ops = []
    if a + b <= cap:
        ops.append("+")
    if a > b:
        ops.append("-")
    if a > 1 and b > 1 and a * b <= cap:
        ops.append("*")
    if b > 1 and a % b == 0:
        ops.append("/")
    return ops


_PROMPTS = (
    "Using the numbers {numbers}, write an expression that equals {target}. "
    "You may use +, -, * and /, and each number at most once.",
    "Make {target} from the numbers {numbers} with +, -, * and /, using each number at most once.",
    "Reach the target {target} using the numbers {numbers}. "
    "Allowed operations: +, -, *, /. Each number may be used at most once.",
)


def build(rng: random.Random, difficulty: int) -> Draft:
    count = difficulty + 2
    max_target = 100 * difficulty
    # Intermediate values may overshoot the target range a little, which lets a
    # later subtraction or division land back inside it.
    cap = 4 * max_target
    while True:
        numbers = [rng.randint(1, 10) for _ in range(count)]
        if difficulty >= 2 and rng.random() < 0.5:
            numbers[rng.randrange(count)] = rng.choice(_LARGE)
        pool = [_leaf(v) for v in numbers]
        lines = []
        while len(pool) > 1:
            i, j = rng.sample(range(len(pool)), 2)
            ops = _allowed(pool[i].value, pool[j].value, cap)
            if not ops:
                break
            op = rng.choice(ops)
            node = _combine(pool[i], op, pool[j])
            lines.append(f"{pool[i].value}{op}{pool[j].value}={node.value}.")
            pool = [n for k, n in enumerate(pool) if k not in (i, j)] + [node]
        # Redraw dead ends, out-of-range targets, and targets that are one of
        # the numbers (those are solved by writing the number down).
        if len(pool) == 1 and pool[0].value <= max_target and pool[0].value not in numbers:
            break
    root = pool[0]
    prompt = rng.choice(_PROMPTS).format(numbers=json.dumps(numbers), target=root.value)
    gold = json.dumps({"target": root.value, "numbers": numbers})
    return Draft(prompt=prompt, gold=gold, think="\n".join(lines), answer=root.text)


SOURCE = FamilySource(name=NAME, domain="math", track="reasoning", build=build)
