"""Compare a gold tree with a completion's tree.

Two layers:

- `Comparer` knows the typed structures: ordered tuples, unordered sets and
  solution lists, intervals with their open/closed ends, unions, matrices,
  named tuples (`(x, y) = (1, 2)` or `x = 1, y = 2`), assignments (`x = 3`
  compares as 3), one-variable inequalities (as intervals), equations (equal
  up to a non-zero multiple; inequalities up to a positive one) and hedges.
  It hands every scalar to a backend.
- A backend decides scalars. `ExactBackend` (this module) works on Python
  `Fraction`s and never imports sympy: rational numbers are compared exactly,
  decimals with a tolerance tied to the precision the gold states, and
  rational functions of free symbols by exact evaluation at random integer
  points (Schwartz-Zippel: two different rational functions of degree at most
  d agree at a random point of a range of size N with probability at most
  d/N; four points of a range of two million make a false match vanishingly
  rare). Whatever is not rational (pi, roots that are not exact, trig, logs)
  raises `NeedsSympy`, and `symbolic.SympyBackend` takes over in a worker.

Tolerances:

- gold written as a decimal (`3.14`, `2.50`, `1.5e-30`, `1.5 \\times 10^{-30}`):
  a completion is right within half a unit of the gold's last stated digit,
  so 3.1416 matches 3.14 and 3.1 does not;
- gold exact, completion a decimal: relative 1e-9, so 0.5 matches 1/2 and
  0.333 does not match 1/3;
- both exact: equality. Nothing is ever rounded to zero or compared with an
  absolute epsilon, so 1/2^99 is not 1/2^98.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

from verifiers.math.parse import (
    INFINITY,
    NEG_INFINITY,
    Alt,
    Func,
    Interval,
    Matrix,
    Node,
    Num,
    Op,
    Rel,
    Seq,
    SetUnion,
    Sym,
    Text,
    TooComplex,
    children,
    free_symbols,
)
from verifiers.math.verdict import (
    HEDGED,
    MATCH_EXACT,
    MATCH_NUMERIC,
    MATCH_STRUCTURE,
    MATCH_SYMBOLIC,
    MISMATCH,
)

REL_TOL = Fraction(1, 10**9)
MAX_PM_VARIANTS = 8
MAX_FACTORIAL = 5000
MAX_ROOT_INDEX = 64
# Items per side of an unordered comparison; each pair may be compared.
MAX_COLLECTION = 64
IDENTITY_POINTS = 4
POINT_RANGE = 10**6


class NeedsSympy(Exception):
    """The exact backend cannot decide this pair; the symbolic backend must."""


class SideError(Exception):
    """Something about one side ("gold" or "completion") ends the check."""

    def __init__(self, side: str, detail: str) -> None:
        super().__init__(f"{side}: {detail}")
        self.side = side


class SideTooComplex(SideError):
    """A number on this side is over the size budget."""


class SideUndefined(SideError):
    """This side divides by zero or is otherwise undefined."""


class Backend(Protocol):
    def scalar(self, gold: Node, pred: Node) -> str:
        """A MATCH_* reason or MISMATCH for two scalar expressions."""
        ...

    def proportional(self, gold: Node, pred: Node, positive: bool) -> bool:
        """Whether pred == c * gold for a constant c != 0 (c > 0 when `positive`)."""
        ...


# --- exact evaluation ----------------------------------------------------------


class _NotRational(Exception):
    pass


class _TooBig(Exception):
    pass


def _bits(x: Fraction) -> int:
    return max(x.numerator.bit_length(), x.denominator.bit_length())


def _iroot(n: int, k: int) -> int:
    """floor(n ** (1/k)) for n >= 0, by Newton's method on integers."""
    if n < 2:
        return n
    x = 1 << -(-n.bit_length() // k)
    while True:
        y = ((k - 1) * x + n // x ** (k - 1)) // k
        if y >= x:
            return x
        x = y


def _exact_root(x: Fraction, k: int) -> Fraction | None:
    num, den = _iroot(x.numerator, k), _iroot(x.denominator, k)
    if num**k == x.numerator and den**k == x.denominator:
        return Fraction(num, den)
    return None


class Evaluator:
    """Evaluates a tree to a Fraction, refusing anything not rational or over `budget` bits.

    `max_steps` bounds the node visits of one check (None: no bound); with it,
    the fast path's cost has a ceiling even for big sets of big expressions,
    whose pairwise comparison is quadratic.
    """

    def __init__(self, budget: int, max_steps: int | None) -> None:
        self.budget = budget
        self.max_steps = max_steps
        self.steps = 0

    def __call__(self, node: Node, env: Mapping[str, Fraction]) -> Fraction:
        return self._ev(node, env)

    def _check(self, x: Fraction) -> Fraction:
        if _bits(x) > self.budget:
            raise _TooBig
        return x

    def _ev(self, node: Node, env: Mapping[str, Fraction]) -> Fraction:
        self.steps += 1
        if self.max_steps is not None and self.steps > self.max_steps:
            raise _TooBig
        if isinstance(node, Num):
            return self._check(node.value)
        if isinstance(node, Sym):
            return env[node.name]
        if isinstance(node, Op):
            return self._op(node, env)
        if isinstance(node, Func):
            return self._func(node, env)
        raise _NotRational

    def _op(self, node: Op, env: Mapping[str, Fraction]) -> Fraction:
        op, args = node.op, node.args
        if op == "+":
            total = Fraction(0)
            for a in args:
                total = self._check(total + self._ev(a, env))
            return total
        if op == "*":
            product = Fraction(1)
            for a in args:
                product = self._check(product * self._ev(a, env))
            return product
        if op == "neg":
            return -self._ev(args[0], env)
        if op == "/":
            return self._check(self._ev(args[0], env) / self._ev(args[1], env))
        if op == "^":
            return self._power(self._ev(args[0], env), self._ev(args[1], env))
        if op == "!":
            n = self._ev(args[0], env)
            if n.denominator != 1 or n < 0:
                raise _NotRational
            if n > MAX_FACTORIAL:
                raise _TooBig
            return self._check(Fraction(math.factorial(int(n))))
        raise _NotRational

    def _power(self, base: Fraction, exponent: Fraction) -> Fraction:
        if exponent.denominator != 1:
            if base < 0 or exponent.denominator > MAX_ROOT_INDEX:
                raise _NotRational
            root = _exact_root(base, exponent.denominator)
            if root is None:
                raise _NotRational
            base, exponent = root, Fraction(exponent.numerator)
        k = exponent.numerator
        if base == 0:
            if k < 0:
                raise ZeroDivisionError("0 to a negative power")
            return Fraction(0 if k > 0 else 1)
        if abs(base) == 1:
            return base ** (k % 2) if base < 0 else base
        # Estimate first: 2003^(2002^2001) must be refused, not computed.
        if abs(k) * _bits(base) > self.budget:
            raise _TooBig
        return base**k

    def _func(self, node: Func, env: Mapping[str, Fraction]) -> Fraction:
        name, args = node.name, node.args
        # Piecewise functions are not rational functions: the identity test
        # at random points would be unsound for them, so symbols go to sympy.
        if name in ("abs", "floor", "ceil", "max", "min", "root", "binom") and any(
            free_symbols(a) for a in args
        ):
            raise _NotRational
        values = [self._ev(a, env) for a in args]
        if name == "abs":
            return abs(values[0])
        if name == "floor":
            return Fraction(math.floor(values[0]))
        if name == "ceil":
            return Fraction(math.ceil(values[0]))
        if name == "max":
            return max(values)
        if name == "min":
            return min(values)
        if name == "root":
            x, k = values
            if k.denominator != 1 or not 1 <= k <= MAX_ROOT_INDEX:
                raise _NotRational
            if x < 0 and k.numerator % 2 == 1:
                root = _exact_root(-x, k.numerator)
                if root is None:
                    raise _NotRational
                return -root
            return self._power(x, Fraction(1, k.numerator))
        if name == "binom":
            n, k = values
            if n.denominator != 1 or k.denominator != 1 or n < 0:
                raise _NotRational
            if n > self.budget:
                raise _TooBig
            return Fraction(math.comb(int(n), int(k)) if 0 <= k <= n else 0)
        raise _NotRational


def decimal_tolerance(node: Node) -> Fraction | None:
    """Half a unit in the last digit a decimal gold states; None for anything else."""
    if isinstance(node, Op) and node.op == "neg":
        return decimal_tolerance(node.args[0])
    if isinstance(node, Num):
        return _half_ulp(node.text) if node.decimal else None
    # 1.5 \times 10^{-30}
    if isinstance(node, Op) and node.op == "*" and len(node.args) == 2:
        mantissa, scale = node.args
        if (
            isinstance(mantissa, Num)
            and isinstance(scale, Op)
            and scale.op == "^"
            and scale.args[0] == Num(Fraction(10), "10", False)
        ):
            exponent = scale.args[1]
            sign = 1
            if isinstance(exponent, Op) and exponent.op == "neg":
                exponent, sign = exponent.args[0], -1
            if isinstance(exponent, Num) and not exponent.decimal:
                return _half_ulp(mantissa.text) * Fraction(10) ** (sign * int(exponent.value))
    return None


def _half_ulp(text: str) -> Fraction:
    mantissa, _, exponent = text.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    return Fraction(1, 2) * Fraction(10) ** (int(exponent or 0) - decimals)


def has_decimal(node: Node) -> bool:
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, Num) and item.decimal:
            return True
        stack.extend(children(item))
    return False


def numeric_reason(
    gold: Fraction, pred: Fraction, tolerance: Fraction | None, pred_decimal: bool
) -> str:
    if gold == pred:
        return MATCH_EXACT
    if tolerance is not None and abs(gold - pred) <= tolerance:
        return MATCH_NUMERIC
    if pred_decimal and gold != 0 and abs(gold - pred) <= REL_TOL * abs(gold):
        return MATCH_NUMERIC
    return MISMATCH


def identity_points(names: list[str], count: int) -> list[dict[str, Fraction]]:
    """Deterministic random integer points, so that a check gives the same verdict every run."""
    rng = random.Random(0x5EED)
    return [
        {name: Fraction(rng.randint(-POINT_RANGE, POINT_RANGE)) for name in names}
        for _ in range(count)
    ]


class ExactBackend:
    """Scalars as Fractions; raises NeedsSympy for what is not rational.

    `final` says whether a number over the budget is final (the worker's
    backend: too complex) or only means "ask the worker" (the parent's fast
    path, which keeps a small budget and a step limit so that it stays quick).
    """

    def __init__(self, budget_bits: int, *, final: bool, max_steps: int | None = None) -> None:
        self.evaluate = Evaluator(budget_bits, max_steps)
        self.final = final

    def value(self, node: Node, env: Mapping[str, Fraction], side: str) -> Fraction:
        try:
            return self.evaluate(node, env)
        except _NotRational:
            raise NeedsSympy from None
        except _TooBig:
            if self.final:
                raise SideTooComplex(side, "a number over the size budget") from None
            raise NeedsSympy from None

    def scalar(self, gold: Node, pred: Node) -> str:
        names = sorted(free_symbols(gold) | free_symbols(pred))
        if not names:
            g = self._constant(gold, "gold")
            p = self._constant(pred, "completion")
            return numeric_reason(g, p, decimal_tolerance(gold), has_decimal(pred))
        agreed = 0
        for env in identity_points(names, 3 * IDENTITY_POINTS):
            try:
                g = self.value(gold, env, "gold")
                p = self.value(pred, env, "completion")
            except ZeroDivisionError:
                continue
            if g != p:
                return MISMATCH
            agreed += 1
            if agreed == IDENTITY_POINTS:
                return MATCH_SYMBOLIC
        raise NeedsSympy

    def _constant(self, node: Node, side: str) -> Fraction:
        try:
            return self.value(node, {}, side)
        except ZeroDivisionError:
            raise SideUndefined(side, "division by zero") from None

    def proportional(self, gold: Node, pred: Node, positive: bool) -> bool:
        names = sorted(free_symbols(gold) | free_symbols(pred))
        ratio: Fraction | None = None
        agreed = 0
        for env in identity_points(names, 3 * IDENTITY_POINTS) if names else [{}]:
            try:
                g = self.value(gold, env, "gold")
                p = self.value(pred, env, "completion")
            except ZeroDivisionError:
                continue
            if g == 0:
                if p != 0:
                    return False
                continue
            r = p / g
            if r == 0 or (ratio is not None and r != ratio):
                return False
            ratio = r
            agreed += 1
            if agreed == IDENTITY_POINTS:
                break
        if ratio is None or (names and agreed < IDENTITY_POINTS):
            raise NeedsSympy
        return ratio > 0 or not positive


# --- structures ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Named:
    """A tuple whose entries carry names: `(x, y) = (1, 2)` or `x = 1, y = 2`."""

    names: tuple[str, ...]
    values: tuple[Node, ...]


Value = Node | Named
_STRUCTURES = (Seq, Interval, SetUnion, Matrix, Named, Text, Alt)
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "=": "=", "!=": "!="}


