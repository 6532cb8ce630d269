"""A small parser for answers: normalised LaTeX or plain text in, a frozen syntax tree out.

The tree (`Node`) is our own, not sympy's, for two reasons. Building it costs
microseconds and never evaluates anything, so the guards below bound its work
and the fast path (`compare.ExactBackend`) can decide most answers on it with
Python's `Fraction`; and sympy is imported only by the worker that needs it
(`symbolic.py`), where the parent's deadline covers it.

Nothing here executes input: the tokenizer accepts a fixed alphabet (digits,
ASCII letters, a fixed set of operators and LaTeX commands) and raises
`ParseError` on anything else.

Grammar, loosest first: alternatives joined by "or"/"and"; a comma list; a
chain of relations (`=`, `<`, `\\le`, `\\in`, ...); unions (`\\cup`); sums
(`+`, `-`, `\\pm`); products (`*`, `/`, `\\cdot`, `\\times`, `\\div` and
juxtaposition); unary signs; powers (right-associative); factorials; atoms
(numbers, symbols, constants, functions, `\\frac`, `\\sqrt[n]{}`, `\\binom`,
brackets, sets `\\{...\\}`, absolute values, floor and ceiling, matrices).

Conventions where LaTeX and plain text disagree: an unbraced argument of
`\\frac`/`\\sqrt` is one character (`\\frac12`), but an unbraced exponent is
a whole number (`2^10` is 1024, as people mean it); `2\\frac{1}{2}` is the
mixed number 5/2; `(a, b)` is an ordered pair or an open interval (the
comparison decides which by the gold), `(a, b]` and `[a, b)` are intervals;
`e` is Euler's number, `i` the imaginary unit, bare `\\log` the natural log.

Guards (raise `TooComplex`): text length, token count, nesting depth and the
height of power towers (at most four stacked exponents), so `2003^{2002^{2001}}`
parses, its size being judged when it is evaluated, while a tower of five is
refused here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

MAX_ANSWER_CHARS = 2000
MAX_TOKENS = 1000
MAX_DEPTH = 32
MAX_TOWER = 4
# Scientific notation beyond this exponent is refused: `1e100000` would make a
# 330,000-bit integer before any comparison starts.
MAX_SCI_EXPONENT = 1000


class ParseError(ValueError):
    """The text is not an answer this parser reads."""


class TooComplex(ValueError):
    """The text is over a guard (length, tokens, depth, tower, size of a number)."""


# --- the tree ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Num:
    value: Fraction
    # As written, so that the precision a gold states can be read back (3.140).
    text: str
    decimal: bool


@dataclass(frozen=True, slots=True)
class Sym:
    name: str


@dataclass(frozen=True, slots=True)
class Const:
    name: str  # "pi", "e", "i", "oo"


@dataclass(frozen=True, slots=True)
class Op:
    # "+", "*", "/", "^", "neg", "!" and "pm" (a ± b, or ± a with one argument).
    # Subtraction is "+" with a "neg" term.
    op: str
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Func:
    # sin, cos, ..., log (one argument, or value and base), exp, abs, floor,
    # ceil, root (value and index), binom, max, min.
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Seq:
    # "paren" (a, b), "bracket" [a, b], "set" \{a, b\}, "list" a, b
    kind: str
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Interval:
    lo: Node
    hi: Node
    lo_closed: bool
    hi_closed: bool


@dataclass(frozen=True, slots=True)
class SetUnion:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Matrix:
    rows: tuple[tuple[Node, ...], ...]


@dataclass(frozen=True, slots=True)
class Rel:
    # A chain a < b <= c: len(ops) == len(args) - 1. Ops: = < <= > >= != in
    ops: tuple[str, ...]
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Alt:
    """Answers joined by "or"/"and": a hedge, unless the gold itself is a list."""

    word: str
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Text:
    """A word answer ("no solution", "even"), compared case-insensitively."""

    text: str


Node = Num | Sym | Const | Op | Func | Seq | Interval | SetUnion | Matrix | Rel | Alt | Text

INFINITY = Const("oo")
NEG_INFINITY = Op("neg", (INFINITY,))


def children(node: Node) -> tuple[Node, ...]:
    if isinstance(node, Op | Func):
        return node.args
    if isinstance(node, Seq | SetUnion | Alt):
        return node.items
    if isinstance(node, Rel):
        return node.args
    if isinstance(node, Interval):
        return (node.lo, node.hi)
    if isinstance(node, Matrix):
        return tuple(cell for row in node.rows for cell in row)
    return ()


def free_symbols(node: Node) -> frozenset[str]:
    if isinstance(node, Sym):
        return frozenset((node.name,))
    found: set[str] = set()
    stack = list(children(node))
    while stack:
        item = stack.pop()
        if isinstance(item, Sym):
            found.add(item.name)
        else:
            stack.extend(children(item))
    return frozenset(found)


def contains(node: Node, predicate: type | tuple[type, ...]) -> bool:
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, predicate):
            return True
        stack.extend(children(item))
    return False


# --- tokens ------------------------------------------------------------------

NUM, NAME, CONST, FUNC, CMD, OP, WORD, BEGIN, END, EOF = (
    "num",
    "name",
    "const",
    "func",
    "cmd",
    "op",
    "word",
    "begin",
    "end",
    "eof",
)
Token = tuple[str, str]

_PLAIN_FUNCS = {
    "sin": "sin",
    "cos": "cos",
    "tan": "tan",
    "cot": "cot",
    "sec": "sec",
    "csc": "csc",
    "arcsin": "asin",
    "arccos": "acos",
    "arctan": "atan",
    "asin": "asin",
    "acos": "acos",
    "atan": "atan",
    "sinh": "sinh",
    "cosh": "cosh",
    "tanh": "tanh",
    "ln": "log",
    "log": "log",
    "exp": "exp",
    "sqrt": "sqrt",
    "abs": "abs",
    "max": "max",
    "min": "min",
}
_PLAIN_CONSTS = {"pi": "pi", "oo": "oo", "inf": "oo", "infty": "oo", "infinity": "oo"}
_WORDS = {"or": "or", "and": "and"}
_FILLERS = frozenset({"either"})
# Longest first, so "arcsin" wins over "a", "r", "c", "sin".
_SPLIT_NAMES = sorted(set(_PLAIN_FUNCS) | set(_PLAIN_CONSTS), key=len, reverse=True)
KNOWN_NAMES = frozenset(_PLAIN_FUNCS) | frozenset(_PLAIN_CONSTS)

_CMD_OPS = {
    "cdot": "*",
    "times": "*",
    "ast": "*",
    "div": "/",
    "pm": "±",
    "mp": "∓",
    "le": "<=",
    "leq": "<=",
    "leqslant": "<=",
    "ge": ">=",
    "geq": ">=",
    "geqslant": ">=",
    "lt": "<",
    "gt": ">",
    "ne": "!=",
    "neq": "!=",
    "in": "in",
    "approx": "=",
    "cup": "cup",
}
_CMD_WORDS = {"lor": "or", "vee": "or", "land": "and", "wedge": "and"}
_CMD_CONSTS = {"pi": "pi", "infty": "oo", "infin": "oo", "emptyset": "empty", "varnothing": "empty"}
_CMD_FUNCS = {
    "sin": "sin",
    "cos": "cos",
    "tan": "tan",
    "cot": "cot",
    "sec": "sec",
    "csc": "csc",
    "arcsin": "asin",
    "arccos": "acos",
    "arctan": "atan",
    "sinh": "sinh",
    "cosh": "cosh",
    "tanh": "tanh",
    "ln": "log",
    "log": "log",
    "exp": "exp",
    "max": "max",
    "min": "min",
}
_GREEK = frozenset(
    {
        *("alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta"),
        *("vartheta", "iota", "kappa", "lambda", "mu", "nu", "xi", "rho", "sigma", "tau"),
        *("upsilon", "phi", "varphi", "chi", "psi", "omega", "Gamma", "Delta", "Theta"),
        *("Lambda", "Xi", "Sigma", "Phi", "Psi", "Omega"),
    }
)
_CMD_STRUCT = frozenset({"frac", "sqrt", "binom", "lfloor", "rfloor", "lceil", "rceil"})
_MATRIX_ENVS = frozenset({"pmatrix", "bmatrix", "Bmatrix", "matrix", "smallmatrix", "array"})
_INVERSE = {"sin": "asin", "cos": "acos", "tan": "atan"}

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<begin>\\begin\{(?P<benv>[A-Za-z]+)\}(?:(?<=\{array\})\{[^{}]*\})?)
  | (?P<end>\\end\{(?P<eenv>[A-Za-z]+)\})
  | (?P<bb>\\mathbb\s*\{?\s*(?P<bbl>[A-Za-z])\s*\}?)
  | (?P<cmd>\\[A-Za-z]+)
  | (?P<esc>\\[{}|\\])
  | (?P<num>(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<letters>[A-Za-z]+)
  | (?P<op>\*\*|<=|>=|!=|[-+*/^()\[\]{},;=<>!|&_])
    """,
    re.VERBOSE,
)
_TEXT_ANSWER = re.compile(r"[A-Za-z][A-Za-z' -]*")


