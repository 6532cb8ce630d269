"""Multi-step arithmetic word problems with integer and fractional answers.

Difficulty sets the shape (`level`): a problem at difficulty d takes exactly
d + 1 arithmetic steps, its operands run up to 20 at d=1 (the range the
ARCHITECTURE measurement found learnable), 50 at d=2 and 100*(d-2) beyond, and
from d=3 on a final division may leave a fraction.

Gold: an integer (`42`) or a reduced fraction (`7/3`).

Every step of the worked solution is one line holding one `<expr>=<value>.`,
such as `3 pens cost 3*4=12.`; fractional operands are parenthesised, so each
step reads (and recomputes) the same way in Python or sympy.
"""

from __future__ import annotations

import operator
import random
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from generators.tasks.base import Draft, FamilySource, fmt_number

NAME = "toy-arithmetic"


@dataclass(frozen=True)
class Level:
    steps: int  # arithmetic steps in the worked solution
    max_operand: int  # largest freshly drawn operand
    fractions: bool  # whether the last step may divide unevenly


def level(difficulty: int) -> Level:
    max_operand = {1: 20, 2: 50}.get(difficulty, 100 * (difficulty - 2))
    return Level(steps=difficulty + 1, max_operand=max_operand, fractions=difficulty >= 3)


_OPS: dict[str, Callable[[Fraction, Fraction], Fraction]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
}


def _operand(value: Fraction) -> str:
    # Parenthesise fractions and negatives so `a/b` always means one number.
    text = fmt_number(value)
    return text if value.denominator == 1 and value >= 0 else f"({text})"