def expand_pm(node: Node) -> list[Node]:
    """Every reading of the ± signs in `node`: `1 \\pm \\sqrt 2` is [1 + √2, 1 - √2]."""
    signs = _count_pm(node)
    if signs == 0:
        return [node]
    # Counted before expanding: k signs make 2^k readings.
    if 2**signs > MAX_PM_VARIANTS:
        raise TooComplex(f"more than {MAX_PM_VARIANTS} readings of the ± signs")
    return _expand(node)


def _count_pm(node: Node) -> int:
    count = 0
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, Op) and item.op == "pm":
            count += 1
        stack.extend(children(item))
    return count


def _expand(node: Node) -> list[Node]:
    if isinstance(node, Op) and node.op == "pm":
        if len(node.args) == 1:
            return [v for a in _expand(node.args[0]) for v in (a, Op("neg", (a,)))]
        return [
            v
            for a in _expand(node.args[0])
            for b in _expand(node.args[1])
            for v in (Op("+", (a, b)), Op("+", (a, Op("neg", (b,)))))
        ]
    variants: list[list[Node]] = [[]]
    for child in children(node):
        variants = [[*v, o] for v in variants for o in _expand(child)]
    return [_rebuild(node, tuple(v)) for v in variants]


def _rebuild(node: Node, kids: tuple[Node, ...]) -> Node:
    if isinstance(node, Op):
        return Op(node.op, kids)
    if isinstance(node, Func):
        return Func(node.name, kids)
    if isinstance(node, Seq):
        return Seq(node.kind, kids)
    if isinstance(node, SetUnion):
        return SetUnion(kids)
    if isinstance(node, Alt):
        return Alt(node.word, kids)
    if isinstance(node, Rel):
        return Rel(node.ops, kids)
    if isinstance(node, Interval):
        return Interval(kids[0], kids[1], node.lo_closed, node.hi_closed)
    if isinstance(node, Matrix):
        width = len(node.rows[0])
        return Matrix(tuple(kids[i : i + width] for i in range(0, len(kids), width)))
    return node


