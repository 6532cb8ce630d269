"""Rewrite an answer string into the plain LaTeX-and-text subset the parser reads.

What goes: math delimiters (`$`, `\\(`, `\\[`), markdown emphasis, `\\left` /
`\\right` and the `\\big` family, spacing commands, `\\text{...}`-style wrappers
(their content stays), units written as words after a value (`5 cm`,
`12 dollars`), degrees, currency signs, percent signs, thousands separators
(`1,234`, `1{,}234`, `1\\,234`) and trailing punctuation.

What is rewritten: `\\dfrac`/`\\tfrac`/`\\cfrac` to `\\frac`, unicode minus,
times, roots, pi, infinity, comparison signs and superscripts to their LaTeX
spelling, and a plain mixed number `2 1/2` to `(2+1/2)`. A LaTeX mixed number
`2\\frac{1}{2}` is the parser's business, since it needs the tokens.

Every rule is a regular expression or a linear scan over a string whose length
the caller has already bounded.
"""

from __future__ import annotations

import re

from verifiers.math.extract import brace_pairs
from verifiers.math.parse import KNOWN_NAMES

_PLAIN_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:/\d+)?")

_UNICODE = {
    "\u2212": "-",  # minus sign
    "\u2013": "-",  # en dash, often typed for a minus
    "\u00d7": "\\times ",
    "\u22c5": "\\cdot ",
    "\u00b7": "\\cdot ",
    "\u00f7": "\\div ",
    "\u03c0": "\\pi ",
    "\u221e": "\\infty ",
    "\u2264": "\\le ",
    "\u2265": "\\ge ",
    "\u2260": "\\ne ",
    "\u00b1": "\\pm ",
    "\u2213": "\\mp ",
    "\u222a": "\\cup ",
    "\u2208": "\\in ",
    "\u2205": "\\emptyset ",
    "\u211d": "\\mathbb{R}",
    "\u00b2": "^2",
    "\u00b3": "^3",
    "\u00bd": "(1/2)",
    "\u00bc": "(1/4)",
    "\u00be": "(3/4)",
    "\u00b0": "",  # degree sign
    "\u00a0": " ",
    "\u2009": " ",
    "\u202f": " ",
    "\u20ac": "",  # euro
    "\u00a3": "",  # pound
    "\u00a5": "",  # yen
}
_UNICODE_RE = re.compile("|".join(map(re.escape, _UNICODE)))
# √23 is the root of 23, not (√2)·3 as the LaTeX rule for `\sqrt23` would read it.
_UNICODE_ROOT = re.compile(r"\u221a\s*(\d+(?:\.\d+)?|[A-Za-z])")

_MATH_DELIMITERS = re.compile(r"\\\$|\$|\\\(|\\\)|\\\[|\\\]")
# Markdown emphasis wraps the whole answer; `**` inside it is a power (x**2).
_WRAPPED_EMPHASIS = re.compile(r"(\*\*|__|\*|_|`)(.+)\1", re.DOTALL)
_DANGLING_EMPHASIS = re.compile(r"^(?:\*\*|__)(?!.*\*\*)|(?<!\*\*)(?:\*\*|__)$", re.DOTALL)
_SIZED_DOT = re.compile(r"\\(?:left|right)\s*\.")
_SIZING = re.compile(r"\\(?:left|right|[bB]igg?[lr]?)(?![A-Za-z])")
_RENAMES = (
    (re.compile(r"\\[dtc]frac(?![A-Za-z])"), r"\\frac"),
    (re.compile(r"\\[dt]binom(?![A-Za-z])"), r"\\binom"),
    (re.compile(r"\\(?:lvert|rvert|vert|mid)(?![A-Za-z])"), "|"),
    (re.compile(r"\\lbrace(?![A-Za-z])"), r"\\{"),
    (re.compile(r"\\rbrace(?![A-Za-z])"), r"\\}"),
    (re.compile(r"\\langle(?![A-Za-z])"), "("),
    (re.compile(r"\\rangle(?![A-Za-z])"), ")"),
    (re.compile(r"\\(?:displaystyle|textstyle|limits|nolimits)(?![A-Za-z])"), ""),
)
_WRAPPERS = re.compile(
    r"\\(?:text|textbf|textit|textrm|textnormal|textup|mathrm|mathbf|mathit|mathsf|"
    r"mbox|operatorname|boxed|fbox|hbox)\s*\{"
)
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ(?![A-Za-z])|\\degree(?![A-Za-z])")
_PERCENT = re.compile(r"\\?%")
_THOUSANDS_BRACE = re.compile(r"\{,\}")
_THOUSANDS_THIN = re.compile(r"(?<=\d)\\,(?=\d{3}(?!\d))")
# Only at bracket depth 0 (see _drop_thousands): "(0,100)" is an interval.
_THOUSANDS = re.compile(r"(?<![\d.,])\d{1,3}(?:,\d{3})+(?!\d|,\d)")
# "1 000 000": only when that is the whole answer, since "2 3" elsewhere may mean 2·3.
_THOUSANDS_SPACE = re.compile(r"[-+]?\d{1,3}(?: \d{3})+(?:\.\d+)?")
_SPACING = re.compile(r"(?<!\\)\\[,;:! ]|~|\\q?quad(?![A-Za-z])")
_WHITESPACE = re.compile(r"\s+")
_CURRENCY = re.compile(r"^(?:USD|EUR|GBP|Rs\.?)\s*|\s*(?:USD|EUR|GBP)$")
# Up to four words after a value: "5 cm", "12 dollars", "3 sq ft", "7 km/h", "4 m^2" aside.
# Each word starts after white space, so the pattern cannot backtrack into itself.
_UNITS = re.compile(r"(?:\s+[A-Za-z]{2,}(?:/[A-Za-z]+)?){1,4}(?:\s*\^\{?\d\}?)?$")
_VALUE_ENDS = frozenset("0123456789})]|")
_WORD = re.compile(r"[A-Za-z]+")
_TRAILING = re.compile(r"[\s.,;:]+$")
_MIXED = re.compile(r"([-+]?)(\d+)\s+(\d+)\s*/\s*(\d+)")
# Words that may trail a value without being a unit.
_NOT_UNITS = frozenset(KNOWN_NAMES) | {"or", "and", "either"}


