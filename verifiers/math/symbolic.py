"""The sympy backend: scalars the exact backend cannot decide (pi, roots, trig, logs).

Imported only inside worker processes (and by tests): its work is not bounded
by guards alone (simplify and evalf can take as long as they like), so the
parent's deadline is what bounds it. The guards here stop the cases that would
otherwise exhaust memory before any deadline could matter: integer powers
whose result would exceed the size budget (`2003^{2002^{2001}}`), huge
exponents on non-numeric bases, factorials and binomials of huge numbers.

Order, per pair of scalars:

1. the exact backend (rational numbers and rational functions);
2. constants: the difference evaluated to 50 digits. A decimal gold uses its
   stated precision, a decimal answer a relative 1e-9; otherwise a difference
   above 1e-30 of the values' size is a mismatch (relative, so 1/2^99 is not
   1/2^98). Agreement is confirmed by `simplify(a - b) == 0` when the
   expression is small enough (`match_symbolic`), else reported as
   `match_numeric`;
3. free symbols: evaluation at random rational points to 30 digits (one
   disagreement is a mismatch), then `simplify(a - b) == 0` as above.

A numeric disagreement settles a pair before simplify is tried: it is much
cheaper, and 50 digits leave no doubt that the values differ.
"""

from __future__ import annotations

import math
import random
from fractions import Fraction

import sympy

from verifiers.math.compare import (
    ExactBackend,
    NeedsSympy,
    SideTooComplex,
    SideUndefined,
    decimal_tolerance,
    has_decimal,
)
from verifiers.math.parse import Const, Func, Node, Num, Op, Sym
from verifiers.math.verdict import MATCH_NUMERIC, MATCH_SYMBOLIC, MISMATCH

# Largest integer exponent allowed on a base that is not a plain number:
# sympy may expand (x + 1)^n or evaluate sqrt(2)^n into an n-bit integer.
MAX_SYMBOLIC_EXPONENT = 10_000
MAX_FACTORIAL = 5000
# simplify() is tried only on differences with at most this many operations.
SIMPLIFY_MAX_OPS = 80
CONSTANT_DIGITS = 50
POINT_DIGITS = 30
CONSTANT_REL_TOL = sympy.Rational(1, 10**30)
POINT_REL_TOL = sympy.Rational(1, 10**12)
DECIMAL_REL_TOL = sympy.Rational(1, 10**9)
POINTS = 5
MIN_POINTS = 3

_CONSTANTS = {"pi": sympy.pi, "e": sympy.E, "i": sympy.I, "oo": sympy.oo}
_FUNCTIONS = {
    "sin": sympy.sin,
    "cos": sympy.cos,
    "tan": sympy.tan,
    "cot": sympy.cot,
    "sec": sympy.sec,
    "csc": sympy.csc,
    "asin": sympy.asin,
    "acos": sympy.acos,
    "atan": sympy.atan,
    "sinh": sympy.sinh,
    "cosh": sympy.cosh,
    "tanh": sympy.tanh,
    "exp": sympy.exp,
    "abs": sympy.Abs,
    "floor": sympy.floor,
    "ceil": sympy.ceiling,
}


