"""The R1 template check: one case per reason code, both ways, and the edges."""

import pytest

from verifiers.format import (
    REASONS,
    VERSION,
    FormatResult,
    check_r1_format,
    format_reward,
    parse_r1,
)

GOOD = "<think>2 + 2 is 4.</think><answer>4</answer>"


@pytest.mark.parametrize(
    ("completion", "reasoning", "answer"),
    [
        (GOOD, "2 + 2 is 4.", "4"),
        (
            "\n  <think>\nstep one\nstep two\n</think>\n\n<answer>\n42\n</answer>\n",
            "step one\nstep two",
            "42",
        ),
        # the non-reasoning track: an empty think block, as R1 answers without CoT
        (
            "<think></think><answer>Hello! I am an assistant.</answer>",
            "",
            "Hello! I am an assistant.",
        ),
        ("<think>\n\n</think>\n<answer>Paris</answer>", "", "Paris"),
        # full-width space (U+3000) and other Unicode whitespace are whitespace
        (
            "\u3000<think>想一想。</think>\u3000\n<answer>答案是４。</answer>\u2003",
            "想一想。",
            "答案是４。",
        ),
        (
            "<think>emoji 🤔 and math ∑ x²</think><answer>😀</answer>",
            "emoji 🤔 and math ∑ x²",
            "😀",
        ),
        # angle brackets that are not these tags are content
        (
            "<think>if a<b and b>c then <br> ok</think><answer><b>x</b></answer>",
            "if a<b and b>c then <br> ok",
            "<b>x</b>",
        ),
    ],
)
def test_well_formed_completions_pass_and_are_extracted(completion, reasoning, answer):
    result = check_r1_format(completion)
    assert result == FormatResult(ok=True, reason="ok", reasoning=reasoning, answer=answer)
    assert format_reward(completion) == 1.0
    assert parse_r1(completion) == (reasoning, answer)


DEFECTS = [
    ("<think>a</think><think>b</think><answer>c</answer>", "repeated_think"),
    ("<think>a <think> b</think><answer>c</answer>", "repeated_think"),
    ("<think>a</think> b</think><answer>c</answer>", "repeated_think"),
    ("<answer>4</answer>", "missing_think"),
    ("just text", "missing_think"),
    ("", "missing_think"),
    ("reasoning without an opening tag</think><answer>4</answer>", "missing_think"),
    ("<Think>case matters</Think><answer>4</answer>", "missing_think"),
    ("< think >spaced</ think ><answer>4</answer>", "missing_think"),
    ("<think>never closed <answer>4</answer>", "unclosed_think"),
    ("<think>truncated mid-thought", "unclosed_think"),
    ("</think>backwards<think><answer>4</answer>", "unclosed_think"),
    ("<think>a</think><answer>1</answer><answer>2</answer>", "repeated_answer"),
    ("<think>a</think><answer>1 <answer>2</answer>", "repeated_answer"),
    ("<think>a</think>", "missing_answer"),
    ("<think>a</think>\n\n4", "missing_answer"),
    ("<think>a</think>4</answer>", "missing_answer"),
    ("<think>a</think><answer>4", "unclosed_answer"),
    ("<think>a</think></answer>4<answer>", "unclosed_answer"),
    ("<think>a <answer>4</answer> b</think>", "nested_tags"),
    ("<think>a <answer>4</think></answer>", "nested_tags"),
    ("<answer><think>a</think>4</answer>", "nested_tags"),
    ("<answer>4<think>a</answer></think>", "nested_tags"),
    ("<answer>4</answer><think>a</think>", "answer_before_think"),
    ("Sure! <think>a</think><answer>4</answer>", "stray_text_before"),
    ("\ufeff<think>a</think><answer>4</answer>", "stray_text_before"),
    ("<think>a</think> So the answer is: <answer>4</answer>", "stray_text_between"),
    ("<think>a</think><answer>4</answer> Hope this helps!", "stray_text_after"),
    ("<think>a</think><answer>4</answer><|im_end|>", "stray_text_after"),
    ("<think>a</think><answer></answer>", "empty_answer"),
    ("<think>a</think><answer> \n\t</answer>", "empty_answer"),
]


@pytest.mark.parametrize(("completion", "reason"), DEFECTS)
def test_each_defect_is_rejected_with_its_reason(completion, reason):
    result = check_r1_format(completion)
    assert result == FormatResult(ok=False, reason=reason)
    assert reason in REASONS
    assert format_reward(completion) == 0.0
    assert parse_r1(completion) == (None, None)


def test_every_reason_code_is_exercised():
    """The parametrised cases above cover the whole list of codes."""
    assert {reason for _, reason in DEFECTS} | {"ok"} == set(REASONS)


def test_first_failing_rule_is_reported():
    # stray text and an empty answer at once: structure is checked before content
    assert check_r1_format("x <think>a</think><answer></answer>").reason == "stray_text_before"
    # repeated answer tags inside an unclosed think: the think rule comes first
    assert check_r1_format("<think><answer>1</answer><answer>2</answer>").reason == "unclosed_think"


@pytest.mark.parametrize(
    ("completion", "reasoning", "answer"),
    [
        # the released R1 chat format: plain answer after </think>
        ("<think>\n2+2=4\n</think>\n\nThe answer is 4.", "2+2=4", "The answer is 4."),
        ("<think>only thinking</think>", "only thinking", None),
        ("<think>a</think>  \n", "a", None),
        ("<think>a</think><answer>4</answer>", "a", "4"),
    ],
)
def test_answer_block_is_optional_when_not_required(completion, reasoning, answer):
    result = check_r1_format(completion, require_answer=False)
    assert (result.ok, result.reasoning, result.answer) == (True, reasoning, answer)
    assert format_reward(completion, require_answer=False) == 1.0
    assert parse_r1(completion, require_answer=False) == (reasoning, answer)


@pytest.mark.parametrize(
    ("completion", "reason"),
    [
        ("text <think>a</think> answer", "stray_text_before"),
        ("<think>a</think><answer>4", "unclosed_answer"),
        ("<think>a</think><answer></answer>", "empty_answer"),
        ("<think>a</think><answer>4</answer> extra", "stray_text_after"),
        ("<think>a", "unclosed_think"),
    ],
)
def test_optional_answer_still_checks_the_rest(completion, reason):
    assert check_r1_format(completion, require_answer=False).reason == reason


def test_result_is_immutable_and_version_is_set():
    result = check_r1_format(GOOD)
    with pytest.raises(AttributeError):
        result.ok = False  # type: ignore[misc]
    assert isinstance(VERSION, str) and VERSION


def test_long_completion_is_checked_quickly():
    body = "step. " * 200_000
    result = check_r1_format(f"<think>{body}</think><answer>1</answer>")
    assert result.ok and result.reasoning == body.strip()
