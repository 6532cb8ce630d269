"""Comparison of a program's stdout with the expected output of a stdio test case.

The rules, in order:

- Line by line. Lines are split on "\\n"; trailing whitespace of every line
  (a "\\r" included) and trailing empty lines are ignored. Everything else
  counts: leading whitespace, the spacing between tokens, leading empty lines.
- Float tolerance. When a line differs, it is split into tokens and the
  whitespace between them; the whitespace must match exactly, and a token
  may differ only where the expected token is a decimal number written with
  a point or an exponent ("0.5", "1e-3") and the actual token is a number
  within `float_tol` of it, absolute for values up to 1 and relative above.
  An expected integer ("10") asks for exactly that text ("10.0" is wrong).
"""

from __future__ import annotations

import math
import re

DEFAULT_FLOAT_TOL = 1e-6
# Plain decimal numbers only: float() also accepts "1_000", "inf" and "nan".
NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
SPACE = re.compile(r"(\s+)")


def lines_of(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def tokens_match(actual: str, expected: str, float_tol: float) -> bool:
    if actual == expected:
        return True
    if not (NUMBER.fullmatch(expected) and NUMBER.fullmatch(actual)):
        return False
    if not any(c in expected for c in ".eE"):
        return False
    want, got = float(expected), float(actual)
    if not (math.isfinite(want) and math.isfinite(got)):
        return False
    return abs(got - want) <= float_tol * max(1.0, abs(want))


def line_matches(actual: str, expected: str, float_tol: float) -> bool:
    if actual == expected:
        return True
    # re.split with a capture group keeps the whitespace runs at odd positions.
    got, want = SPACE.split(actual), SPACE.split(expected)
    if len(got) != len(want):
        return False
    return all(
        g == w if i % 2 else tokens_match(g, w, float_tol)
        for i, (g, w) in enumerate(zip(got, want, strict=True))
    )


def first_difference(
    actual: str, expected: str, float_tol: float = DEFAULT_FLOAT_TOL
) -> str | None:
    """None when `actual` matches `expected`; otherwise where and how they first differ."""
    got, want = lines_of(actual), lines_of(expected)
    for number, (g, w) in enumerate(zip(got, want, strict=False), start=1):
        if not line_matches(g, w, float_tol):
            return f"line {number}: expected {_clip(w)!r}, got {_clip(g)!r}"
    if len(got) != len(want):
        return f"expected {len(want)} lines, got {len(got)}"
    return None


def outputs_match(actual: str, expected: str, float_tol: float = DEFAULT_FLOAT_TOL) -> bool:
    return first_difference(actual, expected, float_tol) is None


def _clip(text: str, width: int = 80) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