def tokenize(text: str) -> list[Token]:
    if len(text) > MAX_ANSWER_CHARS:
        raise TooComplex(f"answer of {len(text)} characters (limit {MAX_ANSWER_CHARS})")
    tokens: list[Token] = []
    pos = 0
    n = len(text)
    while pos < n:
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ParseError(f"unexpected character {text[pos]!r} at {pos}")
        pos = m.end()
        kind = m.lastgroup
        value = m.group()
        if kind == "ws":
            continue
        if kind == "begin":
            tokens.append((BEGIN, m.group("benv")))
        elif kind == "end":
            tokens.append((END, m.group("eenv")))
        elif kind == "bb":
            if m.group("bbl") != "R":
                raise ParseError(f"unsupported set {value!r}")
            tokens.append((CONST, "reals"))
        elif kind == "cmd":
            tokens.append(_command(value[1:]))
        elif kind == "esc":
            tokens.append((OP, "rowsep" if value == "\\\\" else value))
        elif kind == "num":
            _check_sci(value)
            tokens.append((NUM, value))
        elif kind == "letters":
            tokens.extend(_letters(value))
        else:
            tokens.append((OP, "^" if value == "**" else value))
        if len(tokens) > MAX_TOKENS:
            raise TooComplex(f"more than {MAX_TOKENS} tokens")
    tokens.append((EOF, ""))
    return tokens


