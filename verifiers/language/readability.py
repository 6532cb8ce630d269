"""The readability rules of R1's rejection sampling, applied to the reasoning.

R1 kept only readable samples: it dropped chains of thought with mixed
languages, long paragraphs or code blocks. Each rule here is a function that
returns a reason code (None when the text passes) or a score, and
`readability_issues` applies them all to a completion's reasoning.

What is covered
- `overlong_paragraph`: a paragraph (text between blank lines, fenced code
  left out) longer than `max_chars` characters. Characters, not words, so the
  limit holds the same for Chinese and English text; a Chinese character
  carries more content, so pick a lower limit for `zh` if wanted.
- `code_in_reasoning`: a fenced block (a line opening with ``` or ~~~), or a
  run of at least three consecutive lines that are each indented by four
  spaces or a tab or look like code, at least one of which looks like code
  (a line starting with a keyword such as `def`, `return`, `import`,
  `#include`, `print(`, or ending in `;`, `{` or a lone `}`). Inline code,
  inline and display math, indented math, and nested lists are not code.
- `mixed_language`: see `consistency.detect_mixed_language`.
- `repetition_score`: the share of word n-grams that repeat an earlier one,
  a score for later use; it is not part of `readability_issues`.

What is not covered
- Code written as prose lines without indentation or code keywords, and code
  in languages whose lines start with none of the listed keywords.
- Unreadable text that breaks none of the rules (run-on sentences under the
  paragraph limit, rambling); the rules are R1's three, not a readability model.
"""

from __future__ import annotations

import re

import numpy as np

from verifiers.format import check_r1_format
from verifiers.language._kernels import (
    TOKEN_SEPARATOR,
    TOKEN_SINGLE,
    TOKEN_UNKNOWN,
    TOKEN_WORD,
    ngram_repeats_kernel,
)
from verifiers.language.consistency import detect_mixed_language

OVERLONG_PARAGRAPH = "overlong_paragraph"
CODE_IN_REASONING = "code_in_reasoning"
MIN_CODE_LINES = 3

_FENCE_LINE = re.compile(r"^[ \t]{0,3}(?:`{3,}[^`\n]*|~{3,}[^\n]*)$", re.MULTILINE)
_FENCED_BLOCK = re.compile(
    r"^[ \t]{0,3}(?P<fence>`{3,}|~{3,})[^\n]*\n.*?(?:^[ \t]{0,3}(?P=fence)[ \t]*$|\Z)",
    re.MULTILINE | re.DOTALL,
)
_DISPLAY_MATH = re.compile(r"\$\$.*?\$\$|\\\[(?:(?!\\\[).)*?\\\]", re.DOTALL)
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_INDENTED = re.compile(r"^(?: {4}|\t)")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s")
# What a code line starts with (after indentation).
_CODE_LINE_START = r"""
        (?:async\s+)?def\s+\w+\s*\( | class\s+\w+\s*[(:]
      | return\b | import\s+\w | from\s+[\w.]+\s+import\b
      | for\s+\w+(?:\s*,\s*\w+)*\s+in\s+.+:$ | (?:while|if|elif)\s.*:$
      | with\s.+\sas\s+\w+:$ | (?:else|try|finally)\s*:$ | except\b.*:$
      | print\( | console\.log\( | System\.out\. | printf\( | std::
      | \#include\b | using\s+namespace\b | int\s+main\b
      | (?:let|const|var)\s+\w+\s*= | function\s+\w+\s*\(
      | (?:public|private|protected|static)\s+\w
      | fn\s+\w+\s*\( | func\s+\w+\s*\(
      | \}\s*;?\s*$
"""
_CODE_LINE = re.compile(rf"^\s*(?:{_CODE_LINE_START})|[;{{]\s*$", re.VERBOSE)
# The same test over many lines at once, for "\n" + the lines joined: it
# starts on a newline, ";" or "{", which the regex engine skips to quickly.
_CODE_LINE_ANYWHERE = re.compile(
    rf"[\n;{{](?:(?<=\n)\s*(?:{_CODE_LINE_START})|(?<=[;{{])\s*$)", re.VERBOSE | re.MULTILINE
)
# A Han or kana character is a token of its own; other word characters run on.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+")
_CJK_CHAR = re.compile(rf"[{_CJK}]")


def _has_fence(text: str) -> bool:
    """Whether `text` may hold a code fence: a cheap test before the fence patterns."""
    # A one-character search is a memchr; most texts have neither character.
    return ("`" in text and "```" in text) or ("~" in text and "~~~" in text)