def _assignment(node: Node) -> tuple[str, Node] | None:
    """`x = 3` (or `3 = x`, `x \\in [1, 2]`) as ("x", 3); None for anything else."""
    if not isinstance(node, Rel) or len(node.ops) != 1 or node.ops[0] not in ("=", "in"):
        return None
    lhs, rhs = node.args
    if isinstance(lhs, Sym) and lhs.name not in free_symbols(rhs):
        return lhs.name, rhs
    # f(x) = x^2 (parsed as the product f·x): a definition of f, when f is not on the right.
    if isinstance(lhs, Op) and lhs.op == "*" and len(lhs.args) == 2 and node.ops[0] == "=":
        func, var = lhs.args
        if isinstance(func, Sym) and isinstance(var, Sym) and func.name not in free_symbols(rhs):
            return f"{func.name}({var.name})", rhs
    if isinstance(rhs, Sym) and node.ops[0] == "=" and rhs.name not in free_symbols(lhs):
        return rhs.name, lhs
    return None


def _is_infinite(node: Node) -> bool:
    return node in (INFINITY, NEG_INFINITY)


def _is_collection(node: Value) -> bool:
    return isinstance(node, Alt) or (isinstance(node, Seq) and node.kind in ("list", "set"))


def _items(node: Value) -> tuple[Node, ...]:
    if isinstance(node, Seq | Alt):
        return node.items
    return (node,) if not isinstance(node, Named) else node.values