def _command(name: str) -> Token:
    if name in _CMD_OPS:
        return (OP, _CMD_OPS[name])
    if name in _CMD_WORDS:
        return (WORD, _CMD_WORDS[name])
    if name in _CMD_CONSTS:
        return (CONST, _CMD_CONSTS[name])
    if name in _CMD_FUNCS:
        return (FUNC, _CMD_FUNCS[name])
    if name in _GREEK:
        return (NAME, name)
    if name in _CMD_STRUCT:
        return (CMD, name)
    raise ParseError(f"unsupported command \\{name}")


def _check_sci(text: str) -> None:
    exponent = text.lower().partition("e")[2]
    if exponent and abs(int(exponent)) > MAX_SCI_EXPONENT:
        raise TooComplex(f"number {text!r} has an exponent over {MAX_SCI_EXPONENT}")


def _letters(run: str) -> list[Token]:
    if run in _WORDS:
        return [(WORD, _WORDS[run])]
    if run in _FILLERS:
        return []
    out: list[Token] = []
    singles = 0
    j = 0
    while j < len(run):
        for name in _SPLIT_NAMES:
            if run.startswith(name, j):
                kind = FUNC if name in _PLAIN_FUNCS else CONST
                table = _PLAIN_FUNCS if kind == FUNC else _PLAIN_CONSTS
                out.append((kind, table[name]))
                j += len(name)
                break
        else:
            letter = run[j]
            out.append((CONST, letter) if letter in "ei" else (NAME, letter))
            singles += 1
            j += 1
    # "xy" is x*y, but three loose letters in a row are a word, not a product.
    if singles >= 3:
        raise ParseError(f"word {run!r} in a math answer")
    return out


