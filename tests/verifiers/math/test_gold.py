"""Golds that are not mathematical objects are `unverifiable`, with the kind as the reason;
short word answers stay answers."""

from __future__ import annotations

import pytest

from verifiers.math import verify
from verifiers.math.gold import not_math

ANSWER = "<think>Working.</think><answer>5</answer>"

NOT_MATH = {
    "See the proof above.": "gold_proof",
    "The proof follows by induction on n.": "gold_proof",
    "Proof: Suppose not. Then $n^2$ is odd.": "gold_proof",
    "\\text{The proof is complete}": "gold_proof",
    "QED": "gold_proof",
    "q.e.d.": "gold_proof",
    "\\blacksquare": "gold_proof",
    "\u220e": "gold_proof",
    "Show that $n^2 + n$ is even.": "gold_proof",
    "By the previous lemma, the claim holds.": "gold_proof",
    "Hence $x = 3$.": "gold_proof",
    "see above": "gold_reference",
    "\\text{see above}": "gold_reference",
    "as shown in part (a)": "gold_reference",
    "Follows from (3).": "gold_proof",
    "equation (3)": "gold_reference",
    "the answer of the previous part": "gold_reference",
    "The answer is given in the solution above": "gold_reference",
    "Let $x$ be real. Then $x^2 \\ge 0$ for every such number.": "gold_prose",
    "Good morning! How can I help you today?": "gold_prose",
    "The number of ways equals the number of subsets of the set": "gold_prose",
}

ANSWERS = [
    "5",
    "\\frac{\\sqrt{3}}{2}",
    "\\sin x + \\cos x",
    "\\log_2 3 + \\exp(1)",
    "x \\in (0, 1)",
    "(x, y) = (-5/11, 14/11)",
    "10*x**2 + 17*x + 22",
    "no solution",
    "\\text{no solution}",
    "no real solutions",
    "infinitely many",
    "It is not possible",
    "does not exist",
    "all real numbers",
    "yes",
    "Paris",
    "(B)",
    "\\text{even}",
    "12 sq ft",
    "5 dollars",
    "x = 2 \\text{ or } x = -2",
]


@pytest.mark.parametrize("gold", sorted(NOT_MATH))
def test_not_a_math_object_is_unverifiable(gold: str) -> None:
    assert not_math(gold) == NOT_MATH[gold]
    v = verify(gold, ANSWER)
    assert (v.verdict, v.reason) == ("unverifiable", NOT_MATH[gold])
    # Not even the gold's own words make a completion correct.
    assert verify(gold, f"<think>x</think><answer>{gold}</answer>").verdict == "unverifiable"


@pytest.mark.parametrize("gold", ANSWERS)
def test_answers_stay_answers(gold: str) -> None:
    assert not_math(gold) is None
    assert verify(gold, f"<think>x</think><answer>{gold}</answer>").verdict == "correct"
