"""Comparison semantics, checked in-process (the pool is tested in test_pool.py)."""

from __future__ import annotations

import pytest

from verifiers.math.check import check_fast, check_full
from verifiers.math.verdict import Verdict


def decide(gold: str, answer: str) -> Verdict:
    completion = f"<think>t</think><answer>{answer}</answer>"
    return check_fast(gold, completion) or check_full(gold, completion)


def reason(gold: str, answer: str) -> str:
    return decide(gold, answer).reason


# --- exact numbers and tolerances


@pytest.mark.parametrize(
    ("gold", "answer", "expected"),
    [
        ("7/3", "\\frac{14}{6}", "match_exact"),
        ("7/3", "2.333", "mismatch"),  # exact gold, rounded answer
        ("1/3", "0.3333333333333333", "match_numeric"),  # relative 1e-9
        ("1/2", "0.5", "match_exact"),
        ("3.14", "3.1416", "match_numeric"),  # half a unit of the gold's last digit
        ("3.14", "3.144", "match_numeric"),
        ("3.14", "3.1", "mismatch"),
        ("3.14", "3.146", "mismatch"),
        ("2.50", "2.5", "match_exact"),
        ("1.5e-30", "1.5 \\times 10^{-30}", "match_exact"),
        ("1.5 \\times 10^{-30}", "1.54e-30", "match_numeric"),
        ("1.5 \\times 10^{-30}", "1.6e-30", "mismatch"),
        ("\\frac{1}{2^{99}}", "\\frac{1}{2^{98}}", "mismatch"),  # never chopped to zero
        ("2^{-99}", "\\frac{1}{2^{99}}", "match_exact"),
        ("0", "10^{-12}", "mismatch"),
        ("12", "12.4", "mismatch"),  # an integer gold states no tolerance
        ("-2", "\\sqrt[3]{-8}", "match_exact"),
        ("2", "\\sqrt{4}", "match_exact"),
        ("120", "5!", "match_exact"),
    ],
)
def test_numbers(gold: str, answer: str, expected: str) -> None:
    assert reason(gold, answer) == expected


def test_rationals_need_no_sympy() -> None:
    # The fast path decides these; None would mean "ask a worker".
    assert check_fast("7/3", "\\boxed{\\frac{14}{6}}") is not None
    assert check_fast("x**2 - 1", "\\boxed{(x-1)(x+1)}") is not None
    assert check_fast("\\pi", "\\boxed{3.14}") is None


# --- symbolic


@pytest.mark.parametrize(
    ("gold", "answer", "expected"),
    [
        ("x**2 - 9*x + 8", "(x-1)(x-8)", "match_symbolic"),
        ("x**2 - 9*x + 8", "(x-1)(x+8)", "mismatch"),
        ("\\frac{x^2-1}{x-1}", "x+1", "match_symbolic"),
        ("\\sqrt{2}", "\\frac{2}{\\sqrt{2}}", "match_symbolic"),
        ("2\\sqrt{2}", "\\sqrt{8}", "match_symbolic"),
        ("1+\\sqrt{2}", "\\sqrt{3+2\\sqrt{2}}", "match_symbolic"),
        ("\\pi", "\\frac{22}{7}", "mismatch"),
        ("3.14", "\\pi", "match_numeric"),
        ("\\sin^2 x + \\cos^2 x", "1", "match_symbolic"),
        ("\\sin(2x)", "2\\sin x\\cos x", "match_symbolic"),
        ("\\sqrt{x^2}", "x", "mismatch"),
        ("x + 1", "t + 1", "mismatch"),
        ("\\ln 8", "3\\ln 2", "match_symbolic"),
        ("\\infty", "\\infty", "match_exact"),
        ("\\infty", "-\\infty", "mismatch"),
    ],
)
def test_symbolic(gold: str, answer: str, expected: str) -> None:
    assert reason(gold, answer) == expected


# --- structures