# --- the parser ----------------------------------------------------------------

_REL_OPS = frozenset({"=", "<", "<=", ">", ">=", "!=", "in"})
_ATOM_CMDS = frozenset({"frac", "sqrt", "binom", "lfloor", "lceil"})


def parse(text: str) -> Node:
    """The tree of a normalised answer; raises ParseError or TooComplex."""
    stripped = text.strip()
    if not stripped:
        raise ParseError("empty answer")
    if _TEXT_ANSWER.fullmatch(stripped):
        words = re.split(r"[\s-]+", stripped.lower())
        if any(len(w) >= 3 and w not in KNOWN_NAMES and w not in _WORDS for w in words):
            return Text(" ".join(w for w in words if w))
    return _Parser(tokenize(stripped)).parse()


def tower_height(node: Node) -> int:
    """How many exponents are stacked in `node`: 2^3 is 1, 2^{3^4} is 2."""
    if isinstance(node, Op) and node.op == "^":
        return 1 + tower_height(node.args[1])
    return max((tower_height(c) for c in children(node)), default=0)


def _mul(a: Node, b: Node) -> Node:
    left = a.args if isinstance(a, Op) and a.op == "*" else (a,)
    return Op("*", (*left, b))


def _add(a: Node, b: Node) -> Node:
    left = a.args if isinstance(a, Op) and a.op == "+" else (a,)
    return Op("+", (*left, b))


