"""Rule rewards for GRPO, built on the verifiers: plain callables over a batch of completions.

    with MathVerifier(workers=2) as math, SandboxPool(workers=2) as sandbox:
        functions = [AccuracyReward(math, sandbox), FormatReward(), LanguageReward("en")]
        results = score(functions, items)          # name -> one RewardResult per item
        rewards, valid = combine_rewards(results, {"accuracy": 1.0, "format": 1.0,
                                                   "language": 0.1})
        advantages = group_advantages(rewards, G, valid=valid)

Each function takes a sequence of `RewardInput` (the completion as the verifiers read it, its
gold, domain and target language) and returns one `RewardResult` per input: a value, or the
status `unverifiable` with the reason when the reward cannot be computed (a gold that is not a
mathematical object, a sandbox failure, a missing gold, a check past its deadline). An
unverifiable reward is masked, never counted as zero: `combine_rewards` marks the sample
invalid and `group_advantages` leaves it out of its group's baseline and gives it no advantage,
and the loss mask drops its tokens. A zero would punish a completion nobody could judge.

The rewards (R1 section 2.2.2 and 2.3.3):

- `AccuracyReward`: 1 for a verified-correct answer, 0 for an incorrect one. Math (and the
  countdown golds, `{"target": ..., "numbers": [...]}`) through `verifiers.math`'s batch API
  and its worker pool; code (domain `code`, gold = tests as JSON, as the store keeps them) in
  the sandbox, on as many threads as the pool has pre-started workers. A prompt of domain
  `general` (the non-reasoning toy families: greetings, facts, translation) is a reference
  match, a rule: the `<answer>` block (else the text after `</think>`, else the whole
  completion) equals the gold once case, spacing and closing punctuation are normalised.
- `FormatReward`: 1 when the completion follows `<think>...</think><answer>...</answer>`
  (`verifiers.format`), else 0. Always computable.
- `LanguageReward`: R1's language-consistency reward, the share of the chain of thought's
  words in the target language (`verifiers.language.language_consistency`), in [0, 1].
- `LengthPenalty` (optional): DAPO's soft overlong punishment, 0 up to max - buffer tokens,
  then linearly down to -1 at max tokens (and -1 past it).
- `RepetitionPenalty` (optional): minus the share of repeated word 4-grams in the chain of
  thought (`verifiers.language.repetition_score`), against degenerate loops.

The trainer imports `verifiers` and `store` only, never generators, filters or flows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch import Tensor

from verifiers.code import SandboxPool, verify_code
from verifiers.format import check_r1_format
from verifiers.language import language_consistency, repetition_score
from verifiers.math import MathVerifier
from verifiers.math.verdict import Verdict

RewardStatus = Literal["ok", "unverifiable"]

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


@dataclass(frozen=True)
class RewardResult:
    """One reward of one completion: a value when status is `ok`, else None and why."""

    value: float | None
    status: RewardStatus
    reason: str = ""

    def __post_init__(self) -> None:
        if (self.status == "ok") != (self.value is not None):
            raise ValueError(f"a reward has a value exactly when its status is ok: {self}")
        if self.value is not None and not math.isfinite(self.value):
            raise ValueError(f"reward value must be finite, got {self.value}")

    @classmethod
    def ok(cls, value: float, reason: str = "") -> RewardResult:
        return cls(float(value), "ok", reason)

    @classmethod
    def unverifiable(cls, reason: str) -> RewardResult:
        return cls(None, "unverifiable", reason)


@dataclass(frozen=True)
class RewardInput:
    """What a reward reads of one sampled completion.

    completion: the full text the verifiers check, generation prefix included (a prompt
    rendered with `render_prompt(..., think=True)` ends in `<think>`, which the model did not
    sample: pass `generation_prefix(True) + completion.text`).
    gold: the reference answer, a countdown spec as JSON, or code tests as JSON; None if none.
    domain: `code` sends the completion to the sandbox; any other domain to the math verifier.
    language: target language of the chain of thought (the record's `language`), or None.
    completion_tokens: how many tokens were sampled (for the length penalty).
    """

    completion: str
    gold: str | None = None
    domain: str = "math"
    language: str | None = None
    completion_tokens: int = 0


class RewardFunction(Protocol):
    """A named batch reward: one result per input, in order."""

    @property
    def name(self) -> str: ...

    def __call__(self, items: Sequence[RewardInput]) -> list[RewardResult]: ...


def chain_of_thought(completion: str) -> str:
    """The reasoning a completion wrote: its `<think>` block when the template holds; else the
    text after `<think>` up to `</think>` or the end (cut off while reasoning), else the text
    before a lone `</think>`, else the whole completion."""
    checked = check_r1_format(completion)
    if checked.ok and checked.reasoning is not None:
        return checked.reasoning
    start = completion.find(THINK_OPEN)
    if start >= 0:
        inner = start + len(THINK_OPEN)
        end = completion.find(THINK_CLOSE, inner)
        return completion[inner : end if end >= 0 else len(completion)].strip()
    end = completion.find(THINK_CLOSE)
    return (completion[:end] if end >= 0 else completion).strip()


# ----------------------------------------------------------------------------------------------
# Accuracy


def _from_verdict(verdict: str, reason: str) -> RewardResult:
    if verdict == "correct":
        return RewardResult.ok(1.0, reason)
    if verdict == "incorrect":
        return RewardResult.ok(0.0, reason)
    return RewardResult.unverifiable(reason)


class AccuracyReward:
    """1 for a verified-correct answer, 0 for an incorrect one, unverifiable when the verifier
    cannot judge (see `verifiers.math` and `verifiers.code` for when).

    math: a started `MathVerifier` (its workers and cache are shared across steps); sandbox: a
    started `SandboxPool`, or None, which makes every code item unverifiable (`no_sandbox`).
    The caller owns both and closes them.
    """

    name = "accuracy"

    def __init__(
        self,
        math_verifier: MathVerifier,
        sandbox: SandboxPool | None = None,
        *,
        code_timeout: float = 10.0,
        math_timeout: float | None = None,
    ) -> None:
        self.math = math_verifier
        self.sandbox = sandbox
        self.code_timeout = code_timeout
        self.math_timeout = math_timeout

    def __call__(self, items: Sequence[RewardInput]) -> list[RewardResult]:
        results: list[RewardResult | None] = [None] * len(items)
        math_rows, code_rows = [], []
        for i, item in enumerate(items):
            if item.gold is None:
                results[i] = RewardResult.unverifiable("no_gold")
            elif item.domain == "general":
                results[i] = reference_match(item.completion, item.gold)
            elif item.domain == "code":
                code_rows.append(i)
            else:
                math_rows.append(i)
        if math_rows:
            verdicts: list[Verdict] = self.math.verify_many(
                [(str(items[i].gold), items[i].completion) for i in math_rows],
                timeout=self.math_timeout,
            )
            for i, v in zip(math_rows, verdicts, strict=True):
                results[i] = _from_verdict(v.verdict, v.reason)
        if code_rows:
            for i, result in zip(code_rows, self._code([items[i] for i in code_rows]), strict=True):
                results[i] = result
        done = [r for r in results if r is not None]
        assert len(done) == len(items), "every item is routed to exactly one verifier"
        return done

    def _code(self, items: list[RewardInput]) -> list[RewardResult]:
        sandbox = self.sandbox
        if sandbox is None:
            return [RewardResult.unverifiable("no_sandbox") for _ in items]

        def one(item: RewardInput) -> RewardResult:
            try:
                tests = json.loads(str(item.gold))
            except json.JSONDecodeError:
                return RewardResult.unverifiable("bad_input: gold is not JSON tests")
            verdict = verify_code(item.completion, tests, sandbox, timeout=self.code_timeout)
            return _from_verdict(verdict.verdict, verdict.detail)

        # One thread per pre-started worker keeps every sandbox busy.
        with ThreadPoolExecutor(max(1, sandbox.size), thread_name_prefix="code-reward") as pool:
            return list(pool.map(one, items))


def _normalised(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .!?")


def reference_match(completion: str, gold: str) -> RewardResult:
    """1 when the completion's answer (the `<answer>` block, else the text after `</think>`,
    else all of it) equals the reference `gold` up to case, spacing and closing punctuation,
    else 0: the rule reward for non-reasoning prompts whose reference answer is short text."""
    checked = check_r1_format(completion)
    if checked.ok and checked.answer is not None:
        answer = checked.answer
    else:
        close = completion.rfind(THINK_CLOSE)
        answer = completion[close + len(THINK_CLOSE) :] if close >= 0 else completion
        answer = answer.replace("<answer>", " ").replace("</answer>", " ")
    same = _normalised(answer) == _normalised(gold)
    return RewardResult.ok(1.0 if same else 0.0, "reference_match" if same else "reference_differs")


# ----------------------------------------------------------------------------------------------
# Format, language, length, repetition


class FormatReward:
    """R1's format reward: 1 when the completion follows the template, else 0 (reason: the
    first broken rule, `verifiers.format.REASONS`)."""

    name = "format"

    def __init__(self, *, require_answer: bool = True) -> None:
        self.require_answer = require_answer

    def __call__(self, items: Sequence[RewardInput]) -> list[RewardResult]:
        out = []
        for item in items:
            checked = check_r1_format(item.completion, require_answer=self.require_answer)
            out.append(RewardResult.ok(1.0 if checked.ok else 0.0, checked.reason))
        return out


class LanguageReward:
    """R1's language-consistency reward: the share of the chain of thought's words in the
    target language (the item's `language`, else `default_language`), in [0, 1].

    An item with no target language (and no default), or one the detector does not know, is
    unverifiable. A chain of thought with no words (empty, or only math) scores 1.
    """

    name = "language"

    def __init__(self, default_language: str | None = "en") -> None:
        self.default_language = default_language

    def __call__(self, items: Sequence[RewardInput]) -> list[RewardResult]:
        out = []
        for item in items:
            target = item.language or self.default_language
            if target is None:
                out.append(RewardResult.unverifiable("no_target_language"))
                continue
            try:
                share = language_consistency(chain_of_thought(item.completion), target)
            except ValueError:
                out.append(RewardResult.unverifiable(f"unknown_language: {target}"))
                continue
            out.append(RewardResult.ok(share))
        return out


class LengthPenalty:
    """DAPO's soft overlong punishment from the sampled token count L:
    0 for L <= max_tokens - buffer_tokens, (max_tokens - buffer_tokens - L) / buffer_tokens up
    to max_tokens, -1 beyond. A response cut at max_tokens gets -1 at the limit."""

    name = "length"

    def __init__(self, max_tokens: int, buffer_tokens: int) -> None:
        if not 0 < buffer_tokens <= max_tokens:
            raise ValueError(
                f"need 0 < buffer_tokens <= max_tokens, got {buffer_tokens}, {max_tokens}"
            )
        self.max_tokens = max_tokens
        self.buffer_tokens = buffer_tokens

    def __call__(self, items: Sequence[RewardInput]) -> list[RewardResult]:
        free = self.max_tokens - self.buffer_tokens
        out = []
        for item in items:
            over = item.completion_tokens - free
            penalty = 0.0 if over <= 0 else max(-1.0, -over / self.buffer_tokens)
            out.append(RewardResult.ok(penalty))
        return out


class RepetitionPenalty:
    """Minus the share of the chain of thought's word n-grams that repeat an earlier one:
    0 for text that never repeats itself, towards -1 for a loop."""

    name = "repetition"

    def __init__(self, n: int = 4) -> None:
        self.n = n

    def __call__(self, items: Sequence[RewardInput]) -> list[RewardResult]:
        return [
            RewardResult.ok(-repetition_score(chain_of_thought(item.completion), self.n))
            for item in items
        ]


# ----------------------------------------------------------------------------------------------
# Scoring a batch


def score(
    functions: Sequence[RewardFunction], items: Sequence[RewardInput]
) -> dict[str, list[RewardResult]]:
    """Every function over every item: name -> results in item order."""
    out: dict[str, list[RewardResult]] = {}
    for fn in functions:
        if fn.name in out:
            raise ValueError(f"two reward functions named {fn.name!r}")
        results = fn(items)
        if len(results) != len(items):
            raise RuntimeError(f"reward {fn.name!r} gave {len(results)} results for {len(items)}")
        out[fn.name] = results
    return out


def combine_rewards(
    results: Mapping[str, Sequence[RewardResult]], weights: Mapping[str, float]
) -> tuple[Tensor, Tensor]:
    """The weighted sum of the named rewards per sample -> (rewards (B,) float32, NaN where
    invalid; valid (B,) bool). A sample is valid only when every reward with a non-zero weight
    was computed: a partial sum would count the missing reward as zero."""
    unknown = sorted(set(weights) - set(results))
    if unknown:
        raise KeyError(f"weights for rewards that were not computed: {unknown}")
    sizes = {len(results[name]) for name in weights}
    if len(sizes) > 1:
        raise ValueError(f"reward lists differ in length: {sorted(sizes)}")
    n = sizes.pop() if sizes else 0
    total = torch.zeros(n, dtype=torch.float64)
    valid = torch.ones(n, dtype=torch.bool)
    for name, weight in weights.items():
        if weight == 0:
            continue
        for i, result in enumerate(results[name]):
            if result.value is None:
                valid[i] = False
            else:
                total[i] += weight * result.value
    rewards = torch.where(valid, total, float("nan")).float()
    return rewards, valid


def reward_metrics(results: Mapping[str, Sequence[RewardResult]]) -> dict[str, float]:
    """Per reward: mean value over the computed ones (`reward/NAME`) and the share that could
    not be computed (`reward/NAME/unverifiable`)."""
    metrics: dict[str, float] = {}
    for name, rs in results.items():
        values = [r.value for r in rs if r.value is not None]
        metrics[f"reward/{name}"] = sum(values) / len(values) if values else float("nan")
        metrics[f"reward/{name}/unverifiable"] = (len(rs) - len(values)) / len(rs) if rs else 0.0
    return metrics
