"""trainer.rl.rewards: rule rewards on the verifiers; what cannot be computed is masked."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import pytest
import torch

from trainer.rl.core import group_advantages
from trainer.rl.rewards import (
    AccuracyReward,
    FormatReward,
    LanguageReward,
    LengthPenalty,
    RepetitionPenalty,
    RewardInput,
    RewardResult,
    chain_of_thought,
    combine_rewards,
    reward_metrics,
    score,
)
from verifiers.code import SandboxPool, SandboxUnavailable
from verifiers.math import MathVerifier


@pytest.fixture(scope="module")
def math_verifier() -> Iterator[MathVerifier]:
    with MathVerifier(workers=1, timeout=10.0) as verifier:
        yield verifier


def r1(think: str, answer: str) -> str:
    return f"<think>{think}</think><answer>{answer}</answer>"


def test_result_carries_value_or_status() -> None:
    assert RewardResult.ok(1).value == 1.0
    assert RewardResult.unverifiable("timeout").value is None
    with pytest.raises(ValueError):
        RewardResult(None, "ok")
    with pytest.raises(ValueError):
        RewardResult(0.0, "unverifiable")
    with pytest.raises(ValueError):
        RewardResult.ok(float("nan"))


def test_chain_of_thought() -> None:
    assert chain_of_thought(r1(" 2+2=4 ", "4")) == "2+2=4"
    assert chain_of_thought("<think>still thinking") == "still thinking"  # cut off
    assert chain_of_thought("<think>a</think> stray <answer>4</answer>") == "a"  # broken format
    assert chain_of_thought("reasoning</think><answer>4</answer>") == "reasoning"
    assert chain_of_thought("no tags at all") == "no tags at all"


def test_math_accuracy(math_verifier: MathVerifier) -> None:
    countdown = json.dumps({"target": 24, "numbers": [3, 5, 3]})
    items = [
        RewardInput(r1("7/3", "\\frac{14}{6}"), gold="7/3"),
        RewardInput(r1("guess", "8"), gold="7"),
        RewardInput("<think>cut off while thinking", gold="7"),
        RewardInput(r1("3*(5+3)=24", "3*(5+3)"), gold=countdown),
        RewardInput(r1("3*5+3=18", "3*5+3"), gold=countdown),
        RewardInput(r1("x", "5"), gold="@#!"),  # a gold nobody can read
        RewardInput(r1("x", "5"), gold=None),
    ]
    got = AccuracyReward(math_verifier)(items)
    assert [r.value for r in got] == [1.0, 0.0, 0.0, 1.0, 0.0, None, None]
    assert [r.status for r in got][-2:] == ["unverifiable", "unverifiable"]
    assert got[0].reason == "match_exact" and got[2].reason == "no_answer"
    assert got[-1].reason == "no_gold"


def test_math_accuracy_gold_that_is_not_math_is_masked(math_verifier: MathVerifier) -> None:
    # A proof or a reference to earlier text is not an answer: the reward is unknown, not 0.
    items = [
        RewardInput(r1("by induction", "done"), gold="The proof follows by induction on n."),
        RewardInput(r1("x", "5"), gold="See the proof above."),
    ]
    got = AccuracyReward(math_verifier)(items)
    assert all(r.status == "unverifiable" for r in got), got


def test_non_reasoning_accuracy_is_a_reference_match(math_verifier: MathVerifier) -> None:
    # The non-reasoning toy families (domain general) are judged by a rule, not masked.
    items = [
        RewardInput("<think></think><answer>oslo.</answer>", gold="Oslo", domain="general"),
        RewardInput("<think></think><answer>Bergen</answer>", gold="Oslo", domain="general"),
        RewardInput("<think></think> Good  morning!", gold="good morning", domain="general"),
        RewardInput("no tags: Blume", gold="Blume", domain="general"),
    ]
    got = AccuracyReward(math_verifier)(items)
    assert [r.value for r in got] == [1.0, 0.0, 1.0, 0.0]
    assert all(r.status == "ok" for r in got)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxPool]:
    try:
        pool = SandboxPool(workers=2)
    except SandboxUnavailable as exc:
        pytest.skip(f"no sandbox here: {exc}")
    with pool:
        yield pool


def test_code_accuracy(math_verifier: MathVerifier, sandbox: SandboxPool) -> None:
    stdio = json.dumps({"kind": "stdio", "cases": [{"input": "2 3", "output": "5"}]})
    asserts = json.dumps(
        {"kind": "assert", "code": "assert add(2, 3) == 5\n", "entry_point": "add"}
    )
    items = [
        RewardInput(r1("sum", "```python\nprint(sum(map(int, input().split())))\n```"), stdio),
        RewardInput(r1("product", "```python\nprint(2 * 3)\n```"), stdio),
        RewardInput(r1("add", "```python\ndef add(a, b):\n    return a + b\n```"), asserts),
        RewardInput(r1("add", "```python\ndef add(a, b):\n    return a - b\n```"), asserts),
        RewardInput(r1("x", "print(5)"), "not json"),
    ]
    items = [RewardInput(i.completion, i.gold, domain="code") for i in items]
    got = AccuracyReward(math_verifier, sandbox, code_timeout=10.0)(items)
    assert [r.value for r in got] == [1.0, 0.0, 1.0, 0.0, None]
    assert got[1].reason == "wrong_answer" and got[4].status == "unverifiable"
    # Without a sandbox, code cannot be judged: unverifiable, never a zero.
    alone = AccuracyReward(math_verifier, None)(items[:1])
    assert alone == [RewardResult.unverifiable("no_sandbox")]


def test_format_reward() -> None:
    items = [
        RewardInput(r1("think", "4")),
        RewardInput("<think>think</think> The answer: <answer>4</answer>"),
        RewardInput("4"),
    ]
    got = FormatReward()(items)
    assert [r.value for r in got] == [1.0, 0.0, 0.0]
    assert [r.reason for r in got] == ["ok", "stray_text_between", "missing_think"]


def test_language_reward() -> None:
    english = r1("First I add the numbers, then I check the result again.", "4")
    mixed = r1("我们需要计算这个值\uff0clet me check again\uff0c结果对。", "4")
    items = [
        RewardInput(english, language="en"),
        RewardInput(mixed, language="zh"),
        RewardInput(english, language="zh"),
        RewardInput(english, language="tlh"),  # Klingon: the detector does not know it
        RewardInput(english),
    ]
    got = LanguageReward(default_language="en")(items)
    assert got[0].value == 1.0
    assert got[1].value == pytest.approx(0.75)  # the share verifiers.language documents
    assert got[2].value == 0.0
    assert got[3].status == "unverifiable" and got[3].reason.startswith("unknown_language")
    assert got[4].value == 1.0  # the default target
    assert LanguageReward(default_language=None)(items[4:])[0].reason == "no_target_language"


def test_length_penalty() -> None:
    fn = LengthPenalty(max_tokens=100, buffer_tokens=20)
    lengths = [10, 80, 90, 100, 130]
    got = fn([RewardInput("x", completion_tokens=n) for n in lengths])
    assert [r.value for r in got] == [0.0, 0.0, -0.5, -1.0, -1.0]
    with pytest.raises(ValueError):
        LengthPenalty(10, 20)


def test_repetition_penalty() -> None:
    fresh = r1("one two three four five six seven eight", "8")
    loop = r1(" ".join(["add the two numbers again"] * 20), "8")
    got = RepetitionPenalty()([RewardInput(fresh), RewardInput(loop)])
    assert got[0].value == 0.0
    assert got[1].value is not None and got[1].value < -0.8


def test_unverifiable_rewards_are_masked_not_zero(math_verifier: MathVerifier) -> None:
    # One prompt, four samples: right, wrong, right, and one whose gold check cannot run.
    items = [
        RewardInput(r1("2*3=6", "6"), gold="6"),
        RewardInput(r1("2*3=5", "5"), gold="6"),
        RewardInput(r1("2*3=6", "6"), gold="6"),
        RewardInput(r1("2*3=6", "6"), gold="See the solution above."),
    ]
    results = score([AccuracyReward(math_verifier), FormatReward()], items)
    rewards, valid = combine_rewards(results, {"accuracy": 1.0, "format": 0.5})
    assert valid.tolist() == [True, True, True, False]
    assert rewards[:3].tolist() == [1.5, 0.5, 1.5] and math.isnan(rewards[3].item())
    adv = group_advantages(rewards, 4, valid=valid, scale_by_std=False)
    # The baseline is the mean of the three judged samples (7/6), not of four with a zero.
    torch.testing.assert_close(adv, torch.tensor([1.5 - 3.5 / 3, 0.5 - 3.5 / 3, 1.5 - 3.5 / 3, 0]))
    # A zero weight does not need the reward at all.
    _, valid = combine_rewards(results, {"accuracy": 0.0, "format": 1.0})
    assert valid.all()
    metrics = reward_metrics(results)
    assert metrics["reward/accuracy"] == pytest.approx(2 / 3)
    assert metrics["reward/accuracy/unverifiable"] == pytest.approx(0.25)
    assert metrics["reward/format"] == 1.0


def test_score_checks_its_functions() -> None:
    with pytest.raises(ValueError, match="two reward functions"):
        score([FormatReward(), FormatReward()], [RewardInput("x")])
    with pytest.raises(KeyError, match="accuracy"):
        combine_rewards({"format": [RewardResult.ok(1)]}, {"accuracy": 1.0})