def _number(text: str) -> Num:
    decimal = "." in text or "e" in text or "E" in text
    return Num(Fraction(text), text, decimal)


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.i = 0
        self.depth = 0
        self.abs_depth = 0

    # token helpers
    def peek(self) -> Token:
        return self.tokens[self.i]

    def advance(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def at(self, kind: str, text: str | None = None) -> bool:
        k, t = self.tokens[self.i]
        return k == kind and (text is None or t == text)

    def expect(self, kind: str, text: str | None = None) -> Token:
        if not self.at(kind, text):
            k, t = self.peek()
            want = text if text is not None else kind
            raise ParseError(f"expected {want!r}, found {t or k!r}")
        return self.advance()

    def parse(self) -> Node:
        node = self.alternatives()
        if not self.at(EOF):
            raise ParseError(f"unexpected {self.peek()[1]!r}")
        return node

    # grammar, loosest first
    def alternatives(self) -> Node:
        items = [self.comma_list()]
        word = ""
        while self.at(WORD):
            word = self.advance()[1]
            items.append(self.comma_list())
        return items[0] if len(items) == 1 else Alt(word, tuple(items))

    def comma_list(self) -> Node:
        items = [self.relation()]
        while self.at(OP, ",") or self.at(OP, ";"):
            self.advance()
            items.append(self.relation())
        return items[0] if len(items) == 1 else Seq("list", tuple(items))

    def relation(self) -> Node:
        args = [self.union()]
        ops: list[str] = []
        while self.peek()[0] == OP and self.peek()[1] in _REL_OPS:
            ops.append(self.advance()[1])
            args.append(self.union())
        return args[0] if not ops else Rel(tuple(ops), tuple(args))

    def union(self) -> Node:
        items = [self.sum()]
        while self.at(OP, "cup"):
            self.advance()
            items.append(self.sum())
        return items[0] if len(items) == 1 else SetUnion(tuple(items))

    def sum(self) -> Node:
        node = self.product()
        while self.peek()[0] == OP and self.peek()[1] in ("+", "-", "±", "∓"):
            op = self.advance()[1]
            rhs = self.product()
            if op == "+":
                node = _add(node, rhs)
            elif op == "-":
                node = _add(node, Op("neg", (rhs,)))
            else:
                node = Op("pm", (node, rhs if op == "±" else Op("neg", (rhs,))))
        return node

    def product(self) -> Node:
        node = self.unary()
        while True:
            if self.at(OP, "*"):
                self.advance()
                node = _mul(node, self.unary())
            elif self.at(OP, "/"):
                self.advance()
                node = Op("/", (node, self.unary()))
            elif self.starts_atom():
                node = _mul(node, self.power())
            else:
                return node

    def unary(self) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise TooComplex(f"nested deeper than {MAX_DEPTH}")
        try:
            if self.at(OP, "-"):
                self.advance()
                return Op("neg", (self.unary(),))
            if self.at(OP, "+"):
                self.advance()
                return self.unary()
            if self.at(OP, "±") or self.at(OP, "∓"):
                self.advance()
                return Op("pm", (self.unary(),))
            return self.power()
        finally:
            self.depth -= 1

    def power(self) -> Node:
        base = self.postfix()
        if not self.at(OP, "^"):
            return base
        self.advance()
        exponent = self.exponent()
        if 1 + tower_height(exponent) > MAX_TOWER:
            raise TooComplex(f"a tower of more than {MAX_TOWER} powers")
        node: Node = Op("^", (base, exponent))
        while self.at(OP, "!"):
            self.advance()
            node = Op("!", (node,))
        return node

    def exponent(self) -> Node:
        if self.at(OP, "{"):
            return self.braced()
        return self.unary()

    def postfix(self) -> Node:
        node = self.atom()
        while self.at(OP, "!"):
            self.advance()
            node = Op("!", (node,))
        return node

    def starts_atom(self) -> bool:
        kind, text = self.peek()
        if kind in (NAME, CONST, FUNC, BEGIN):
            return True
        if kind == CMD:
            return text in _ATOM_CMDS
        if kind == OP:
            return text in ("(", "{") or (text == "|" and self.abs_depth == 0)
        return False

    def braced(self) -> Node:
        self.expect(OP, "{")
        node = self.comma_list()
        self.expect(OP, "}")
        return node

    def atom(self) -> Node:
        kind, text = self.advance()
        if kind == NUM:
            return self.number(text)
        if kind == NAME:
            return Sym(self.subscripted(text))
        if kind == CONST:
            if text == "empty":
                return Seq("set", ())
            if text == "reals":
                return Interval(NEG_INFINITY, INFINITY, False, False)
            return Const(text)
        if kind == FUNC:
            return self.function(text)
        if kind == CMD:
            return self.command(text)
        if kind == BEGIN:
            return self.matrix(text)
        if kind == OP:
            if text in ("(", "["):
                return self.group(text)
            if text == "{":
                self.i -= 1
                return self.braced()
            if text == "\\{":
                return self.set_literal()
            if text == "|":
                self.abs_depth += 1
                inner = self.sum()
                self.expect(OP, "|")
                self.abs_depth -= 1
                return Func("abs", (inner,))
        raise ParseError(f"unexpected {text or kind!r}")

    def number(self, text: str) -> Node:
        node = _number(text)
        # 2\frac{1}{2} is the mixed number 5/2, as competition answers write it.
        if not node.decimal and self.at(CMD, "frac"):
            saved = self.i
            self.advance()
            frac = self.fraction()
            num, den = frac.args if isinstance(frac, Op) else (None, None)
            if (
                isinstance(num, Num)
                and isinstance(den, Num)
                and not num.decimal
                and not den.decimal
                and 0 < num.value < den.value
            ):
                return Op("+", (node, frac))
            self.i = saved
        return node

    def subscripted(self, name: str) -> str:
        if not self.at(OP, "_"):
            return name
        self.advance()
        if self.at(OP, "{"):
            self.advance()
            parts = []
            while not self.at(OP, "}"):
                if self.at(EOF):
                    raise ParseError("unclosed subscript")
                parts.append(self.advance()[1])
            self.advance()
            return f"{name}_{''.join(parts)}"
        kind, text = self.advance()
        if kind not in (NUM, NAME, CONST):
            raise ParseError(f"bad subscript {text!r}")
        return f"{name}_{text}"

    def argument(self) -> Node:
        """A LaTeX command's argument: a braced group, or a single character or token."""
        kind, text = self.peek()
        if kind == OP and text == "{":
            return self.braced()
        if kind == NUM and len(text) > 1 and text[0].isdigit():
            # \frac12: the argument is one digit, the rest stays for what follows.
            self.tokens[self.i] = (NUM, text[1:])
            return _number(text[0])
        if kind in (NUM, NAME, CONST, CMD) or (kind == OP and text == "("):
            return self.atom()
        raise ParseError(f"missing argument before {text or kind!r}")

    def fraction(self) -> Node:
        return Op("/", (self.argument(), self.argument()))

    def command(self, name: str) -> Node:
        if name == "frac":
            return self.fraction()
        if name == "sqrt":
            index: Node = Num(Fraction(2), "2", False)
            if self.at(OP, "["):
                self.advance()
                index = self.sum()
                self.expect(OP, "]")
            return Func("root", (self.argument(), index))
        if name == "binom":
            return Func("binom", (self.argument(), self.argument()))
        if name in ("lfloor", "lceil"):
            inner = self.sum()
            self.expect(CMD, "rfloor" if name == "lfloor" else "rceil")
            return Func("floor" if name == "lfloor" else "ceil", (inner,))
        raise ParseError(f"unexpected \\{name}")

    def function(self, name: str) -> Node:
        base: Node | None = None
        if name == "log" and self.at(OP, "_"):
            self.advance()
            base = self.argument()
        power: Node | None = None
        if self.at(OP, "^"):
            self.advance()
            power = self.exponent()
            if power == Op("neg", (Num(Fraction(1), "1", False),)) and name in _INVERSE:
                name, power = _INVERSE[name], None
        if self.at(OP, "("):
            self.advance()
            args = [self.relation()]
            while self.at(OP, ","):
                self.advance()
                args.append(self.relation())
            self.expect(OP, ")")
        elif self.at(OP, "{"):
            args = [self.braced()]
        else:
            # \sin 2x is sin(2x); \sin x \cos x is sin(x)cos(x).
            arg = self.unary()
            while self.starts_atom() and not self.at(FUNC):
                arg = _mul(arg, self.power())
            args = [arg]
        if name == "sqrt":
            node: Node = Func("root", (args[0], Num(Fraction(2), "2", False)))
        elif base is not None:
            node = Func("log", (args[0], base))
        else:
            node = Func(name, tuple(args))
        if name not in ("max", "min") and len(args) != 1:
            raise ParseError(f"{name} takes one argument")
        return Op("^", (node, power)) if power is not None else node

    def group(self, opener: str) -> Node:
        items = [self.relation()]
        while self.at(OP, ","):
            self.advance()
            items.append(self.relation())
        kind, closer = self.advance()
        if kind != OP or closer not in (")", "]"):
            raise ParseError(f"unclosed {opener!r}")
        matched = (opener == "(") == (closer == ")")
        if len(items) == 1:
            if not matched:
                raise ParseError(f"{opener}...{closer} needs two ends")
            return items[0]
        if not matched:
            if len(items) != 2:
                raise ParseError("an interval has two ends")
            return Interval(items[0], items[1], opener == "[", closer == "]")
        return Seq("paren" if opener == "(" else "bracket", tuple(items))

    def set_literal(self) -> Node:
        if self.at(OP, "\\}"):
            self.advance()
            return Seq("set", ())
        items = [self.relation()]
        while self.at(OP, ",") or self.at(OP, ";"):
            self.advance()
            items.append(self.relation())
        self.expect(OP, "\\}")
        return Seq("set", tuple(items))

    def matrix(self, env: str) -> Node:
        if env not in _MATRIX_ENVS:
            raise ParseError(f"unsupported environment {env!r}")
        rows: list[tuple[Node, ...]] = []
        row = [self.relation()]
        while True:
            if self.at(OP, "&"):
                self.advance()
                row.append(self.relation())
            elif self.at(OP, "rowsep"):
                self.advance()
                rows.append(tuple(row))
                if self.at(END):
                    break
                row = [self.relation()]
            elif self.at(END):
                rows.append(tuple(row))
                break
            else:
                raise ParseError(f"unexpected {self.peek()[1]!r} in a matrix")
        if self.advance()[1] != env:
            raise ParseError(f"\\begin{{{env}}} closed by another environment")
        if len({len(r) for r in rows}) != 1:
            raise ParseError("matrix rows of different lengths")
        return Matrix(tuple(rows))
