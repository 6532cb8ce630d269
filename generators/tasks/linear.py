"""Linear equations and small linear systems with rational answers.

Difficulty sets the shape:

- d=1: one equation `ax + b = c` (a in +-2..9, b nonzero); gold is x's value,
  an integer or reduced fraction: `-7/3`.
- d=2: a 2x2 system, integer coefficients in -5..5; gold `(x, y) = (1/2, 3)`.
- d>=3: a 3x3 system, coefficients in -(d+2)..d+2; gold `(x, y, z) = (1, -2/3, 4)`.

Systems are redrawn until their determinant is nonzero and small (at most 12,
or 6*d for 3x3): the answers' denominators divide it, so they stay readable.

The worked solution is Gaussian elimination written as one line per step,
`<what was done>: <equation>[, <equation>].`; every equation after the colon is
a true statement about the solution, which is how the tests check them.
Coefficients are written `3x`, `-(5/2)y`, so the equations read as sympy reads
them with implicit multiplication.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from fractions import Fraction

from generators.tasks.base import Draft, FamilySource, fmt_number

NAME = "toy-linear"
VARIABLES = ("x", "y", "z")


def _expression(terms: Sequence[tuple[Fraction, str]]) -> str:
    """`3x - (1/2)y + 4` from (coefficient, name) pairs; an empty name is a constant."""
    parts: list[tuple[str, str]] = []
    for coef, name in terms:
        if coef == 0:
            continue
        size = abs(coef)
        if not name:
            body = fmt_number(size)
        elif size == 1:
            body = name
        elif size.denominator == 1:
            body = f"{size}{name}"
        else:
            body = f"({size}){name}"
        parts.append(("-" if coef < 0 else "+", body))
    if not parts:
        return "0"
    sign, body = parts[0]
    text = f"-{body}" if sign == "-" else body
    return text + "".join(f" {sign} {body}" for sign, body in parts[1:])


def _equation(row: Sequence[Fraction], names: Sequence[str]) -> str:
    """A row `[a, b, c]` of the augmented matrix as `ax + by = c`."""
    lhs = _expression(list(zip(row[:-1], names, strict=True)))
    return f"{lhs} = {fmt_number(row[-1])}"


def _in_brackets(value: Fraction | int) -> str:
    text = fmt_number(value)
    return text if value >= 0 and Fraction(value).denominator == 1 else f"({text})"


def _single(rng: random.Random) -> Draft:
    a = rng.choice([k for k in range(-9, 10) if abs(k) >= 2])
    b = rng.choice([k for k in range(-20, 21) if k != 0])
    c = rng.randint(-20, 20)
    lhs = _expression([(Fraction(a), "x"), (Fraction(b), "")])
    ax = _expression([(Fraction(a), "x")])
    intro = rng.choice(("Solve for x:", "Find x:", "What value of x solves this equation?"))
    rest = c - b
    if b > 0:
        move = f"Subtract {b} from both sides: {ax} = {c} - {b} = {rest}."
    else:
        move = f"Add {-b} to both sides: {ax} = {c} + {-b} = {rest}."
    x = Fraction(rest, a)
    quotient = f"{rest}/{_in_brackets(a)}"
    divide = f"Divide both sides by {a}: x = {quotient}"
    # 13/3 is already the answer; 12/3 still needs `= 4`.
    if quotient != fmt_number(x):
        divide += f" = {fmt_number(x)}"
    gold = fmt_number(x)
    return Draft(
        prompt=f"{intro}\n{lhs} = {c}",
        gold=gold,
        think=f"{move}\n{divide}.",
        answer=gold,
    )


def _determinant(matrix: list[list[int]]) -> int:
    """Laplace expansion along the first row; fine for the 2x2 and 3x3 drawn here."""
    if len(matrix) == 1:
        return matrix[0][0]
    return sum(
        (-1) ** j * matrix[0][j] * _determinant([row[:j] + row[j + 1 :] for row in matrix[1:]])
        for j in range(len(matrix))
    )


def _eliminate(
    rows: list[list[Fraction]], names: Sequence[str]
) -> tuple[list[str], list[Fraction]]:
    """Solve a nonsingular system by Gaussian elimination, writing one line per step."""
    n = len(rows)
    rows = [list(row) for row in rows]
    lines = []
    for k in range(n):
        # A nonzero pivot exists in column k because the determinant is nonzero.
        pivot = next(i for i in range(k, n) if rows[i][k] != 0)
        if pivot != k:
            rows[k], rows[pivot] = rows[pivot], rows[k]
            lines.append(f"Swap R{k + 1} and R{pivot + 1}.")
        for i in range(k + 1, n):
            factor = rows[i][k] / rows[k][k]
            if factor == 0:
                continue
            rows[i] = [a - factor * b for a, b in zip(rows[i], rows[k], strict=True)]
            label = _expression([(Fraction(1), f"R{i + 1}"), (-factor, f"R{k + 1}")])
            lines.append(f"{label}: {_equation(rows[i], names)}.")
    values = [Fraction(0)] * n
    for k in reversed(range(n)):
        later = [j for j in range(k + 1, n) if rows[k][j] != 0]
        known = sum((rows[k][j] * values[j] for j in later), Fraction(0))
        values[k] = (rows[k][n] - known) / rows[k][k]
        lhs = _expression([(rows[k][k], names[k]), (known, "")])
        equations = [f"{lhs} = {fmt_number(rows[k][n])}"]
        if lhs != names[k]:
            equations.append(f"{names[k]} = {fmt_number(values[k])}")
        if later:
            put = ", ".join(f"{names[j]} = {fmt_number(values[j])}" for j in later)
            label = f"Put {put} into R{k + 1}"
        else:
            label = f"From R{k + 1}"
        lines.append(f"{label}: {', '.join(equations)}.")
    return lines, values


def _system(rng: random.Random, difficulty: int) -> Draft:
    n = 2 if difficulty == 2 else 3
    bound = 5 if n == 2 else difficulty + 2
    max_det = 12 if n == 2 else 6 * difficulty
    names = VARIABLES[:n]
    while True:
        matrix = [[rng.randint(-bound, bound) for _ in range(n)] for _ in range(n)]
        if 0 < abs(_determinant(matrix)) <= max_det:
            break
    rhs = [rng.randint(-10 * difficulty, 10 * difficulty) for _ in range(n)]
    rows = [[Fraction(v) for v in row] + [Fraction(r)] for row, r in zip(matrix, rhs, strict=True)]
    lines, values = _eliminate(rows, names)
    tuple_names = f"({', '.join(names)})"
    gold = f"{tuple_names} = ({', '.join(fmt_number(v) for v in values)})"
    intro = rng.choice(
        (
            "Solve the system of equations:",
            "Solve these simultaneous equations:",
            f"Find {', '.join(names[:-1])} and {names[-1]} that satisfy all the equations:",
        )
    )
    form = f"({', '.join('abc'[:n])})"
    prompt = "\n".join(
        [
            intro,
            *(_equation(row, names) for row in rows),
            f"Give the answer as {tuple_names} = {form}.",
        ]
    )
    return Draft(prompt=prompt, gold=gold, think="\n".join(lines), answer=gold)


def build(rng: random.Random, difficulty: int) -> Draft:
    return _single(rng) if difficulty == 1 else _system(rng, difficulty)


SOURCE = FamilySource(name=NAME, domain="math", track="reasoning", build=build)
