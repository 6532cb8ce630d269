"""Countdown answers: an expression over the given numbers that reaches the target.

The gold is the toy task's JSON, `{"target": 24, "numbers": [3, 5, 3]}`. Many
expressions are right, so the answer is evaluated rather than compared: only
integer literals, `+ - * /` and brackets are allowed; each literal must be one
of the given numbers, used at most as often as it is given; division is exact
(`Fraction`), so `7/2*2` reaches 7. `expr = target` is accepted as well.

The expression is read with `ast.parse(mode="eval")`, which only builds a tree
and executes nothing, and the tree is walked by hand; anything but the nodes
above ends the check as `unparseable`.
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction

from verifiers.math.extract import CompletionTooLong, extract_answer
from verifiers.math.verdict import (
    BAD_NUMBERS,
    GOLD_UNPARSEABLE,
    HEDGED,
    MATCH_COUNTDOWN,
    MISMATCH,
    NO_ANSWER,
    TOO_COMPLEX,
    UNPARSEABLE,
    Verdict,
)

MAX_EXPRESSION_CHARS = 500

_REWRITES = (
    (re.compile(r"\\times|\\cdot|\u00d7|\u22c5|\u00b7"), "*"),
    (re.compile(r"\\div|\u00f7"), "/"),
    (re.compile(r"\u2212|\u2013"), "-"),
    (re.compile(r"\\left|\\right|\$|\\\(|\\\)|\\\[|\\\]"), ""),
    (re.compile(r"\\?[{]"), "("),
    (re.compile(r"\\?[}]"), ")"),
)
_FRACTION = re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}")
_ALLOWED = re.compile(r"[\d\s+\-*/().=]*")


@dataclass(frozen=True, slots=True)
class CountdownGold:
    target: int
    numbers: tuple[int, ...]


def countdown_gold(gold: str) -> CountdownGold | None:
    """The parsed gold when `gold` is a countdown JSON object, else None."""
    if not gold.lstrip().startswith("{"):
        return None
    try:
        data = json.loads(gold)
    except ValueError:
        return None
    if not isinstance(data, dict) or set(data) != {"target", "numbers"}:
        return None
    target, numbers = data["target"], data["numbers"]
    if not _is_int(target) or not isinstance(numbers, list) or not all(map(_is_int, numbers)):
        return None
    return CountdownGold(target, tuple(numbers))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def verify_countdown(gold: str, completion: str) -> Verdict:
    """Check a completion's countdown expression against the gold JSON."""
    spec = countdown_gold(gold)
    if spec is None:
        return Verdict("unverifiable", GOLD_UNPARSEABLE)
    return check_countdown(spec, completion)


def check_countdown(spec: CountdownGold, completion: str) -> Verdict:
    try:
        found = extract_answer(completion)
    except CompletionTooLong:
        return Verdict("incorrect", TOO_COMPLEX)
    if found is None:
        return Verdict("incorrect", NO_ANSWER)
    answer = found.answer
    if len(answer) > 2 * MAX_EXPRESSION_CHARS:
        return Verdict("incorrect", TOO_COMPLEX, answer[:MAX_EXPRESSION_CHARS])
    if any(_clean(alt) != _clean(answer) for alt in found.alternatives):
        return Verdict("incorrect", HEDGED, answer)
    expression = _clean(answer)
    if "=" in expression:
        # "(10-8)/2 = 1": the side that is not the bare target is the expression.
        sides = [s.strip() for s in expression.split("=")]
        if len(sides) != 2 or str(spec.target) not in sides:
            return Verdict("incorrect", UNPARSEABLE, answer)
        expression = sides[0] if sides[1] == str(spec.target) else sides[1]
    if len(expression) > MAX_EXPRESSION_CHARS:
        return Verdict("incorrect", TOO_COMPLEX, answer)
    if not expression or not _ALLOWED.fullmatch(expression):
        return Verdict("incorrect", UNPARSEABLE, answer)
    try:
        tree = ast.parse(expression, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return Verdict("incorrect", UNPARSEABLE, answer)
    literals = _literals(tree.body)
    if literals is None:
        return Verdict("incorrect", UNPARSEABLE, answer)
    # The numbers are checked before the value: 3/(5-5) breaks the rules first.
    if Counter(literals) - Counter(spec.numbers):
        return Verdict("incorrect", BAD_NUMBERS, answer)
    try:
        value = _evaluate(tree.body)
    except ZeroDivisionError:
        return Verdict("incorrect", MISMATCH, answer)
    if value == spec.target:
        return Verdict("correct", MATCH_COUNTDOWN, answer)
    return Verdict("incorrect", MISMATCH, answer)


def _clean(text: str) -> str:
    # Markdown emphasis around the expression and a full stop after it.
    text = text.strip().rstrip(".").strip(" *_`")
    while True:
        rewritten = _FRACTION.sub(r"(\1)/(\2)", text)
        if rewritten == text:
            break
        text = rewritten
    for pattern, replacement in _REWRITES:
        text = pattern.sub(replacement, text)
    return text.strip()


_BINARY = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
}
_OPERATORS = tuple(_BINARY)


def _literals(node: ast.expr) -> list[int] | None:
    """The integer literals of a tree of + - * / over integers; None if it holds anything else."""
    found: list[int] = []
    for item in ast.walk(node):
        if isinstance(item, ast.Constant):
            if not isinstance(item.value, int) or isinstance(item.value, bool):
                return None
            found.append(item.value)
        elif not isinstance(item, (ast.BinOp, *_OPERATORS)):
            return None
    return found


def _evaluate(node: ast.expr) -> Fraction:
    """The exact value of a tree `_literals` accepted."""
    if isinstance(node, ast.Constant):
        return Fraction(int(node.value))  # type: ignore[arg-type]
    assert isinstance(node, ast.BinOp)
    result: Fraction = _BINARY[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    return result
