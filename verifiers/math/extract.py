"""Find the final answer in a completion.

Where the answer is looked for, in order:

1. The region: the last complete `<answer>...</answer>` block when there is
   one; otherwise the text after `</think>`; otherwise the whole completion.
   A completion that opens `<think>` and never closes it was cut off while
   reasoning and has no answer.
2. Inside the region: every balanced `\\boxed{...}` (or `\\fbox{...}`), the
   last one being the answer and the others kept so that a caller can spot two
   different boxed values; else the last "final answer is ...", "the answer
   is ...", "Answer: ..." phrase; else, inside an `<answer>` block only, the
   whole block.

There is deliberately no "last number in the text" fallback: in reward mode a
completion that never commits to an answer must not be scored on a number
picked out of its reasoning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Completions longer than this are not scanned; a reward model never needs
# to read a megabyte to find an answer, and the scans below stay linear anyway.
MAX_COMPLETION_CHARS = 1_000_000

_BOXED = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])\s*")
# "The final answer is $3$.", "Final Answer: 3", "the answer is 3", "**Answer:** 3".
_PHRASE = re.compile(
    r"(?:final\s+answer\s*(?:\*\*|__)?\s*(?:is\b|[:=])?"
    r"|the\s+answer\s+is\b"
    r"|\banswer\s*(?:\*\*|__)?\s*:)"
    r"\s*(?:\*\*|__)?\s*:?",
    re.IGNORECASE,
)
# A sentence ends at a full stop followed by white space (so `3.5` survives).
_BARE_TOKEN = re.compile(r"[^\s${}]+")
_SENTENCE_END = re.compile(r"\.\s|\n")
_MATH_SPANS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))


@dataclass(frozen=True, slots=True)
class Extraction:
    """The answer found in a completion.

    `answer` is the final answer's text; `alternatives` holds every other boxed
    value of the region, in order, so that the checker can tell a repeated
    answer from a hedge.
    """

    answer: str
    source: str  # "boxed", "phrase" or "answer_block"
    alternatives: tuple[str, ...] = ()


class CompletionTooLong(ValueError):
    """The completion is over MAX_COMPLETION_CHARS."""


def extract_answer(completion: str) -> Extraction | None:
    """The completion's final answer, or None when it gives none."""
    if len(completion) > MAX_COMPLETION_CHARS:
        raise CompletionTooLong(f"completion of {len(completion)} characters")
    region, in_block = _answer_region(completion)
    if region is None:
        return None
    boxes = boxed_contents(region)
    if boxes:
        last = boxes[-1].strip()
        return Extraction(last, "boxed", tuple(b.strip() for b in boxes[:-1]))
    phrase = _after_phrase(region)
    if phrase:
        return Extraction(phrase, "phrase")
    if in_block:
        text = region.strip()
        return Extraction(text, "answer_block") if text else None
    return None


def _answer_region(completion: str) -> tuple[str | None, bool]:
    # rfind, not a regex: `<answer>(.*?)</answer>` rescans the rest of the
    # text from every unclosed tag, quadratic on a hostile completion.
    lowered = completion.lower()
    close = lowered.rfind("</answer>")
    if close >= 0:
        start = lowered.rfind("<answer>", 0, close)
        if start >= 0:
            return completion[start + len("<answer>") : close], True
    end = lowered.rfind("</think>")
    if end >= 0:
        return completion[end + len("</think>") :], False
    if "<think>" in lowered:
        return None, False
    return completion, False


def boxed_contents(text: str) -> list[str]:
    """The contents of every balanced `\\boxed{...}` in `text`, in order.

    `\\boxed 5` (a single token, no braces) counts too. An unbalanced box, as a
    completion cut off mid-answer leaves, is skipped.
    """
    found: list[str] = []
    pairs: dict[int, int] | None = None
    for match in _BOXED.finditer(text):
        start = match.end()
        if start < len(text) and text[start] == "{":
            if pairs is None:
                pairs = brace_pairs(text)
            close = pairs.get(start)
            if close is not None:
                found.append(text[start + 1 : close])
        else:
            token = _BARE_TOKEN.match(text, start)
            if token:
                found.append(token.group())
    return found


def brace_pairs(text: str) -> dict[int, int]:
    """Position of each `{` that is closed -> position of its `}`; escaped braces do not count.

    One pass with a stack: scanning forward from every `\\boxed{` instead
    would be quadratic on a text of many unclosed boxes.
    """
    pairs: dict[int, int] = {}
    stack: list[int] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            pairs[stack.pop()] = i
        i += 1
    return pairs


def _after_phrase(region: str) -> str | None:
    matches = list(_PHRASE.finditer(region))
    if not matches:
        return None
    tail = region[matches[-1].end() :].lstrip(" \t")
    if tail.startswith("\n"):
        # "Final Answer:" on its own line, the answer on the next.
        tail = tail.lstrip()
    for opener, closer in _MATH_SPANS:
        if tail.startswith(opener):
            close = tail.find(closer, len(opener))
            if close > 0:
                return tail[len(opener) : close].strip() or None
    end = _SENTENCE_END.search(tail)
    answer = (tail[: end.start()] if end else tail).strip()
    # A full stop that ends the text ends the sentence too.
    answer = answer.removesuffix(".").strip()
    return answer or None