class _Work:
    """Computes steps exactly while writing them as worked-solution lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def step(self, a: Fraction | int, op: str, b: Fraction | int, gloss: str = "") -> Fraction:
        a, b = Fraction(a), Fraction(b)
        result = _OPS[op](a, b)
        prefix = f"{gloss} " if gloss else ""
        self.lines.append(f"{prefix}{_operand(a)}{op}{_operand(b)}={fmt_number(result)}.")
        return result

    @property
    def think(self) -> str:
        return "\n".join(self.lines)


Template = Callable[[random.Random, Level], tuple[str, _Work, Fraction]]

_PEOPLE = (
    ("Ana", "she"),
    ("Ben", "he"),
    ("Chloe", "she"),
    ("Dev", "he"),
    ("Emma", "she"),
    ("Farid", "he"),
    ("Grace", "she"),
    ("Hugo", "he"),
    ("Ines", "she"),
    ("Jon", "he"),
    ("Lena", "she"),
    ("Mateo", "he"),
    ("Nadia", "she"),
    ("Omar", "he"),
    ("Priya", "she"),
    ("Sam", "he"),
    ("Tara", "she"),
    ("Yusuf", "he"),
)


def _bare(rng: random.Random, lv: Level) -> tuple[str, _Work, Fraction]:
    """`What is 12+7-5?`: the plain chain the toy model learns first."""
    work = _Work()
    value = Fraction(rng.randint(1, lv.max_operand))
    expression = fmt_number(value)
    for _ in range(lv.steps):
        b = rng.randint(1, lv.max_operand)
        # Subtract only what keeps the running value positive.
        op = "-" if b < value and rng.random() < 0.5 else "+"
        expression += f"{op}{b}"
        value = work.step(value, op, b)
    prompt = rng.choice(("What is {e}?", "Compute {e}.", "Calculate {e}.")).format(e=expression)
    return prompt, work, value


_COUNTABLE = ("marbles", "stickers", "stamps", "shells", "cards", "coins")
# (unit, stuff, how it is split, the question): amounts that can be split into fractions.
_DIVISIBLE = (
    ("liters", "juice", "{P} pours it equally into {k} jars.", "How many liters are in each jar?"),
    (
        "kilograms",
        "flour",
        "{P} splits it equally into {k} bags.",
        "How many kilograms are in each bag?",
    ),
    ("meters", "rope", "{P} cuts it into {k} equal pieces.", "How many meters long is each piece?"),
)


def _collection(rng: random.Random, lv: Level) -> tuple[str, _Work, Fraction]:
    """A running amount that gains, loses, grows, and (from d=3) is split up."""
    name, pronoun = rng.choice(_PEOPLE)
    he = pronoun.capitalize()
    split = lv.fractions
    gains: tuple[str, ...]
    losses: tuple[str, ...]
    if split:
        unit, stuff, split_text, question = rng.choice(_DIVISIBLE)
        noun = f"{unit} of {stuff}"
        gains = ("{P} buys {k} more.", "{P} is given {k} more.")
        losses = ("{P} uses {k}.", "{P} gives {k} to a neighbour.")
    else:
        noun = rng.choice(_COUNTABLE)
        question = f"How many {noun} does {name} have now?"
        gains = ("{P} finds {k} more.", "{P} gets {k} more from a friend.", "{P} buys {k} more.")
        losses = ("{P} gives {k} to a friend.", "{P} loses {k}.")
    value = Fraction(rng.randint(1, lv.max_operand))
    sentences = [f"{name} has {value} {noun}."]
    work = _Work()
    for _ in range(lv.steps - 1 if split else lv.steps):
        ops = ["+", "-"] if value > 1 else ["+"]
        # Growing by a factor reads naturally only for a collection of things.
        if not split and value <= lv.max_operand:
            ops.append("*")
        op = rng.choice(ops)
        if op == "*":
            factor = rng.choice((2, 3))
            verb = "doubles" if factor == 2 else "triples"
            sentences.append(f"Then {name}'s collection {verb}.")
            value = work.step(value, "*", factor)
            continue
        k = rng.randint(1, min(lv.max_operand, int(value) - 1) if op == "-" else lv.max_operand)
        sentences.append(rng.choice(gains if op == "+" else losses).format(P=he, k=k))
        value = work.step(value, op, k)
    if split:
        k = rng.randint(2, 9)
        sentences.append(split_text.format(P=he, k=k))
        value = work.step(value, "/", k, gloss="Each part is")
    sentences.append(question)
    return " ".join(sentences), work, value


_GOODS = (
    ("pen", "pens"),
    ("notebook", "notebooks"),
    ("apple", "apples"),
    ("ticket", "tickets"),
    ("toy car", "toy cars"),
    ("sandwich", "sandwiches"),
    ("cup of tea", "cups of tea"),
    ("book", "books"),
    ("ball", "balls"),
    ("poster", "posters"),
    ("candle", "candles"),
    ("orange", "oranges"),
)


def _a(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def _dollars(amount: int) -> str:
    return "1 dollar" if amount == 1 else f"{amount} dollars"


def _and_join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _shopping(rng: random.Random, lv: Level) -> tuple[str, _Work, Fraction]:
    """Prices times quantities, summed, with change from a note when the step count is even."""
    name, pronoun = rng.choice(_PEOPLE)
    # k goods take 2k-1 steps (k products, k-1 sums); paying with a note adds one.
    change = lv.steps % 2 == 0
    goods = rng.sample(_GOODS, (lv.steps + 1) // 2)
    prices = [rng.randint(1, max(2, lv.max_operand // 2)) for _ in goods]
    quantities = [rng.randint(2, 9) for _ in goods]
    price_text = _and_join(
        [
            f"{_a(one)} costs {_dollars(price)}"
            for (one, _), price in zip(goods, prices, strict=True)
        ]
    )
    basket = _and_join([f"{q} {many}" for (_, many), q in zip(goods, quantities, strict=True)])
    work = _Work()
    costs = [
        work.step(q, "*", price, gloss=f"{q} {many} cost")
        for (_, many), q, price in zip(goods, quantities, prices, strict=True)
    ]
    total = costs[0]
    for cost in costs[1:]:
        total = work.step(total, "+", cost, gloss="Total")
    if change:
        # The smallest multiple of 10 above the total, sometimes a note or two more.
        note = (int(total) // 10 + 1 + rng.randint(0, 2)) * 10
        paid = f" and pays with a {note} dollar note"
        question = rng.choice(
            (f"How much change does {pronoun} get?", f"How many dollars does {name} get back?")
        )
        result = work.step(note, "-", total, gloss="Change")
    else:
        paid = ""
        question = rng.choice(
            (f"How much does {pronoun} spend?", f"How many dollars does {name} pay in total?")
        )
        result = total
    prompt = f"{price_text[0].upper()}{price_text[1:]}. {name} buys {basket}{paid}. {question}"
    return prompt, work, result


_MODES = ("drives", "rides a motorbike", "travels by bus", "travels by train")
_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth")


def _travel(rng: random.Random, lv: Level) -> tuple[str, _Work, Fraction]:
    """Distance as speed times time per leg, summed, plus a walk when the step count is even."""
    name, pronoun = rng.choice(_PEOPLE)
    walk = lv.steps % 2 == 0
    legs = (lv.steps + 1) // 2
    work = _Work()
    sentences = []
    total = Fraction(0)
    for leg in range(legs):
        speed, hours = rng.randint(2, lv.max_operand), rng.randint(2, 6)
        who = name if leg == 0 else rng.choice(("Then", "After that")) + " " + pronoun
        sentences.append(f"{who} {rng.choice(_MODES)} at {speed} km per hour for {hours} hours.")
        distance = work.step(speed, "*", hours, gloss=f"The {_ORDINALS[leg]} leg is")
        total = distance if leg == 0 else work.step(total, "+", distance, gloss="Total")
    if walk:
        km = rng.randint(1, lv.max_operand)
        sentences.append(f"Finally {pronoun} walks {km} km.")
        total = work.step(total, "+", km, gloss="Total")
    sentences.append(
        rng.choice(
            (
                f"How many km does {name} travel in total?",
                f"How far does {name} go altogether, in km?",
            )
        )
    )
    return " ".join(sentences), work, total


# (containers, item, sharers, one sharer)
_SHARES = (
    ("boxes", "pizzas", "friends", "friend"),
    ("trays", "cakes", "guests", "guest"),
    ("jugs", "liters of lemonade", "tables", "table"),
    ("sacks", "kilograms of rice", "families", "family"),
    ("baskets", "apples", "children", "child"),
)


def _sharing(rng: random.Random, lv: Level) -> tuple[str, _Work, Fraction]:
    """Groups times size, adjusted, then shared: evenly below d=3, any way from d=3."""
    containers, item, sharers, sharer = rng.choice(_SHARES)
    # Redraw until the share is whole when fractions are not allowed yet; a
    # composite product always has a divisor, so this ends within a few tries.
    while True:
        groups, size = rng.randint(2, 9), rng.randint(2, lv.max_operand)
        sentences = [f"There are {groups} {containers} with {size} {item} in each."]
        work = _Work()
        total = work.step(groups, "*", size, gloss="In all")
        for _ in range(lv.steps - 2):
            if total > 2 and rng.random() < 0.5:
                k = rng.randint(1, min(lv.max_operand, int(total) - 2))
                sentences.append(f"{k} {item} are set aside.")
                total = work.step(total, "-", k)
            else:
                k = rng.randint(1, lv.max_operand)
                sentences.append(f"{k} more {item} are added.")
                total = work.step(total, "+", k)
        if lv.fractions:
            people = rng.randint(2, 9)
            break
        divisors = [d for d in range(2, 13) if total % d == 0]
        if divisors:
            people = rng.choice(divisors)
            break
    sentences.append(f"They are shared equally among {people} {sharers}.")
    sentences.append(f"How many {item} does each {sharer} get?")
    share = work.step(total, "/", people, gloss="Each gets")
    return " ".join(sentences), work, share


TEMPLATES: tuple[Template, ...] = (_bare, _collection, _shopping, _travel, _sharing)


def build(rng: random.Random, difficulty: int) -> Draft:
    template = rng.choice(TEMPLATES)
    prompt, work, result = template(rng, level(difficulty))
    gold = fmt_number(result)
    return Draft(prompt=prompt, gold=gold, think=work.think, answer=gold)


SOURCE = FamilySource(name=NAME, domain="math", track="reasoning", build=build)
