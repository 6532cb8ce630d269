"""Algebraic simplification with symbolic answers: expand, collect, cancel.

Difficulty sets the shape; an expression is a sum (or difference) of terms:

- d=1: one product of monic binomials `(x + 2)*(x - 3)`, or two multiples
  `3*(x + 2) + 2*(x - 1)`.
- d=2: two terms, at least one a product `(2*x + 1)*(x - 3)` or a square `(x - 3)**2`.
- d=3: two terms, one a fraction that cancels: `(x**2 + 5*x + 6)/(x + 2)`.
- d>=4: d - 1 terms, one of them a triple product `(x + 1)*(x - 2)*(x + 3)`.

Gold: sympy's `sstr` of the expanded, cancelled expression, a polynomial in x
such as `2*x**2 - x + 5` (sympy computes it from the prompt's own text, so the
prompt and the gold cannot drift apart). It parses back with `sympy.sympify`.

The worked solution expands each term on its own line, `term = ... = result.`,
and then combines the results; every line is an identity, each side written in
sympy syntax, which is how the tests check it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import sympy
from sympy.parsing.sympy_parser import parse_expr

from generators.tasks.base import Draft, FamilySource

NAME = "toy-algebra"
_X = sympy.Symbol("x")

# A polynomial in x: power -> integer coefficient, zero coefficients left out.
Poly = dict[int, int]
# One monomial as written, before like terms are collected: (coefficient, power).
Monomial = tuple[int, int]


def _monomial(coef: int, power: int) -> str:
    if power == 0:
        return str(coef)
    x = "x" if power == 1 else f"x**{power}"
    if abs(coef) == 1:
        return x if coef == 1 else f"-{x}"
    return f"{coef}*{x}"


def _join(monomials: list[Monomial]) -> str:
    """`x**2 + 3*x - 2*x - 6`: monomials as written, signs folded into the joins."""
    if not monomials:
        return "0"
    text = _monomial(*monomials[0])
    for coef, power in monomials[1:]:
        text += f" {'-' if coef < 0 else '+'} {_monomial(abs(coef), power)}"
    return text


def _collect(monomials: list[Monomial]) -> Poly:
    poly: Poly = {}
    for coef, power in monomials:
        poly[power] = poly.get(power, 0) + coef
    return {p: c for p, c in poly.items() if c != 0}


def _terms(poly: Poly) -> list[Monomial]:
    return [(poly[p], p) for p in sorted(poly, reverse=True)]


def _text(poly: Poly) -> str:
    return _join(_terms(poly))


def _distribute(p: Poly, q: Poly) -> list[Monomial]:
    """Every product of a monomial of p with one of q, in reading order."""
    return [(a * b, i + j) for a, i in _terms(p) for b, j in _terms(q)]


def _chain(*sides: str) -> str:
    """`a = b = c`, dropping a side that repeats the one before it."""
    kept = [s for k, s in enumerate(sides) if k == 0 or s != sides[k - 1]]
    return " = ".join(kept)


@dataclass(frozen=True)
class _Term:
    text: str  # as written in the prompt; binds at least as tightly as *
    value: Poly
    lines: tuple[str, ...]  # worked steps, the last one ending in `= value`


def _binomial(rng: random.Random, lead: int) -> Poly:
    """`a*x + b` with 1 <= a <= lead and b a nonzero number in -9..9."""
    return {1: rng.randint(1, lead), 0: rng.choice([b for b in range(-9, 10) if b != 0])}


def _bracket(poly: Poly) -> str:
    return f"({_text(poly)})"


def _scale(rng: random.Random) -> _Term:
    k, inner = rng.randint(2, 9), _binomial(rng, 3)
    value = _collect([(k * c, p) for c, p in _terms(inner)])
    text = f"{k}*{_bracket(inner)}"
    return _Term(text, value, (f"{text} = {_text(value)}.",))


def _product(p: Poly, q: Poly) -> _Term:
    text = f"{_bracket(p)}*{_bracket(q)}"
    spread = _distribute(p, q)
    value = _collect(spread)
    return _Term(text, value, (f"{_chain(text, _join(spread), _text(value))}.",))


def _square(rng: random.Random) -> _Term:
    base = _binomial(rng, 3)
    text = f"{_bracket(base)}**2"
    spread = _distribute(base, base)
    value = _collect(spread)
    written = f"{_bracket(base)}*{_bracket(base)}"
    return _Term(text, value, (f"{_chain(text, written, _join(spread), _text(value))}.",))


def _cancel(rng: random.Random) -> _Term:
    """`(x**2 + 5*x + 6)/(x + 2)`: a product shown expanded, divided by one factor."""
    common, other = _binomial(rng, 1), _binomial(rng, 1)
    numerator = _collect(_distribute(common, other))
    text = f"({_text(numerator)})/{_bracket(common)}"
    factored = f"{_bracket(common)}*{_bracket(other)}/{_bracket(common)}"
    return _Term(text, other, (f"{_chain(text, factored, _text(other))}.",))


def _triple(rng: random.Random) -> _Term:
    a, b, c = (_binomial(rng, 1) for _ in range(3))
    first = _product(a, b)
    text = f"{first.text}*{_bracket(c)}"
    spread = _distribute(first.value, c)
    value = _collect(spread)
    second = _chain(text, f"{_bracket(first.value)}*{_bracket(c)}", _join(spread), _text(value))
    return _Term(text, value, (*first.lines, f"{second}."))


def _draw(rng: random.Random, kind: str) -> _Term:
    if kind == "scale":
        return _scale(rng)
    if kind == "monic":
        return _product(_binomial(rng, 1), _binomial(rng, 1))
    if kind == "product":
        return _product(_binomial(rng, 3), _binomial(rng, 3))
    if kind == "square":
        return _square(rng)
    if kind == "cancel":
        return _cancel(rng)
    return _triple(rng)


def _kinds(rng: random.Random, difficulty: int) -> list[str]:
    """Which terms an expression of this difficulty is made of."""
    if difficulty == 1:
        return rng.choice([["monic"], ["scale", "scale"]])
    if difficulty == 2:
        kinds = [rng.choice(["product", "square"]), rng.choice(["scale", "product", "square"])]
    elif difficulty == 3:
        kinds = ["cancel", rng.choice(["scale", "product", "square"])]
    else:
        pool = ["scale", "product", "square", "cancel"]
        kinds = ["triple"] + [rng.choice(pool) for _ in range(difficulty - 2)]
    rng.shuffle(kinds)
    return kinds


def _signed_sum(parts: list[tuple[int, str]]) -> str:
    """Join (sign, text) parts; a subtracted part keeps its brackets."""
    text = parts[0][1]
    for sign, part in parts[1:]:
        if sign < 0:
            text += f" - ({part})"
        elif part.startswith("-"):
            text += f" - {part[1:]}"
        else:
            text += f" + {part}"
    return text


def _simplify(expression: sympy.Expr) -> sympy.Expr:
    """Expand and cancel, term by term.

    `sympy.cancel` on the whole sum is exact but costs milliseconds per task;
    dividing each term's numerator by its denominator is five times faster. The
    terms here always divide exactly, and a remainder would mean a bug, so it
    is an error rather than something to carry along.
    """
    total = sympy.Integer(0)
    for term in sympy.Add.make_args(expression):
        numerator, denominator = sympy.fraction(term)
        quotient, remainder = sympy.div(sympy.expand(numerator), sympy.expand(denominator), _X)
        if remainder != 0:
            raise ArithmeticError(f"{term} does not simplify to a polynomial")
        total += quotient
    return sympy.expand(total)


_INTROS = (
    "Expand and simplify:",
    "Simplify this expression:",
    "Write as a simplified polynomial in x:",
)


def build(rng: random.Random, difficulty: int) -> Draft:
    while True:
        terms = [_draw(rng, kind) for kind in _kinds(rng, difficulty)]
        signs = [1] + [rng.choice((1, -1)) for _ in terms[1:]]
        total = _collect(
            [(s * c, p) for s, t in zip(signs, terms, strict=True) for c, p in _terms(t.value)]
        )
        # A sum that collapses to a constant (the terms cancel) teaches nothing; redraw it.
        if any(power > 0 for power in total):
            break
    expression = terms[0].text + "".join(
        f" {'+' if s > 0 else '-'} {t.text}" for s, t in zip(signs[1:], terms[1:], strict=True)
    )
    gold = sympy.sstr(_simplify(parse_expr(expression, local_dict={"x": _X})))
    lines = [line for t in terms for line in t.lines]
    if len(terms) == 1:
        # The expansion already ends in the result; only the sympy spelling may differ.
        if not lines[-1].endswith(f"= {gold}."):
            lines[-1] = f"{lines[-1][:-1]} = {gold}."
    else:
        parts = [(s, _text(t.value)) for s, t in zip(signs, terms, strict=True)]
        lines.append(f"Combine: {_signed_sum(parts)} = {gold}.")
    return Draft(
        prompt=f"{rng.choice(_INTROS)}\n{expression}",
        gold=gold,
        think="\n".join(lines),
        answer=gold,
    )


SOURCE = FamilySource(name=NAME, domain="math", track="reasoning", build=build)
