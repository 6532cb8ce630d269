# ruff: noqa: RUF002, RUF003 -- the docs show the look-alike letters they are about
"""Which writing system the prose of a text is in, counted by Unicode script.

The text is first reduced to its prose: fenced and inline code, LaTeX math
(`$...$`, `$$...$$`, `\\(...\\)`, `\\[...\\]`), stray LaTeX commands and URLs
are removed. The rest is cut into words: a word is a run of letters of one
script (combining marks stay with their letter), except that every Han or kana
character is a word of its own, since Chinese and Japanese put no spaces
between words and one character is the nearest stand-in for one. Skipped as
notation rather than language: single-letter words in an alphabetic script
(the variables x, n, α), words touching a digit or underscore (x2, 3x, a_1),
common math function names (sin, log, max, ...), and letters Unicode marks as
mathematical, super/subscript, modifier or letterlike symbols (𝑥, ⁿ, ℝ).
Digits, punctuation (full-width included), symbols and emoji are not letters.

Fine-grained scripts are `latin`, `han`, `kana`, `hangul`, `cyrillic`,
`arabic`, `greek` and `other`; `script_shares` folds han, kana and hangul into
`cjk`.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter
from collections.abc import Iterator
from typing import Literal

Unit = Literal["word", "letter"]

FINE_SCRIPTS = ("latin", "han", "kana", "hangul", "cyrillic", "arabic", "greek", "other")
SCRIPTS = ("latin", "cjk", "cyrillic", "arabic", "greek", "other")
_COARSE = {"han": "cjk", "kana": "cjk", "hangul": "cjk"}

# Scripts with spaces between words, where a lone letter is almost always a
# variable name; a lone Han character is a real word.
_ALPHABETIC = frozenset({"latin", "cyrillic", "greek"})
# Scripts whose characters are each counted as one word.
_PER_CHARACTER = frozenset({"han", "kana"})

# Markers returned by `char_script` for characters that are not letters of a script.
_NOT_LETTER = ""
_MARK = "mark"

# Unicode name words that identify a script, checked in this order.
_NAME_KEYWORDS = (
    ("CJK", "han"),
    ("IDEOGRAPH", "han"),
    ("IDEOGRAPHIC", "han"),
    ("HIRAGANA", "kana"),
    ("KATAKANA", "kana"),
    ("HANGUL", "hangul"),
    ("LATIN", "latin"),
    ("CYRILLIC", "cyrillic"),
    ("ARABIC", "arabic"),
    ("GREEK", "greek"),
)

MATH_WORDS = frozenset(
    {
        "sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan",
        "sinh", "cosh", "tanh", "log", "ln", "lg", "exp", "lim", "sup", "inf",
        "max", "min", "argmax", "argmin", "gcd", "lcm", "mod", "det", "sqrt",
    }
)  # fmt: skip

# A math span stops at the first closer and may not contain its own opener, so
# an unclosed opener costs one scan to the next opener, not one to the end:
# a text full of unclosed `\(` stays linear.
_NON_PROSE = re.compile(
    r"""
    ^[ \t]*(?P<fence>`{3,}|~{3,})[^\n]*\n.*?(?:^[ \t]*(?P=fence)[ \t]*$|\Z)  # fenced block
    | \$\$.*?\$\$                       # display math
    | \\\[(?:(?!\\\[).)*?\\\]          # display math
    | \\\((?:(?!\\\().)*?\\\)          # inline math
    | \$[^$\n]+\$            # inline math
    | `[^`\n]+`              # inline code
    | \\[A-Za-z]+            # stray LaTeX command
    | https?://\S+           # URL
    """,
    re.VERBOSE | re.DOTALL | re.MULTILINE,
)


# Every span `_NON_PROSE` removes holds one of these; most prose holds none,
# and checking costs far less than running the pattern.
_NON_PROSE_MARKERS = ("`", "~", "$", "\\", "http")


def strip_non_prose(text: str) -> str:
    """`text` with code, math, LaTeX commands and URLs replaced by a space or newline."""
    if not any(marker in text for marker in _NON_PROSE_MARKERS):
        return text
    return _NON_PROSE.sub(lambda m: "\n" if "\n" in m.group() else " ", text)


@functools.lru_cache(maxsize=1 << 16)
def char_script(ch: str) -> str:
    """The fine script of a letter, `"mark"` for a combining mark, `""` otherwise.

    Mathematical and letterlike symbols, super/subscripts and modifier letters
    are `""`: they write notation, not a language.
    """
    if ch.isascii():
        return "latin" if ch.isalpha() else _NOT_LETTER
    category = unicodedata.category(ch)
    if category.startswith("M"):
        return _MARK
    if not category.startswith("L"):
        return _NOT_LETTER
    if 0x2100 <= ord(ch) <= 0x214F:  # Letterlike Symbols block: ℝ, ℏ, ℓ
        return _NOT_LETTER
    name = unicodedata.name(ch, "")
    if (
        name.startswith(("MATHEMATICAL", "MODIFIER LETTER"))
        or "SUPERSCRIPT" in name
        or "SUBSCRIPT" in name
    ):
        return _NOT_LETTER
    words = set(name.replace("-", " ").split())
    for keyword, script in _NAME_KEYWORDS:
        if keyword in words:
            return script
    return "other"


def _is_notation_neighbour(ch: str) -> bool:
    return ch == "_" or unicodedata.category(ch).startswith("N")


def _is_language_word(script: str, word: str, before: str, after: str) -> bool:
    if script not in _ALPHABETIC:
        return True
    if len(word) < 2 or word.lower() in MATH_WORDS:
        return False
    return not (_is_notation_neighbour(before) or _is_notation_neighbour(after))


def iter_words(text: str) -> Iterator[tuple[str, str]]:
    """`(fine script, word)` for each counted word of `text`, in order.

    `text` is taken as prose: call `strip_non_prose` first to drop code and math.
    """
    start = 0
    script = _NOT_LETTER
    n = len(text)
    i = 0
    while i <= n:
        ch = text[i] if i < n else " "
        current = char_script(ch)
        if current == _MARK and script:
            i += 1
            continue
        if (script and current != script) or script in _PER_CHARACTER:
            word = text[start:i]
            before = text[start - 1] if start > 0 else " "
            if _is_language_word(script, word, before, ch):
                yield script, word
            script = _NOT_LETTER
        if current and current != _MARK and not script:
            script, start = current, i
        i += 1


def script_counts(text: str, *, unit: Unit = "word") -> Counter[str]:
    """Counts of words (or letters) of `text`'s prose by fine script."""
    counts: Counter[str] = Counter()
    for script, word in iter_words(strip_non_prose(text)):
        if unit == "word":
            counts[script] += 1
        else:
            counts[script] += sum(char_script(ch) != _MARK for ch in word)
    return counts


def script_shares(text: str, *, unit: Unit = "letter") -> dict[str, float]:
    """Share of `text`'s prose letters (or words) in each of `SCRIPTS`.

    Every key is present; the values sum to 1.0, or are all 0.0 when the text
    has no counted letters (empty, only digits, math, code or emoji).
    """
    coarse: Counter[str] = Counter()
    for script, count in script_counts(text, unit=unit).items():
        coarse[_COARSE.get(script, script)] += count
    total = sum(coarse.values())
    return {s: (coarse[s] / total if total else 0.0) for s in SCRIPTS}