def normalize(text: str) -> str:
    """The answer `text` in the parser's subset; see the module docstring for the rules."""
    text = text.strip()
    if _PLAIN_NUMBER.fullmatch(text):
        return text
    text = _UNICODE_ROOT.sub(r"\\sqrt{\1}", text)
    text = _UNICODE_RE.sub(lambda m: _UNICODE[m.group()], text)
    text = _MATH_DELIMITERS.sub(" ", text)
    text = _strip_emphasis(text.strip())
    text = _SIZED_DOT.sub("", text)
    text = _SIZING.sub("", text)
    for pattern, replacement in _RENAMES:
        text = pattern.sub(replacement, text)
    text = _unwrap(text)
    text = _DEGREES.sub("", text)
    text = _PERCENT.sub("", text)
    text = _THOUSANDS_BRACE.sub("", text)
    text = _THOUSANDS_THIN.sub("", text)
    text = _SPACING.sub(" ", text)
    text = _WHITESPACE.sub(" ", text).strip()
    text = _CURRENCY.sub("", text)
    text = _drop_thousands(text)
    if _THOUSANDS_SPACE.fullmatch(text):
        text = text.replace(" ", "")
    text = _TRAILING.sub("", text)
    text = _drop_units(text)
    mixed = _MIXED.fullmatch(text)
    if mixed and int(mixed.group(3)) < int(mixed.group(4)):
        sign, whole, num, den = mixed.groups()
        text = f"{sign}({whole}+{num}/{den})"
    return text


def compact(text: str) -> str:
    """`normalize`d text without white space: the key for "written the same" checks."""
    return _WHITESPACE.sub("", text)


def _strip_emphasis(text: str) -> str:
    # A few layers at most (***x*** is two); a bounded loop keeps a wall of
    # asterisks from costing a quadratic number of steps.
    for _ in range(3):
        wrapped = _WRAPPED_EMPHASIS.fullmatch(text)
        if wrapped is None:
            break
        text = wrapped.group(2).strip()
    # "**Answer: 5**" leaves "5**" after the phrase: a lone marker at one end.
    if text.count("**") == 1 or text.count("__") == 1:
        text = _DANGLING_EMPHASIS.sub("", text).strip()
    return text


def _unwrap(text: str) -> str:
    """Replace `\\text{...}` and its kin by their content, nested ones included, in one pass."""
    matches = list(_WRAPPERS.finditer(text))
    if not matches:
        return text
    pairs = brace_pairs(text)
    chars = list(text)
    for match in matches:
        open_at = match.end() - 1
        close_at = pairs.get(open_at)
        # Unbalanced: only the command name goes, and the parser rejects the rest.
        end = match.end() if close_at is not None else open_at
        chars[match.start() : end] = [" "] * (end - match.start())
        if close_at is not None:
            chars[close_at] = " "
    return "".join(chars)


def _drop_thousands(text: str) -> str:
    if "," not in text:
        return text
    out = []
    last = 0
    for match in _THOUSANDS.finditer(text):
        prefix = text[: match.start()]
        depth = sum(prefix.count(c) for c in "([{") - sum(prefix.count(c) for c in ")]}")
        if depth == 0:
            out.append(text[last : match.start()])
            out.append(match.group().replace(",", ""))
            last = match.end()
    out.append(text[last:])
    return "".join(out)


def _drop_units(text: str) -> str:
    match = _UNITS.search(text)
    if match is None or match.start() == 0 or text[match.start() - 1] not in _VALUE_ENDS:
        return text
    words = _WORD.findall(match.group())
    if any(w.lower() in _NOT_UNITS for w in words):
        return text
    return text[: match.start()].strip()
