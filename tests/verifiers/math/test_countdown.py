"""Countdown: the answer is evaluated, never executed, and must use the given numbers."""

from __future__ import annotations

import json

import pytest

from generators.tasks import SOURCES
from verifiers.math import verify_countdown
from verifiers.math.check import check_fast
from verifiers.math.countdown import countdown_gold

GOLD = json.dumps({"target": 24, "numbers": [3, 5, 3]})


def answer(text: str) -> str:
    return f"<think>t</think><answer>{text}</answer>"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("3*(5+3)", "match_countdown"),
        ("(5 + 3) \\times 3", "match_countdown"),
        ("$3 \\cdot (5+3)$", "match_countdown"),
        ("3*(5+3) = 24", "match_countdown"),
        ("**3*(5+3)**", "match_countdown"),
        ("3+5+3", "mismatch"),
        ("3*5+3*3", "bad_numbers"),  # 3 used three times
        ("4*6", "bad_numbers"),
        ("24", "bad_numbers"),
        ("3/(5-5)", "bad_numbers"),
        ("5/(3-3)", "mismatch"),  # division by zero
        ("-3+5*3+3*4", "unparseable"),  # unary minus is not a game move
        ("3**2", "unparseable"),
        ("__import__('os').system('true')", "unparseable"),
        ("(lambda: 24)()", "unparseable"),
        ("3*(5+3) = 25", "unparseable"),
    ],
)
def test_countdown(text: str, reason: str) -> None:
    assert verify_countdown(GOLD, answer(text)).reason == reason


def test_exact_division() -> None:
    gold = json.dumps({"target": 7, "numbers": [7, 2, 2]})
    assert verify_countdown(gold, answer("7/2*2")).correct


def test_no_answer_and_hedge() -> None:
    assert verify_countdown(GOLD, "<think>3*(5+3)</think>").reason == "no_answer"
    hedge = "<think>t</think> \\boxed{3*(5+3)} or \\boxed{3+5+3}"
    assert verify_countdown(GOLD, hedge).reason == "hedged"


def test_generic_verify_dispatches_on_the_gold() -> None:
    verdict = check_fast(GOLD, answer("(5+3)*3"))
    assert verdict is not None
    assert verdict.reason == "match_countdown"


def test_not_a_countdown_gold() -> None:
    assert countdown_gold("24") is None
    assert countdown_gold('{"target": 24}') is None
    assert countdown_gold('{"target": true, "numbers": [1]}') is None
    assert verify_countdown("24", answer("24")).reason == "gold_unparseable"


def test_every_generated_solution_is_correct() -> None:
    for difficulty in (1, 3, 5):
        for task in SOURCES["toy-countdown"].generate(50, seed=1, difficulty=difficulty):
            assert verify_countdown(task.gold, task.solution).correct, task
