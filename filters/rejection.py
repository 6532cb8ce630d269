"""R1's rejection filters: keep only verified-correct, well-formed, readable samples.

Each filter is a frozen dataclass with a `keep(sample) -> (bool, reason)`;
`filters.base.apply_filters` runs them and writes `"{name}:{reason}"` into the
rejects. Reason codes, by filter:

| filter | name | reasons |
|---|---|---|
| VerifiedCorrect | `verified` | `incorrect`, `unverifiable`, `unjudged` |
| R1Format | `format` | the format check's codes: `missing_think`, `unclosed_answer`, `stray_text_after`, ... |
| Readability | `readability` | `mixed_language`, `overlong_paragraph`, `code_in_reasoning`, `unsupported_language` |
| Truncated | `truncated` | `length` |
| LengthBounds | `length` | `too_short`, `too_long`, `no_token_count` |
| Repetition | `repetition` | `ngram_repeats` |
| DegenerateReasoning | `degenerate` | `empty_reasoning`, `short_reasoning`, `repeated_line`, `reasoning_is_answer` |

`default_rejection_filters()` is R1's chain in a sensible order: cheap
structural checks first, so the costlier language rules see fewer rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from filters.base import CHARS_PER_TOKEN, Filter, parse_r1_cached, reasoning_and_answer
from verifiers.language import (
    code_block_in_reasoning,
    detect_mixed_language,
    ngram_repeats,
    normalize_language,
    overlong_paragraphs,
)

Policy = Literal["drop", "keep"]
_POLICIES = ("drop", "keep")


def _check_policy(label: str, value: str) -> None:
    if value not in _POLICIES:
        raise ValueError(f"{label} must be one of {_POLICIES}, got {value!r}")


@dataclass(frozen=True)
class VerifiedCorrect(Filter):
    """Keep samples an accuracy verifier judged correct.

    Only verdicts of `verifiers` count (the format verdict is R1Format's
    business). Any `incorrect` among them drops the sample; otherwise any
    `correct` keeps it; a sample whose verdicts are all `unverifiable`
    (timeouts, gold that cannot be parsed) follows `unverifiable`, and one with
    no verdict from these verifiers at all (a general prompt, or not judged
    yet) follows `unjudged`. Both default to drop: a sample nobody could check
    is not a verified sample. Use `unjudged="keep"` for a mixture whose
    non-reasoning part has no accuracy verifier.
    """

    name: ClassVar[str] = "verified"
    columns: ClassVar[tuple[str, ...]] = ("verdicts",)

    verifiers: tuple[str, ...] = ("math", "code")
    unverifiable: Policy = "drop"
    unjudged: Policy = "drop"

    def __post_init__(self) -> None:
        _check_policy("unverifiable", self.unverifiable)
        _check_policy("unjudged", self.unjudged)
        if not self.verifiers:
            raise ValueError("verifiers must name at least one accuracy verifier, e.g. ('math',)")

    def keep(self, sample: Mapping[str, Any]) -> tuple[bool, str | None]:
        found = {v["verdict"] for v in sample["verdicts"] or () if v["verifier"] in self.verifiers}
        if "incorrect" in found:
            return False, "incorrect"
        if "correct" in found:
            return True, None
        if found:
            return (True, None) if self.unverifiable == "keep" else (False, "unverifiable")
        return (True, None) if self.unjudged == "keep" else (False, "unjudged")


@dataclass(frozen=True)
class R1Format(Filter):
    """Keep completions that follow the R1 template (`verifiers.format.check_r1_format`).

    An empty `<think></think>` is valid: the non-reasoning track answers
    without a chain of thought. Whether a reasoning sample's think block is
    empty is DegenerateReasoning's question, not this one's.
    """

    name: ClassVar[str] = "format"
    columns: ClassVar[tuple[str, ...]] = ("completion",)

    require_answer: bool = True

    def keep(self, sample: Mapping[str, Any]) -> tuple[bool, str | None]:
        result = parse_r1_cached(sample["completion"], require_answer=self.require_answer)
        return (True, None) if result.ok else (False, result.reason)


@dataclass(frozen=True)
class Readability(Filter):
    """R1's readability rules on the reasoning: one language, short paragraphs, no code blocks.

    The target language is the sample's `language` column when set, else
    `default_language`. A sample with no parseable reasoning passes (a broken
    template is R1Format's reject), and so does an empty reasoning.
    """

    name: ClassVar[str] = "readability"
    columns: ClassVar[tuple[str, ...]] = ("completion", "reasoning", "answer", "language")

    default_language: str = "en"
    min_consistency: float = 0.9
    max_paragraph_chars: int = 2000

    def __post_init__(self) -> None:
        normalize_language(self.default_language)  # raises naming the supported codes

    def keep(self, sample: Mapping[str, Any]) -> tuple[bool, str | None]:
        reasoning, _ = reasoning_and_answer(sample)
        if not reasoning:
            return True, None
        language = sample.get("language") or self.default_language
        try:
            normalize_language(language)
        except ValueError:
            # One odd row must not stop a batch; the count shows how many there are.
            return False, "unsupported_language"
        reason = (
            detect_mixed_language(reasoning, language, self.min_consistency)
            or overlong_paragraphs(reasoning, self.max_paragraph_chars)
            or code_block_in_reasoning(reasoning)
        )
        return (True, None) if reason is None else (False, reason)


@dataclass(frozen=True)
class Truncated(Filter):
    """Drop completions cut off by the token limit (`finish_reason == "length"`).

    A truncated chain of thought often still parses (a missing `</answer>` is
    caught by R1Format, but a generator that closes tags on stop may not leave
    one), so the generator's own word is checked separately.
    """

    name: ClassVar[str] = "truncated"
    columns: ClassVar[tuple[str, ...]] = ("finish_reason",)

    def keep(self, sample: Mapping[str, Any]) -> tuple[bool, str | None]:
        return (False, "length") if sample["finish_reason"] == "length" else (True, None)


@dataclass(frozen=True)
class LengthBounds(Filter):
    """Keep completions with `min_tokens <= tokens <= max_tokens`.

    Tokens are the generator's `completion_tokens`. Rows without a count
    (imported samples, reference solutions) are estimated from their length
    at `chars_per_token` characters per token (default `CHARS_PER_TOKEN`,
    4.0, an English BPE average; far off for Chinese, about 1.5): dropping
    every imported sample would be worse than an estimate. Set
    `chars_per_token=None` to drop them instead with `no_token_count`.
    """

    name: ClassVar[str] = "length"
    columns: ClassVar[tuple[str, ...]] = ("completion", "completion_tokens")

    min_tokens: int = 1
    max_tokens: int | None = None
    chars_per_token: float | None = CHARS_PER_TOKEN

    def __post_init__(self) -> None:
        if self.min_tokens < 0:
            raise ValueError(f"min_tokens must be >= 0, got {self.min_tokens}")
        if self.max_tokens is not None and self.max_tokens < self.min_tokens:
            raise ValueError(f"max_tokens ({self.max_tokens}) < min_tokens ({self.min_tokens})")
        if self.chars_per_token is not None and self.chars_per_token <= 0:
            raise ValueError(f"chars_per_token must be > 0, got {self.chars_per_token}")

    def keep(self, sample: Mapping[str, Any]) -> tuple[bool, str | None]:
        tokens: float | None = sample["completion_tokens"]
        if tokens is None:
            if self.chars_per_token is None:
                return False, "no_token_count"
            tokens = len(sample["completion"]) / self.chars_per_token
        if tokens < self.min_tokens:
            return False, "too_short"
        if self.max_tokens is not None and tokens > self.max_tokens:
            return False, "too_long"
        return True, None


@dataclass(frozen=True)
class Repetition(Filter):
    """Drop completions that loop: more than `max_share` of their word n-grams repeat earlier ones.

    Looping is how RL checkpoints fail when they run out of ideas, and it
    survives the format check. The share comes from `verifiers.language.ngram_repeats`
    on the whole completion (a looping answer is as bad as a looping CoT).
    Texts with fewer than `min_ngrams` n-grams are not judged: in a short text
    one repeated phrase is a large share without being a loop.
    """

    name: ClassVar[str] = "repetition"
    columns: ClassVar[tuple[str, ...]] = ("completion",)

    n: int = 4
    max_share: float = 0.3
    min_ngrams: int = 20

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if not 0.0 <= self.max_share <= 1.0:
            raise ValueError(f"max_share must be in [0, 1], got {self.max_share}")

    def keep(self, sample: Mapping[str, Any]) -> tuple[bool, str | None]:
        grams, repeats = ngram_repeats(sample["completion"], self.n)
        if grams < self.min_ngrams or repeats / grams <= self.max_share:
            return True, None
        return False, "ngram_repeats"


@dataclass(frozen=True)
class DegenerateReasoning(Filter):
    """Drop reasoning-track samples whose chain of thought is not a chain of thought.

    Only rows on the `reasoning` track are judged: the non-reasoning track is
    meant to have an empty think block. Reasons, checked in this order:
    `empty_reasoning` (nothing inside `<think>`, or no think block at all),
    `short_reasoning` (under `min_chars` characters once stripped),
    `repeated_line` (two or more non-empty lines, all the same), and
    `reasoning_is_answer` (the reasoning only restates the answer, compared
    with whitespace and case folded).
    """

    name: ClassVar[str] = "degenerate"
    columns: ClassVar[tuple[str, ...]] = ("completion", "reasoning", "answer", "track")

    # The shortest toy solutions ("12+7=19.\n19-5=14.") are about 17 characters.
    min_chars: int = 10

    def keep(self, sample: Mapping[str, Any]) -> tuple[bool, str | None]:
        if sample["track"] != "reasoning":
            return True, None
        reasoning, answer = reasoning_and_answer(sample)
        text = (reasoning or "").strip()
        if not text:
            return False, "empty_reasoning"
        if len(text) < self.min_chars:
            return False, "short_reasoning"
        lines = [line for line in map(str.strip, text.splitlines()) if line]
        if len(lines) > 1 and len(set(lines)) == 1:
            return False, "repeated_line"
        if answer is not None and _same_folded(text, answer):
            return False, "reasoning_is_answer"
        return True, None


def _same_folded(a: str, b: str) -> bool:
    """Whether `a` and `b` are equal with case and whitespace folded."""
    # The first words settle most pairs without reading the whole text.
    a_head, b_head = a.split(None, 1)[:1], b.split(None, 1)[:1]
    if [w.casefold() for w in a_head] != [w.casefold() for w in b_head]:
        return False
    a_words, b_words = a.split(), b.split()
    # Case folding adds no whitespace, so different word counts settle it cheaply.
    if len(a_words) != len(b_words):
        return False
    return " ".join(a_words).casefold() == " ".join(b_words).casefold()


def default_rejection_filters(
    *,
    language: str = "en",
    max_tokens: int | None = None,
    unverifiable: Policy = "drop",
    unjudged: Policy = "drop",
) -> list[Filter]:
    """R1's rejection chain: truncation, format, degenerate CoT, length, correctness, loops, readability."""
    return [
        Truncated(),
        R1Format(),
        DegenerateReasoning(),
        LengthBounds(max_tokens=max_tokens),
        VerifiedCorrect(unverifiable=unverifiable, unjudged=unjudged),
        Repetition(),
        Readability(default_language=language),
    ]
