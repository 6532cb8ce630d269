"""The answer parser: trees, conventions, and the guards that keep it bounded."""

from __future__ import annotations

from fractions import Fraction

import pytest

from verifiers.math.parse import (
    MAX_ANSWER_CHARS,
    MAX_DEPTH,
    MAX_TOKENS,
    Alt,
    Const,
    Func,
    Interval,
    Matrix,
    Num,
    Op,
    ParseError,
    Rel,
    Seq,
    SetUnion,
    Sym,
    Text,
    TooComplex,
    parse,
)


def num(value: int | str) -> Num:
    return Num(Fraction(value), str(value), False)


HALF = Op("/", (num(1), num(2)))


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("42", num(42)),
        ("-3", Op("neg", (num(3),))),
        ("\\frac{1}{2}", HALF),
        ("\\frac12", HALF),
        ("1/2", HALF),
        ("2\\frac{1}{2}", Op("+", (num(2), HALF))),  # mixed number
        ("2\\frac{3}{2}", Op("*", (num(2), Op("/", (num(3), num(2)))))),  # improper: a product
        ("2x", Op("*", (num(2), Sym("x")))),
        ("x**2", Op("^", (Sym("x"), num(2)))),
        ("2^10", Op("^", (num(2), num(10)))),
        ("2^3^2", Op("^", (num(2), Op("^", (num(3), num(2)))))),
        ("-x^2", Op("neg", (Op("^", (Sym("x"), num(2))),))),
        ("x_1", Sym("x_1")),
        ("x_{12}", Sym("x_12")),
        ("\\alpha", Sym("alpha")),
        ("\\pi", Const("pi")),
        ("e", Const("e")),
        ("\\infty", Const("oo")),
        ("\\sqrt{2}", Func("root", (num(2), num(2)))),
        ("\\sqrt[3]{x}", Func("root", (Sym("x"), num(3)))),
        ("sqrt(2)", Func("root", (num(2), num(2)))),
        ("\\sin x", Func("sin", (Sym("x"),))),
        ("\\sin^{-1} x", Func("asin", (Sym("x"),))),
        ("\\sin^2 x", Op("^", (Func("sin", (Sym("x"),)), num(2)))),
        ("\\log_2 8", Func("log", (num(8), num(2)))),
        ("|x|", Func("abs", (Sym("x"),))),
        ("5!", Op("!", (num(5),))),
        ("\\binom{5}{2}", Func("binom", (num(5), num(2)))),
        ("\\lfloor x \\rfloor", Func("floor", (Sym("x"),))),
        ("(1, 2)", Seq("paren", (num(1), num(2)))),
        ("[1, 2]", Seq("bracket", (num(1), num(2)))),
        ("[1, 2)", Interval(num(1), num(2), True, False)),
        ("(1, 2]", Interval(num(1), num(2), False, True)),
        ("\\{1, 2\\}", Seq("set", (num(1), num(2)))),
        ("\\emptyset", Seq("set", ())),
        ("1, 2", Seq("list", (num(1), num(2)))),
        ("3 or 4", Alt("or", (num(3), num(4)))),
        ("x = 3", Rel(("=",), (Sym("x"), num(3)))),
        ("1 < x \\le 2", Rel(("<", "<="), (num(1), Sym("x"), num(2)))),
        (
            "[1, 2] \\cup [3, 4]",
            SetUnion((Seq("bracket", (num(1), num(2))), Seq("bracket", (num(3), num(4))))),
        ),
        (
            "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}",
            Matrix(((num(1), num(2)), (num(3), num(4)))),
        ),
        ("\\pm 3", Op("pm", (num(3),))),
        ("No Solution", Text("no solution")),
    ],
)
def test_trees(text: str, tree: object) -> None:
    assert parse(text) == tree


def test_decimals_keep_their_text() -> None:
    assert parse("3.140") == Num(Fraction("3.14"), "3.140", True)
    assert parse("1.5e-30") == Num(Fraction("1.5e-30"), "1.5e-30", True)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "__import__('os').system('true')",  # nothing is evaluated, and quotes are refused
        "lambda: 0",
        "x @ y",
        "\\unknowncommand{1}",
        "The value is 5",  # prose: a word in a math answer
        "(1, 2",
        "[1]2)",
        "\\frac{1}",
        "\\begin{cases} 1 \\end{cases}",
        "\\begin{pmatrix} 1 & 2 \\\\ 3 \\end{pmatrix}",
        "2 3",
    ],
)
def test_refused(text: str) -> None:
    with pytest.raises(ParseError):
        parse(text)


@pytest.mark.parametrize(
    "text",
    [
        "1" * (MAX_ANSWER_CHARS + 1),
        "+".join("1" * (MAX_TOKENS // 2 + 1)),
        "(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1),
        "-" * (MAX_DEPTH + 1) + "1",
        "5^{5^{5^{5^{5^5}}}}",  # five stacked powers
        "1e100000",
    ],
)
def test_guards(text: str) -> None:
    with pytest.raises(TooComplex):
        parse(text)


@pytest.mark.parametrize("text", ["2003^{2002^{2001}}", "\\frac{5^{5^{5^{5^5}}-4}-5}{16}"])
def test_towers_up_to_four_parse(text: str) -> None:
    # Their size is judged when they are evaluated (see test_pool.py).
    assert isinstance(parse(text), Op)