def longest_paragraph_chars(text: str) -> int:
    """Length in characters of `text`'s longest paragraph, fenced code left out."""
    prose = _FENCED_BLOCK.sub("\n\n", text) if _has_fence(text) else text
    return max((len(p.strip()) for p in _PARAGRAPH_BREAK.split(prose)), default=0)


def overlong_paragraphs(text: str, max_chars: int = 2000) -> str | None:
    """`"overlong_paragraph"` when a paragraph of `text` exceeds `max_chars`, else None."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, got {max_chars}")
    return OVERLONG_PARAGRAPH if longest_paragraph_chars(text) > max_chars else None


def _looks_like_code_run(lines: list[str]) -> bool:
    run: list[str] = []
    for line in [*lines, ""]:
        code_like = bool(_CODE_LINE.search(line))
        if line.strip() and not _LIST_ITEM.match(line) and (code_like or _INDENTED.match(line)):
            run.append(line)
            continue
        if len(run) >= MIN_CODE_LINES and any(_CODE_LINE.search(r) for r in run):
            return True
        run = []
    return False


def code_block_in_reasoning(reasoning: str) -> str | None:
    """`"code_in_reasoning"` when `reasoning` holds a code block, else None."""
    if _has_fence(reasoning) and _FENCE_LINE.search(reasoning):
        return CODE_IN_REASONING
    if "$$" in reasoning or "\\[" in reasoning:
        reasoning = _DISPLAY_MATH.sub("\n", reasoning)
    lines = reasoning.splitlines()
    # A code run needs a line that looks like code; one pass over the joined
    # lines finds whether any does (it may also match across lines, which
    # only sends a text on to the exact line-by-line check).
    if not _CODE_LINE_ANYWHERE.search("\n" + "\n".join(lines)):
        return None
    return CODE_IN_REASONING if _looks_like_code_run(lines) else None


def repetition_score(text: str, n: int = 4) -> float:
    """Share in [0, 1] of `text`'s word n-grams that repeat an earlier one; 0.0 if none."""
    grams, repeats = ngram_repeats(text, n)
    return repeats / grams if grams else 0.0


def ngram_repeats(text: str, n: int = 4) -> tuple[int, int]:
    """`(n-grams, n-grams that repeat an earlier one)` over `text`'s lower-cased words.

    Words are `_TOKEN`'s: a CJK character alone, else a run of word
    characters. Counted in one compiled pass (`_kernels.ngram_repeats_kernel`);
    tests pin it to a count over `_TOKEN.findall`.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    lowered = text.lower()
    points = np.frombuffer(lowered.encode("utf-32-le", "surrogatepass"), np.uint32)
    grams, repeats = ngram_repeats_kernel(points, _TOKEN_CLASSES, n)
    if grams < 0:  # characters the table has not seen: classify them, then count
        _learn_tokens(set(lowered))
        grams, repeats = ngram_repeats_kernel(points, _TOKEN_CLASSES, n)
    return int(grams), int(repeats)


# What each code point is to `_TOKEN`, learned as characters arrive.
_TOKEN_CLASSES = np.full(0x110000, TOKEN_UNKNOWN, np.uint8)


def _learn_tokens(chars: set[str]) -> None:
    for ch in chars:
        if _TOKEN.fullmatch(ch) is None:
            _TOKEN_CLASSES[ord(ch)] = TOKEN_SEPARATOR
        elif _CJK_CHAR.fullmatch(ch):
            _TOKEN_CLASSES[ord(ch)] = TOKEN_SINGLE
        else:
            _TOKEN_CLASSES[ord(ch)] = TOKEN_WORD


def readability_issues(
    completion: str,
    target_language: str = "en",
    *,
    require_answer: bool = True,
    max_paragraph_chars: int = 2000,
    min_consistency: float = 0.9,
) -> list[str]:
    """Reason codes of every readability rule the completion's reasoning breaks.

    An empty list means readable. A completion that fails the R1 format check
    has no reasoning to judge and gets that check's reason alone.
    """
    fmt = check_r1_format(completion, require_answer=require_answer)
    if not fmt.ok or fmt.reasoning is None:
        return [fmt.reason]
    reasoning = fmt.reasoning
    checks = (
        detect_mixed_language(reasoning, target_language, min_consistency),
        overlong_paragraphs(reasoning, max_paragraph_chars),
        code_block_in_reasoning(reasoning),
    )
    return [reason for reason in checks if reason is not None]