@pytest.mark.parametrize(
    ("gold", "answer", "correct"),
    [
        ("(1, 2)", "(1, 2)", True),
        ("(1, 2)", "(2, 1)", False),
        ("(1, 2, 3)", "[1, 2, 3]", True),  # ordered either way
        ("\\{1, 2, 3\\}", "\\{3, 2, 1\\}", True),
        ("\\{1, 2, 3\\}", "\\{1, 2\\}", False),
        ("1, 2", "2, 1", True),
        ("\\{1, 2\\}", "(1, 2)", True),  # a solution set written as a tuple
        ("(1, 2)", "\\{1, 2\\}", False),  # an ordered gold needs the order
        ("[1, 2)", "[1, 2)", True),
        ("[1, 2)", "(1, 2]", False),
        ("[1, 2]", "(1, 2)", False),
        ("(1, 2)", "[1, 2]", False),
        ("(-\\infty, 3)", "x < 3", True),
        ("x \\ge 2", "[2, \\infty)", True),
        ("x > 2", "x \\ge 2", False),
        ("1 < x \\le 4", "(1, 4]", True),
        ("(-\\infty, 0) \\cup (1, \\infty)", "(1, \\infty) \\cup (-\\infty, 0)", True),
        ("\\mathbb{R}", "(-\\infty, \\infty)", True),
        ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "[[1, 2], [3, 4]]", True),
        (
            "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}",
            "\\begin{bmatrix}1&3\\\\2&4\\end{bmatrix}",
            False,
        ),
        ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "(1, 2)", True),
        ("(x, y) = (1/2, 3)", "x = 1/2, y = 3", True),
        ("(x, y) = (1/2, 3)", "y = 3, x = 1/2", True),
        ("(x, y) = (1/2, 3)", "(3, 1/2)", False),
        ("(x, y) = (1/2, 3)", "x = 3, y = 1/2", False),
        ("y = 2x + 1", "4x - 2y + 2 = 0", True),  # a non-zero multiple
        ("y = 2x + 1", "y = 2x - 1", False),
        ("x + y > 1", "2x + 2y > 2", True),  # a positive multiple
        ("x + y > 1", "-x - y > -1", False),
        ("x = 3", "3", True),
        ("3", "x = 3", True),
        ("x = 3", "y = 3", False),
        ("f(x) = x^2", "x^2", True),
        ("\\text{no solution}", "No Solution", True),
    ],
)
def test_structures(gold: str, answer: str, correct: bool) -> None:
    assert decide(gold, answer).correct is correct


# --- hedges


@pytest.mark.parametrize(
    ("gold", "completion", "expected"),
    [
        ("3", "<answer>3 or 4</answer>", "hedged"),
        ("3", "<answer>3 \\text{ or } 4</answer>", "hedged"),
        ("3", "<answer>3 and 4</answer>", "hedged"),
        ("3", "<answer>\\pm 3</answer>", "hedged"),
        ("3", "<answer>3, 4</answer>", "hedged"),
        ("3", "\\boxed{3} or \\boxed{4}", "hedged"),
        ("3", "\\boxed{3}, again \\boxed{3}", "match_exact"),
        ("3", "\\boxed{x = 3}, that is \\boxed{3}", "match_exact"),
        ("3 or 4", "<answer>4 or 3</answer>", "match_structure"),
        ("-3, 3", "<answer>\\pm 3</answer>", "match_structure"),
        ("\\pm 3", "<answer>x = 3 or x = -3</answer>", "match_structure"),
        ("2, 3", "\\boxed{2} and \\boxed{3}", "match_structure"),
        ("(1, 2)", "<answer>(1, 2) \\text{ or } (2, 1)</answer>", "hedged"),
    ],
)
def test_hedges(gold: str, completion: str, expected: str) -> None:
    verdict = check_fast(gold, completion) or check_full(gold, completion)
    assert verdict.reason == expected


# --- gold first


@pytest.mark.parametrize(
    ("gold", "completion", "verdict", "why"),
    [
        ("@#!", "\\boxed{5}", "unverifiable", "gold_unparseable"),
        ("", "\\boxed{5}", "unverifiable", "gold_unparseable"),
        ("1/0", "\\boxed{5}", "unverifiable", "gold_unparseable"),
        ("@#!", "no answer here", "unverifiable", "gold_unparseable"),  # gold first, always
        ("5", "no answer here", "incorrect", "no_answer"),
        ("5", "\\boxed{1/0}", "incorrect", "mismatch"),
        ("5", "\\boxed{\\begin{cases}1\\end{cases}}", "incorrect", "unparseable"),
    ],
)
def test_gold_first(gold: str, completion: str, verdict: str, why: str) -> None:
    result = check_fast(gold, completion) or check_full(gold, completion)
    assert (result.verdict, result.reason) == (verdict, why)


def test_extracted_is_the_raw_answer() -> None:
    result = check_fast("1/2", "<think>t</think> so $\\boxed{\\dfrac{1}{2}}$.")
    assert result is not None
    assert result.extracted == "\\dfrac{1}{2}"