class Comparer:
    """Typed-structure comparison over a scalar backend."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def compare(self, gold: Node, pred: Node) -> str:
        """A MATCH_* reason, MISMATCH or HEDGED."""
        gold_variants = self._variants(gold, "gold")
        pred_variants = self._variants(pred, "completion")
        g: Value = (
            gold_variants[0] if len(gold_variants) == 1 else Seq("list", tuple(gold_variants))
        )
        p: Value = (
            pred_variants[0] if len(pred_variants) == 1 else Seq("list", tuple(pred_variants))
        )
        if not _is_collection(self.canonical(g)):
            multiple = len(pred_variants) > 1 or isinstance(p, Alt)
            listed = isinstance(p, Seq) and p.kind == "list"
            if multiple or (listed and self._single_valued(g)):
                return HEDGED
        return self.equal(g, p)

    @staticmethod
    def _variants(node: Node, side: str) -> list[Node]:
        try:
            return expand_pm(node)
        except TooComplex as error:
            raise SideTooComplex(side, str(error)) from None

    def gold_is_multi(self, gold: Node) -> bool:
        """Whether the gold is a list of answers (a set, a solution list, or ± readings)."""
        return len(self._variants(gold, "gold")) > 1 or _is_collection(self.canonical(gold))

    def _single_valued(self, gold: Value) -> bool:
        canon = self.canonical(gold)
        return isinstance(canon, Text) or not isinstance(canon, _STRUCTURES)

    def canonical(self, node: Value) -> Value:
        """Assignments to their values, named tuples to `Named`, inequalities to intervals."""
        if isinstance(node, Rel):
            assigned = _assignment(node)
            if assigned is not None:
                return self.canonical(assigned[1])
            named = self._named_relation(node)
            if named is not None:
                return named
            return self._inequality_interval(node) or node
        if isinstance(node, Seq) and node.kind == "list":
            pairs = [_assignment(item) for item in node.items]
            if all(pair is not None for pair in pairs):
                names = tuple(pair[0] for pair in pairs if pair is not None)
                values = tuple(pair[1] for pair in pairs if pair is not None)
                if len(set(names)) == len(names):
                    return Named(names, values)
                if len(set(names)) == 1:
                    return Seq("list", values)
            return node
        if isinstance(node, Alt):
            return Seq("list", tuple(self._canonical_node(item) for item in node.items))
        return node

    def _canonical_node(self, node: Node) -> Node:
        canon = self.canonical(node)
        return node if isinstance(canon, Named) else canon

    @staticmethod
    def _named_relation(node: Rel) -> Named | None:
        if node.ops != ("=",):
            return None
        lhs, rhs = node.args
        if (
            isinstance(lhs, Seq)
            and isinstance(rhs, Seq)
            and len(lhs.items) == len(rhs.items)
            and all(isinstance(item, Sym) for item in lhs.items)
        ):
            names = tuple(item.name for item in lhs.items if isinstance(item, Sym))
            if len(set(names)) == len(names):
                return Named(names, rhs.items)
        return None

    @staticmethod
    def _inequality_interval(node: Rel) -> Interval | None:
        """`x > 3` as (3, oo), `1 <= x < 2` as [1, 2): one variable against constants."""
        if any(op not in ("<", "<=", ">", ">=") for op in node.ops):
            return None
        if len(node.args) == 2:
            lhs, rhs = node.args
            op = node.ops[0]
            if isinstance(rhs, Sym) and not isinstance(lhs, Sym):
                lhs, rhs, op = rhs, lhs, _FLIP[op]
            if not isinstance(lhs, Sym) or free_symbols(rhs):
                return None
            closed = op in ("<=", ">=")
            if op in ("<", "<="):
                return Interval(NEG_INFINITY, rhs, False, closed)
            return Interval(rhs, INFINITY, closed, False)
        if len(node.args) == 3:
            lo, var, hi = node.args
            ops = node.ops
            if not isinstance(var, Sym) or free_symbols(lo) or free_symbols(hi):
                return None
            if all(op in ("<", "<=") for op in ops):
                return Interval(lo, hi, ops[0] == "<=", ops[1] == "<=")
            if all(op in (">", ">=") for op in ops):
                return Interval(hi, lo, ops[1] == ">=", ops[0] == ">=")
        return None

    # equality of values

    def equal(self, gold: Value, pred: Value) -> str:
        if isinstance(gold, Rel) and isinstance(pred, Rel):
            both = self._relations(gold, pred)
            if both is not None:
                return both
        g = self.canonical(gold)
        p = self.canonical(pred)
        if isinstance(g, Rel) or isinstance(p, Rel):
            return MISMATCH
        if isinstance(g, Text) or isinstance(p, Text):
            same = isinstance(g, Text) and isinstance(p, Text) and g.text == p.text
            return MATCH_EXACT if same else MISMATCH
        if isinstance(g, _STRUCTURES) or isinstance(p, _STRUCTURES):
            return MATCH_STRUCTURE if self._structures(g, p) else MISMATCH
        return self._scalar(g, p)

    def _scalar(self, gold: Node, pred: Node) -> str:
        if _is_infinite(gold) or _is_infinite(pred):
            return MATCH_EXACT if gold == pred else MISMATCH
        return self.backend.scalar(gold, pred)

    def _same(self, gold: Value, pred: Value) -> bool:
        return self.equal(gold, pred) not in (MISMATCH, HEDGED)

    def _relations(self, gold: Rel, pred: Rel) -> str | None:
        """Two relations: same-variable assignments compare values; equations compare as equations."""
        g_assign, p_assign = _assignment(gold), _assignment(pred)
        if g_assign and p_assign:
            if g_assign[0] != p_assign[0]:
                return MISMATCH
            return self.equal(g_assign[1], p_assign[1])
        if len(gold.ops) != 1 or len(pred.ops) != 1:
            return None
        g_op, p_op = gold.ops[0], pred.ops[0]
        if g_op == "in" or p_op == "in":
            return None
        if self._named_relation(gold) or self._named_relation(pred):
            return None
        if self._inequality_interval(gold) and self._inequality_interval(pred):
            return None
        if g_op in ("<", "<="):
            g_op, gold = _FLIP[g_op], Rel((_FLIP[g_op],), gold.args[::-1])
        if p_op in ("<", "<="):
            p_op, pred = _FLIP[p_op], Rel((_FLIP[p_op],), pred.args[::-1])
        if g_op != p_op:
            return MISMATCH
        g_diff = Op("+", (gold.args[0], Op("neg", (gold.args[1],))))
        p_diff = Op("+", (pred.args[0], Op("neg", (pred.args[1],))))
        positive = g_op in (">", ">=")
        return MATCH_STRUCTURE if self.backend.proportional(g_diff, p_diff, positive) else MISMATCH

    def _structures(self, g: Value, p: Value) -> bool:
        if _is_collection(g):
            if isinstance(p, Seq | Alt | Named):
                return self._unordered(_items(g), _items(p))
            return len(_items(g)) == 1 and self._same(_items(g)[0], p)
        if isinstance(g, Named):
            if isinstance(p, Named):
                if set(p.names) != set(g.names):
                    return False
                by_name = dict(zip(p.names, p.values, strict=True))
                return self._ordered(g.values, tuple(by_name[n] for n in g.names))
            if isinstance(p, Seq) and p.kind in ("paren", "list", "bracket"):
                return self._ordered(g.values, p.items)
            return False
        if isinstance(g, SetUnion):
            return isinstance(p, SetUnion) and self._unordered(g.items, p.items)
        if isinstance(g, Matrix):
            return self._matrix(g, p)
        if isinstance(p, Matrix) and isinstance(g, Seq):
            return self._matrix(p, g)
        g_interval = _as_interval(g)
        p_interval = _as_interval(p)
        if isinstance(g, Interval) or isinstance(p, Interval):
            return (
                g_interval is not None
                and p_interval is not None
                and self._intervals(g_interval, p_interval)
            )
        if isinstance(g, Seq):
            if isinstance(p, Named):
                return self._ordered(g.items, p.values)
            if not isinstance(p, Seq) or p.kind == "set":
                return False
            # (1, 2) against [1, 2] are different intervals, even if equal as pairs.
            pair_kinds = {g.kind, p.kind}
            if len(g.items) == 2 and pair_kinds == {"paren", "bracket"}:
                return False
            return self._ordered(g.items, p.items)
        return False

    def _ordered(self, gs: tuple[Node, ...], ps: tuple[Node, ...]) -> bool:
        return len(gs) == len(ps) and all(self._same(g, p) for g, p in zip(gs, ps, strict=True))

    def _unordered(self, gs: tuple[Node, ...], ps: tuple[Node, ...]) -> bool:
        """Set semantics: every gold item is matched by some answer item and the reverse."""
        for side, items in (("gold", gs), ("completion", ps)):
            if len(items) > MAX_COLLECTION:
                raise SideTooComplex(side, f"a collection of more than {MAX_COLLECTION} items")
        seen: dict[tuple[int, int], bool] = {}

        def same(i: int, j: int) -> bool:
            if (i, j) not in seen:
                seen[i, j] = self._same(gs[i], ps[j])
            return seen[i, j]

        return all(any(same(i, j) for j in range(len(ps))) for i in range(len(gs))) and all(
            any(same(i, j) for i in range(len(gs))) for j in range(len(ps))
        )

    def _intervals(self, g: Interval, p: Interval) -> bool:
        return self._end(g.lo, g.lo_closed, p.lo, p.lo_closed) and self._end(
            g.hi, g.hi_closed, p.hi, p.hi_closed
        )

    def _end(self, g: Node, g_closed: bool, p: Node, p_closed: bool) -> bool:
        if _is_infinite(g) or _is_infinite(p):
            return g == p
        return g_closed == p_closed and self._same(g, p)

    def _matrix(self, g: Matrix, p: Value) -> bool:
        rows = _as_rows(p)
        if rows is None:
            return False
        g_shape = (len(g.rows), len(g.rows[0]))
        p_shape = (len(rows), len(rows[0]) if rows else 0)
        if g_shape == p_shape:
            return all(self._ordered(gr, pr) for gr, pr in zip(g.rows, rows, strict=True))
        # A column or row vector against a tuple of the same entries.
        g_flat = tuple(cell for row in g.rows for cell in row)
        p_flat = tuple(cell for row in rows for cell in row)
        vectors = 1 in g_shape and 1 in p_shape
        return vectors and self._ordered(g_flat, p_flat)


def _as_interval(node: Value) -> Interval | None:
    if isinstance(node, Interval):
        return node
    if isinstance(node, Seq) and node.kind in ("paren", "bracket") and len(node.items) == 2:
        closed = node.kind == "bracket"
        return Interval(node.items[0], node.items[1], closed, closed)
    return None


def _as_rows(node: Value) -> tuple[tuple[Node, ...], ...] | None:
    if isinstance(node, Matrix):
        return node.rows
    if isinstance(node, Seq) and node.kind != "set":
        if all(isinstance(item, Seq) and item.kind != "set" for item in node.items):
            rows = tuple(item.items for item in node.items if isinstance(item, Seq))
            return rows if len({len(r) for r in rows}) == 1 else None
        return (node.items,)
    return None
