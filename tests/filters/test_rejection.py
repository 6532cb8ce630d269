# ruff: noqa: RUF001 -- the Chinese test text is written with its own full-width punctuation
"""Each rejection filter keeps what it should and drops what it should, with its reason code."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from filters.base import Filter, apply_filters
from filters.rejection import (
    DegenerateReasoning,
    LengthBounds,
    R1Format,
    Readability,
    Repetition,
    Truncated,
    VerifiedCorrect,
    default_rejection_filters,
)
from store.record import to_table, validate_sample

GOOD = "<think>12+7=19.\n19-5=14.</think><answer>14</answer>"


def sample(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "prompt": "What is 12+7-5?",
        "completion": GOOD,
        "domain": "math",
        "track": "reasoning",
        "source": "toy-arithmetic",
        "finish_reason": "stop",
    }
    row.update(overrides)
    return validate_sample(row)


def verdict(verifier: str, value: str) -> dict[str, Any]:
    return {"verifier": verifier, "verdict": value, "reason": None, "version": "1"}


def decide(f: Filter, **overrides: Any) -> tuple[bool, str | None]:
    return f.keep(sample(**overrides))


# -- VerifiedCorrect -----------------------------------------------------------


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [
        ([verdict("math", "correct")], (True, None)),
        ([verdict("format", "correct"), verdict("code", "correct")], (True, None)),
        ([verdict("math", "incorrect")], (False, "incorrect")),
        # incorrect wins over correct from another accuracy verifier
        ([verdict("math", "correct"), verdict("code", "incorrect")], (False, "incorrect")),
        ([verdict("math", "unverifiable")], (False, "unverifiable")),
        # the format verdict is not an accuracy verdict
        ([verdict("format", "correct")], (False, "unjudged")),
        ([], (False, "unjudged")),
    ],
)
def test_verified_correct_default_policy(
    verdicts: list[dict[str, Any]], expected: tuple[bool, str | None]
) -> None:
    assert decide(VerifiedCorrect(), verdicts=verdicts) == expected


def test_verified_correct_policies_and_verifier_choice() -> None:
    lenient = VerifiedCorrect(unverifiable="keep", unjudged="keep")
    assert decide(lenient, verdicts=[verdict("math", "unverifiable")]) == (True, None)
    assert decide(lenient, verdicts=[]) == (True, None)
    assert decide(lenient, verdicts=[verdict("math", "incorrect")]) == (False, "incorrect")
    math_only = VerifiedCorrect(verifiers=("math",))
    assert decide(math_only, verdicts=[verdict("code", "correct")]) == (False, "unjudged")
    with pytest.raises(ValueError, match="unverifiable must be one of"):
        VerifiedCorrect(unverifiable="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one"):
        VerifiedCorrect(verifiers=())


# -- R1Format ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        (GOOD, (True, None)),
        ("<think></think><answer>Hello! How can I help?</answer>", (True, None)),
        ("The answer is 14.", (False, "missing_think")),
        ("<think>19-5=14.</think>", (False, "missing_answer")),
        ("<think>ok</think><answer>14</answer> trailing", (False, "stray_text_after")),
        ("<think>a</think><think>b</think><answer>1</answer>", (False, "repeated_think")),
    ],
)
def test_r1_format(completion: str, expected: tuple[bool, str | None]) -> None:
    assert decide(R1Format(), completion=completion) == expected


def test_r1_format_can_accept_the_released_form() -> None:
    assert decide(R1Format(require_answer=False), completion="<think>x</think>14") == (True, None)


# -- Readability ---------------------------------------------------------------

MIXED = "我们先算第一步，然后 let me check the second step again carefully，结果是对的。"
LONG = "<think>" + "This step restates the sum once more. " * 80 + "</think><answer>1</answer>"
CODE = (
    "<think>Let me write it out:\n```python\nprint(12 + 7 - 5)\n```\nSo 14.</think>"
    "<answer>14</answer>"
)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, (True, None)),
        ({"completion": "<think>先算12+7=19，再算19-5=14。</think><answer>14</answer>", "language": "zh"}, (True, None)),
        ({"completion": f"<think>{MIXED}</think><answer>14</answer>", "language": "zh"}, (False, "mixed_language")),
        ({"completion": f"<think>{MIXED}</think><answer>14</answer>"}, (False, "mixed_language")),
        ({"completion": LONG}, (False, "overlong_paragraph")),
        ({"completion": CODE}, (False, "code_in_reasoning")),
        ({"completion": GOOD, "language": "tlh"}, (False, "unsupported_language")),
        # nothing to judge: broken template (R1Format's reject) and the non-reasoning track
        ({"completion": "no tags at all"}, (True, None)),
        ({"completion": "<think></think><answer>Bonjour</answer>", "track": "non_reasoning"}, (True, None)),
    ],
)  # fmt: skip
def test_readability(overrides: dict[str, Any], expected: tuple[bool, str | None]) -> None:
    assert decide(Readability(), **overrides) == expected


def test_readability_uses_the_reasoning_column_and_its_knobs() -> None:
    stored = {"completion": GOOD, "reasoning": MIXED, "language": "zh"}
    assert decide(Readability(), **stored) == (False, "mixed_language")
    assert decide(Readability(min_consistency=0.2), **stored) == (True, None)
    assert decide(Readability(max_paragraph_chars=5000), completion=LONG) == (True, None)
    french = "<think>Nous calculons la somme et puis nous vérifions le résultat.</think><answer>14</answer>"
    assert decide(Readability(default_language="fr"), completion=french) == (True, None)
    assert decide(Readability(), completion=french) == (False, "mixed_language")
    with pytest.raises(ValueError, match="unsupported target language"):
        Readability(default_language="tlh")


# -- Truncated -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("finish_reason", "expected"),
    [("stop", (True, None)), (None, (True, None)), ("length", (False, "length"))],
)
def test_truncated(finish_reason: str | None, expected: tuple[bool, str | None]) -> None:
    assert decide(Truncated(), finish_reason=finish_reason) == expected


# -- LengthBounds --------------------------------------------------------------


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        (10, (True, None)),
        (5, (True, None)),
        (100, (True, None)),
        (4, (False, "too_short")),
        (101, (False, "too_long")),
    ],
)
def test_length_bounds_in_tokens(tokens: int, expected: tuple[bool, str | None]) -> None:
    assert decide(LengthBounds(5, 100), completion_tokens=tokens) == expected


def test_length_bounds_without_a_token_count() -> None:
    # GOOD has 51 characters: 12.75 tokens at the default 4 characters per token.
    assert len(GOOD) == 51
    assert decide(LengthBounds(10, 13)) == (True, None)
    assert decide(LengthBounds(13, 100)) == (False, "too_short")
    assert decide(LengthBounds(1, 12)) == (False, "too_long")
    assert decide(LengthBounds(1, 30, chars_per_token=2.0)) == (True, None)
    assert decide(LengthBounds(1, 100, chars_per_token=None)) == (False, "no_token_count")
    with pytest.raises(ValueError, match="max_tokens"):
        LengthBounds(10, 5)
    with pytest.raises(ValueError, match="chars_per_token"):
        LengthBounds(chars_per_token=0)


# -- Repetition ----------------------------------------------------------------

STEPS = " ".join(
    f"Step {i}: add {i} to the running total, giving {i * (i + 1) // 2}." for i in range(1, 15)
)
LOOP = "Wait, let me check the sum again. " * 30


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        (f"<think>{STEPS}</think><answer>105</answer>", (True, None)),
        (f"<think>{LOOP}</think><answer>14</answer>", (False, "ngram_repeats")),
        (f"<think>{STEPS}</think><answer>{LOOP}</answer>", (False, "ngram_repeats")),
        # too short to call a loop, though every 4-gram after the first repeats
        ("<think>so so so so so so</think><answer>so</answer>", (True, None)),
    ],
)  # fmt: skip
def test_repetition(completion: str, expected: tuple[bool, str | None]) -> None:
    assert decide(Repetition(), completion=completion) == expected


def test_repetition_threshold_is_a_knob() -> None:
    half = f"<think>{STEPS} {LOOP[: len(LOOP) // 3]}</think><answer>1</answer>"
    assert decide(Repetition(max_share=0.9), completion=half) == (True, None)
    assert decide(Repetition(max_share=0.1), completion=half) == (False, "ngram_repeats")
    with pytest.raises(ValueError, match="max_share"):
        Repetition(max_share=2.0)


# -- DegenerateReasoning -------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, (True, None)),
        # the non-reasoning track is meant to have an empty think block
        ({"completion": "<think></think><answer>Paris</answer>", "track": "non_reasoning"}, (True, None)),
        ({"completion": "<think></think><answer>14</answer>"}, (False, "empty_reasoning")),
        ({"completion": "<think> \n </think><answer>14</answer>"}, (False, "empty_reasoning")),
        ({"completion": "no think block"}, (False, "empty_reasoning")),
        ({"completion": "<think>14.</think><answer>14</answer>"}, (False, "short_reasoning")),
        ({"completion": "<think>Let me think.\nLet me think.\n\nLet me think.</think><answer>14</answer>"}, (False, "repeated_line")),
        ({"completion": "<think>The answer is 14</think><answer>the answer  is 14</answer>"}, (False, "reasoning_is_answer")),
    ],
)  # fmt: skip
def test_degenerate_reasoning(overrides: dict[str, Any], expected: tuple[bool, str | None]) -> None:
    assert decide(DegenerateReasoning(), **overrides) == expected


def test_degenerate_reasoning_min_chars_is_a_knob() -> None:
    short = "<think>14.</think><answer>14</answer>"
    assert decide(DegenerateReasoning(min_chars=3), completion=short) == (True, None)
    assert decide(DegenerateReasoning(), reasoning="", answer="14") == (False, "empty_reasoning")


# -- the chain -----------------------------------------------------------------


def test_default_chain_counts_each_reject_under_its_first_reason() -> None:
    correct = [verdict("math", "correct")]
    rows = [
        sample(sample_index=0, verdicts=correct),
        sample(sample_index=1, verdicts=[verdict("math", "incorrect")]),
        sample(sample_index=2, verdicts=correct, finish_reason="length", completion="cut off"),
        sample(sample_index=3, verdicts=correct, completion="<think></think><answer>14</answer>"),
        sample(sample_index=4, verdicts=correct, completion=CODE),
        sample(
            sample_index=5, verdicts=correct, completion=f"<think>{LOOP}</think><answer>1</answer>"
        ),
        sample(
            sample_index=6,
            track="non_reasoning",
            domain="general",
            completion="<think></think><answer>Hello!</answer>",
        ),
    ]
    out, stats = apply_filters(to_table(rows), default_rejection_filters(unjudged="keep"))
    assert out.column("kept").to_pylist() == [True, False, False, False, False, False, True]
    assert stats.dropped == Counter(
        {
            "verified:incorrect": 1,
            "truncated:length": 1,
            "degenerate:empty_reasoning": 1,
            "readability:code_in_reasoning": 1,
            "repetition:ngram_repeats": 1,
        }
    )
    assert stats.kept == 2