class SympyBackend:
    """Exact first, then sympy; see the module docstring for the order."""

    def __init__(self, budget_bits: int) -> None:
        self.exact = ExactBackend(budget_bits, final=True)
        self.budget = budget_bits

    # conversion

    def to_sympy(self, node: Node, side: str) -> sympy.Expr:
        expr = self._convert(node, side)
        if expr.has(sympy.zoo, sympy.nan):
            raise SideUndefined(side, "undefined value")
        return expr

    def _convert(self, node: Node, side: str) -> sympy.Expr:
        if isinstance(node, Num):
            return sympy.Rational(node.value.numerator, node.value.denominator)
        if isinstance(node, Sym):
            return sympy.Symbol(node.name)
        if isinstance(node, Const):
            return _CONSTANTS[node.name]
        if isinstance(node, Op):
            args = [self._convert(a, side) for a in node.args]
            if node.op == "+":
                return sympy.Add(*args)
            if node.op == "*":
                return sympy.Mul(*args)
            if node.op == "neg":
                return -args[0]
            if node.op == "/":
                return args[0] / args[1]
            if node.op == "^":
                return self._power(args[0], args[1], side)
            if node.op == "!":
                if args[0].is_Integer and args[0] > MAX_FACTORIAL:
                    raise SideTooComplex(side, "factorial of a huge number")
                return sympy.factorial(args[0])
        if isinstance(node, Func):
            return self._function(node.name, [self._convert(a, side) for a in node.args], side)
        raise SideUndefined(side, f"{type(node).__name__} inside arithmetic")

    def _power(self, base: sympy.Expr, exponent: sympy.Expr, side: str) -> sympy.Expr:
        if exponent.is_Integer and abs(int(exponent)) > MAX_SYMBOLIC_EXPONENT:
            if not base.is_Rational:
                raise SideTooComplex(side, "a huge power")
            size = max(abs(base.p), abs(base.q))
            if size > 1 and abs(int(exponent)) * size.bit_length() > self.budget:
                raise SideTooComplex(side, "a power over the size budget")
        if base.is_Rational and exponent.is_Rational and not exponent.is_Integer:
            size = max(abs(base.p), abs(base.q))
            if size > 1 and abs(exponent.p) * size.bit_length() > self.budget * exponent.q:
                raise SideTooComplex(side, "a power over the size budget")
        return sympy.Pow(base, exponent)

    def _function(self, name: str, args: list[sympy.Expr], side: str) -> sympy.Expr:
        if name in _FUNCTIONS:
            return _FUNCTIONS[name](args[0])
        if name == "log":
            return sympy.log(args[0]) if len(args) == 1 else sympy.log(args[0], args[1])
        if name == "root":
            x, k = args
            # The real cube root of -8 is -2, as an answer means it (sympy's
            # principal root would be complex).
            if k.is_Integer and int(k) % 2 == 1 and x.is_number and x.is_negative:
                return -sympy.root(-x, k)
            return sympy.sqrt(x) if k == 2 else sympy.root(x, k)
        if name == "binom":
            if args[0].is_Integer and args[0] > self.budget:
                raise SideTooComplex(side, "binomial of a huge number")
            return sympy.binomial(args[0], args[1])
        if name == "max":
            return sympy.Max(*args)
        if name == "min":
            return sympy.Min(*args)
        raise SideUndefined(side, f"unknown function {name}")

    # comparison

    def scalar(self, gold: Node, pred: Node) -> str:
        try:
            return self.exact.scalar(gold, pred)
        except NeedsSympy:
            pass
        g = self.to_sympy(gold, "gold")
        p = self.to_sympy(pred, "completion")
        if g == p:
            return MATCH_SYMBOLIC
        if g.has(sympy.oo, -sympy.oo) or p.has(sympy.oo, -sympy.oo):
            return MISMATCH
        if not (g.free_symbols or p.free_symbols):
            return self._constants(g, p, decimal_tolerance(gold), has_decimal(pred))
        return self._functions(g, p)

    def _constants(
        self, g: sympy.Expr, p: sympy.Expr, tolerance: Fraction | None, pred_decimal: bool
    ) -> str:
        size = abs(_numeric(g, "gold"))
        pred_size = abs(_numeric(p, "completion"))
        diff = abs(_numeric(g - p, "completion"))
        if not (diff.is_number and size.is_number) or diff.has(sympy.nan):
            return MISMATCH
        if tolerance is not None:
            ok = diff <= sympy.Rational(tolerance.numerator, tolerance.denominator)
            return MATCH_NUMERIC if ok else MISMATCH
        if pred_decimal:
            return MATCH_NUMERIC if diff <= DECIMAL_REL_TOL * size else MISMATCH
        scale = max(size, pred_size)
        if scale == 0 or diff > CONSTANT_REL_TOL * scale:
            return MISMATCH if scale != 0 else MATCH_NUMERIC
        return MATCH_SYMBOLIC if _simplifies_to_zero(g - p) else MATCH_NUMERIC

    def _functions(self, g: sympy.Expr, p: sympy.Expr) -> str:
        agreed = 0
        for subs in _points(g.free_symbols | p.free_symbols):
            same = _agree_at(g, p, subs)
            if same is None:
                continue
            if not same:
                return MISMATCH
            agreed += 1
            if agreed == POINTS:
                break
        if _simplifies_to_zero(g - p):
            return MATCH_SYMBOLIC
        return MATCH_NUMERIC if agreed >= MIN_POINTS else MISMATCH

    def proportional(self, gold: Node, pred: Node, positive: bool) -> bool:
        try:
            return self.exact.proportional(gold, pred, positive)
        except NeedsSympy:
            pass
        g = self.to_sympy(gold, "gold")
        p = self.to_sympy(pred, "completion")
        symbols = g.free_symbols | p.free_symbols
        ratios = []
        for subs in _points(symbols) if symbols else [{}]:
            gv, pv = _value_at(g, subs), _value_at(p, subs)
            if gv is None or pv is None:
                continue
            if gv == 0:
                if pv != 0:
                    return False
                continue
            ratios.append(pv / gv)
            if len(ratios) == POINTS:
                break
        if not ratios or (symbols and len(ratios) < MIN_POINTS):
            return False
        first = ratios[0]
        if abs(first) < 1e-12 or any(abs(r - first) > 1e-9 * abs(first) for r in ratios):
            return False
        return not positive or (first.real > 0 and abs(first.imag) < 1e-12)


