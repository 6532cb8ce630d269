"""Where the answer is found, and where it is deliberately not looked for."""

from __future__ import annotations

import pytest

from verifiers.math.extract import (
    MAX_COMPLETION_CHARS,
    CompletionTooLong,
    boxed_contents,
    extract_answer,
)


@pytest.mark.parametrize(
    ("completion", "answer", "source"),
    [
        ("<think>a</think><answer>42</answer>", "42", "answer_block"),
        ("<think>a</think><answer>\n 42 \n</answer>", "42", "answer_block"),
        ("<think>a</think><answer>1</answer> later <answer>2</answer>", "2", "answer_block"),
        ("<think>a</think><answer>so \\boxed{7} it is</answer>", "7", "boxed"),
        ("<think>a</think><answer>The answer is 9.</answer>", "9", "phrase"),
        ("<think>\\boxed{1}</think> so \\boxed{2}", "2", "boxed"),
        ("no think at all: $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}", "boxed"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}", "boxed"),
        ("\\boxed 7 and more", "7", "boxed"),
        ("\\fbox{3}", "3", "boxed"),
        ("The final answer is $\\frac{1}{2}$. I hope it is correct.", "\\frac{1}{2}", "phrase"),
        ("Final Answer: 12", "12", "phrase"),
        ("**Final Answer**\n\n12\n", "12", "phrase"),
        ("**Answer:** 5", "5", "phrase"),
        ("So the answer is 3.5.", "3.5", "phrase"),
        ("the answer is 3. Then we stop.", "3", "phrase"),
        ("Answer: \\(x+1\\)", "x+1", "phrase"),
    ],
)
def test_found(completion: str, answer: str, source: str) -> None:
    found = extract_answer(completion)
    assert found is not None
    assert (found.answer, found.source) == (answer, source)


@pytest.mark.parametrize(
    "completion",
    [
        "",
        "<think>6*7 = 42</think>",  # no last-number fallback
        "The product is 42.",
        "<think>so the answer is \\boxed{42}",  # cut off inside the reasoning
        "<think>x</think> \\boxed{42",  # unbalanced box
        "<think>x</think><answer>42",  # unclosed block, nothing else
        "<think>x</think><answer>  </answer>",
    ],
)
def test_no_answer(completion: str) -> None:
    assert extract_answer(completion) is None


def test_earlier_boxes_are_kept_as_alternatives() -> None:
    found = extract_answer("<think>t</think> \\boxed{3} or \\boxed{4}")
    assert found is not None
    assert found.answer == "4"
    assert found.alternatives == ("3",)


def test_boxes_inside_the_reasoning_are_not_alternatives() -> None:
    found = extract_answer("<think>\\boxed{1}</think><answer>\\boxed{2}</answer>")
    assert found is not None
    assert found.alternatives == ()


def test_balanced_scan_skips_escaped_braces() -> None:
    assert boxed_contents("\\boxed{\\{a\\}} \\boxed{b}") == ["\\{a\\}", "b"]


def test_length_guard() -> None:
    with pytest.raises(CompletionTooLong):
        extract_answer("x" * (MAX_COMPLETION_CHARS + 1))
