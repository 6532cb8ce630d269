"""Normalisation: what is stripped and what is rewritten before parsing."""

from __future__ import annotations

import pytest

from verifiers.math.normalize import compact, normalize


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("42", "42"),
        ("$42$", "42"),
        ("\\(42\\)", "42"),
        ("\\[ 42 \\]", "42"),
        ("**42**", "42"),
        ("`42`", "42"),
        ("42.", "42"),
        ("42;", "42"),
        ("x**2 - 1", "x**2 - 1"),  # a power, not emphasis
        ("\\dfrac{1}{2}", "\\frac{1}{2}"),
        ("\\tfrac12", "\\frac12"),
        ("\\dbinom{5}{2}", "\\binom{5}{2}"),
        ("\\left( 1, 2 \\right)", "( 1, 2 )"),
        ("\\left. x \\right|", "x |"),
        ("\\bigl(x\\bigr)", "(x)"),
        ("5\\text{ cm}", "5"),
        ("5 \\mathrm{cm}^2", "5"),
        ("12 apples", "12"),
        ("7 km/h", "7"),
        ("2 x", "2 x"),  # one letter is a variable, not a unit
        ("3 \\pi", "3 \\pi"),
        ("30^\\circ", "30"),
        ("30^{\\circ}", "30"),
        ("30\u00b0", "30"),
        ("\\$5", "5"),
        ("\u20ac5", "5"),
        ("25\\%", "25"),
        ("25%", "25"),
        ("1,000,000", "1000000"),
        ("1{,}234", "1234"),
        ("1\\,234", "1234"),
        ("1 000 000", "1000000"),
        ("1,234.5", "1234.5"),
        ("(0,100)", "(0,100)"),  # an interval, not a thousands separator
        ("1, 234", "1, 234"),  # a list
        ("\u22125", "-5"),
        ("\u221a2", "\\sqrt{2}"),
        ("\u221a23", "\\sqrt{23}"),
        ("x\u00b2", "x^2"),
        ("2 1/2", "(2+1/2)"),
        ("-2 1/2", "-(2+1/2)"),
        ("3 4/3", "3 4/3"),  # not a proper fraction: not a mixed number
        ("\\text{no solution}", "no solution"),
        ("3 \\text{ or } 4", "3 or 4"),
        ("\\displaystyle\\frac{1}{2}", "\\frac{1}{2}"),
        ("a\\!b", "a b"),
    ],
)
def test_normalize(raw: str, normal: str) -> None:
    assert normalize(raw) == normal


def test_compact_drops_white_space() -> None:
    assert compact("( 1, 2 )") == "(1,2)"
