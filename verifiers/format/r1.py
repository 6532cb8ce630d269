"""The R1 completion template: `<think>reasoning</think><answer>answer</answer>`.

R1-Zero's format reward is a rule: the reasoning sits inside `<think>` and the
answer inside `<answer>`, in that order, each once, with nothing else around
them. `check_r1_format` applies that rule and says which part of it failed with
a short reason code, so a filter can count rejects per reason.

What is covered
- Exact, lower-case tags `<think>`, `</think>`, `<answer>`, `</answer>`; any
  whitespace (Unicode included) before, between and after the two blocks.
- An empty think block is valid: the non-reasoning track is answered without
  a chain of thought, as R1 does; `reasoning` is then `""`.
- Extracted `reasoning` and `answer` are the block contents with surrounding
  whitespace stripped, given only when the check passes.
- `require_answer=False` also accepts the format the released R1 chat model
  emits, `<think>...</think>` followed by the plain answer with no `<answer>`
  tags: the text after `</think>` is then the answer (`None` when empty). An
  `<answer>` block, when present, must still be well formed.

What is not covered
- Tag variants (`<Think>`, `< think >`, `<think attr="x">`) are not tags: they
  count as text, so they usually surface as a missing or stray-text reason.
- A reasoning that quotes a literal tag (say, explaining the template) is
  rejected as a repeated or nested tag: the rule cannot tell a quote from a tag.
- Chat templates that put `<think>` in the prompt leave the completion without
  its opening tag; prepend `"<think>"` before checking such completions.
- Invisible non-whitespace characters (BOM, zero-width space) around the
  blocks count as stray text.

Reason codes, in the order they are checked (the first failure is reported):
`repeated_think`, `missing_think` (no `<think>`), `unclosed_think` (no
`</think>` after it), `repeated_answer`, `missing_answer`, `unclosed_answer`,
`nested_tags` (one block overlaps the other), `answer_before_think`,
`stray_text_before`, `stray_text_between`, `stray_text_after`,
`empty_answer` (an `<answer>` block with only whitespace); `ok` when it passes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

VERSION = "1.0"

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"

_TAG = re.compile(r"</?(?:think|answer)>")

REASONS = (
    "ok",
    "repeated_think",
    "missing_think",
    "unclosed_think",
    "repeated_answer",
    "missing_answer",
    "unclosed_answer",
    "nested_tags",
    "answer_before_think",
    "stray_text_before",
    "stray_text_between",
    "stray_text_after",
    "empty_answer",
)


@dataclass(frozen=True, slots=True)
class FormatResult:
    """The outcome of the format check.

    `reason` is `"ok"` when `ok`, else the first failing rule's code.
    `reasoning` and `answer` are the stripped block contents, `None` on failure.
    """

    ok: bool
    reason: str
    reasoning: str | None = None
    answer: str | None = None


def _fail(reason: str) -> FormatResult:
    return FormatResult(ok=False, reason=reason)


def check_r1_format(completion: str, *, require_answer: bool = True) -> FormatResult:
    """Check `completion` against the R1 template; see the module docstring."""
    spans: dict[str, list[tuple[int, int]]] = {
        THINK_OPEN: [],
        THINK_CLOSE: [],
        ANSWER_OPEN: [],
        ANSWER_CLOSE: [],
    }
    for match in _TAG.finditer(completion):
        spans[match.group()].append(match.span())
    think_open, think_close = spans[THINK_OPEN], spans[THINK_CLOSE]
    answer_open, answer_close = spans[ANSWER_OPEN], spans[ANSWER_CLOSE]

    if len(think_open) > 1 or len(think_close) > 1:
        return _fail("repeated_think")
    if not think_open:
        return _fail("missing_think")
    # A close tag that comes before its open tag leaves the open one unclosed.
    if not think_close or think_close[0][0] < think_open[0][0]:
        return _fail("unclosed_think")
    t_start, t_inner = think_open[0]
    t_inner_end, t_end = think_close[0]
    reasoning = completion[t_inner:t_inner_end].strip()

    if len(answer_open) > 1 or len(answer_close) > 1:
        return _fail("repeated_answer")
    has_answer = bool(answer_open or answer_close)
    if not has_answer:
        if require_answer:
            return _fail("missing_answer")
        if completion[:t_start].strip():
            return _fail("stray_text_before")
        trailing = completion[t_end:].strip()
        return FormatResult(True, "ok", reasoning, trailing or None)
    if not answer_open:
        return _fail("missing_answer")
    if not answer_close or answer_close[0][0] < answer_open[0][0]:
        return _fail("unclosed_answer")
    a_start, a_inner = answer_open[0]
    a_inner_end, a_end = answer_close[0]

    if a_start < t_end and a_end > t_start:
        return _fail("nested_tags")
    if a_end <= t_start:
        return _fail("answer_before_think")
    if completion[:t_start].strip():
        return _fail("stray_text_before")
    if completion[t_end:a_start].strip():
        return _fail("stray_text_between")
    if completion[a_end:].strip():
        return _fail("stray_text_after")
    answer = completion[a_inner:a_inner_end].strip()
    if not answer:
        return _fail("empty_answer")
    return FormatResult(True, "ok", reasoning, answer)


def format_reward(completion: str, *, require_answer: bool = True) -> float:
    """R1's format reward for GRPO: 1.0 when the template is followed, else 0.0."""
    return 1.0 if check_r1_format(completion, require_answer=require_answer).ok else 0.0


def parse_r1(completion: str, *, require_answer: bool = True) -> tuple[str | None, str | None]:
    """`(reasoning, answer)` of a well-formed completion, `(None, None)` otherwise."""
    result = check_r1_format(completion, require_answer=require_answer)
    return result.reasoning, result.answer