def _numeric(expr: sympy.Expr, side: str) -> sympy.Expr:
    """`expr` to CONSTANT_DIGITS digits; a value mpmath cannot hold is too complex."""
    try:
        return sympy.N(expr, CONSTANT_DIGITS)
    except (OverflowError, ValueError, RecursionError) as error:
        raise SideTooComplex(side, f"cannot evaluate: {error}") from None


def _points(symbols: set[sympy.Basic]) -> list[dict[sympy.Basic, sympy.Rational]]:
    rng = random.Random(0x5EED)
    ordered = sorted(symbols, key=str)
    return [
        {s: sympy.Rational(rng.randint(-40, 40), rng.randint(1, 9)) for s in ordered}
        for _ in range(3 * POINTS)
    ]


def _value_at(expr: sympy.Expr, subs: dict[sympy.Basic, sympy.Rational]) -> complex | None:
    try:
        value = expr.evalf(POINT_DIGITS, subs=subs)
    except (OverflowError, ValueError, ZeroDivisionError):
        return None
    if not value.is_number or value.has(sympy.nan, sympy.zoo, sympy.oo, -sympy.oo):
        return None
    try:
        result = complex(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result.real) and math.isfinite(result.imag) else None


def _agree_at(g: sympy.Expr, p: sympy.Expr, subs: dict[sympy.Basic, sympy.Rational]) -> bool | None:
    """Whether g and p agree at `subs` to POINT_REL_TOL; None where either is undefined."""
    try:
        gv = g.evalf(POINT_DIGITS, subs=subs)
        pv = p.evalf(POINT_DIGITS, subs=subs)
    except (OverflowError, ValueError, ZeroDivisionError):
        return None
    for v in (gv, pv):
        if not v.is_number or v.has(sympy.nan, sympy.zoo, sympy.oo, -sympy.oo):
            return None
    diff = abs(gv - pv)
    scale = max(abs(gv), abs(pv))
    return bool(scale == 0 or diff <= POINT_REL_TOL * scale)


def _simplifies_to_zero(expr: sympy.Expr) -> bool:
    if sympy.count_ops(expr) > SIMPLIFY_MAX_OPS:
        return False
    return bool(sympy.simplify(expr) == 0)
