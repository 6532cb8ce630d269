"""Toy task sources: determinism, shape, and correctness of every gold and worked solution.

The checks here recompute each answer independently of the generators: arithmetic
steps with Fraction, countdown answers with an AST walker (never eval), linear
systems with sympy's solver, algebra with sympy's simplify.
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from collections.abc import Mapping
from fractions import Fraction

import pytest
import sympy
from sympy.parsing.sympy_parser import parse_expr

from generators.tasks import (
    MAX_DIFFICULTY,
    SOURCES,
    Task,
    generate_mixture,
    render_pretraining_text,
)
from generators.tasks.conversation import load_table

SOLUTION_RE = re.compile(r"^<think>(.*)</think><answer>(.+)</answer>$", re.DOTALL)
# One arithmetic step as the worked solutions write it: `3*12=36`, `(7/3)+1=10/3`.
STEP_RE = re.compile(r"([0-9(][0-9+\-*/()]*)=(-?\d+(?:/\d+)?)")
REASONING = ("toy-arithmetic", "toy-countdown", "toy-linear", "toy-algebra")
NON_REASONING = ("toy-greeting", "toy-self-cognition", "toy-facts", "toy-translation")


def tasks(name: str, n: int, seed: int = 0, difficulty: int = 1) -> list[Task]:
    return list(SOURCES[name].generate(n, seed, difficulty))


def split_solution(task: Task) -> tuple[str, str]:
    match = SOLUTION_RE.match(task.solution)
    assert match, f"{task.prompt_id}: bad solution format {task.solution!r}"
    return match.group(1), match.group(2)


_BINARY = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
}


def evaluate(
    text: str,
    literals: list[int] | None = None,
    *,
    names: Mapping[str, Fraction] | None = None,
    negation: bool = False,
    powers: bool = False,
) -> Fraction:
    """Exact value of `text`, walking its syntax tree; never eval().

    Only integers, + - * / and brackets are allowed, plus what the caller opts
    into: unary minus, the variables in `names`, small integer powers. Integer
    literals are appended to `literals`, so a caller can see which numbers an
    expression used. Division by zero raises ZeroDivisionError.
    """
    used = [] if literals is None else literals

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            used.append(node.value)
            return Fraction(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return _BINARY[type(node.op)](walk(node.left), walk(node.right))
        if negation and isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        if names is not None and isinstance(node, ast.Name) and node.id in names:
            return names[node.id]
        if (
            powers
            and isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.Pow)
            and isinstance(node.right, ast.Constant)
            and type(node.right.value) is int
            and 0 <= node.right.value <= 5
        ):
            return walk(node.left) ** node.right.value
        raise ValueError(f"not allowed: {ast.dump(node)}")

    return walk(ast.parse(text.strip(), mode="eval"))


def check_steps(think: str) -> list[Fraction]:
    """Every `expr=value` step in the reasoning recomputes exactly; returns the values."""
    values = []
    for line in think.splitlines():
        steps = STEP_RE.findall(line)
        assert len(steps) == 1, f"expected one step in {line!r}"
        expr, value = steps[0]
        assert evaluate(expr, negation=True) == Fraction(value), line
        values.append(Fraction(value))
    return values


# --- the registry and the shared contract -----------------------------------------------


def test_registry_holds_every_family() -> None:
    assert set(SOURCES) == {*REASONING, *NON_REASONING}
    for name, source in SOURCES.items():
        assert source.name == name


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_same_arguments_give_the_same_tasks(name: str) -> None:
    for difficulty in (1, 3):
        assert tasks(name, 15, 7, difficulty) == tasks(name, 15, 7, difficulty)


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_generation_is_prefix_stable(name: str) -> None:
    assert tasks(name, 25, 3, 2)[:10] == tasks(name, 10, 3, 2)


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_seeds_and_difficulties_change_the_draw(name: str) -> None:
    base = [t.prompt for t in tasks(name, 20, 0, 1)]
    assert base != [t.prompt for t in tasks(name, 20, 1, 1)]
    assert base != [t.prompt for t in tasks(name, 20, 0, 2)]


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_task_fields_and_solution_format(name: str) -> None:
    reasoning = name in REASONING
    for difficulty in (1, 2, MAX_DIFFICULTY):
        for index, task in enumerate(tasks(name, 20, 5, difficulty)):
            assert task.prompt_id == f"{name}-d{difficulty}-s5-{index}"
            assert (task.source, task.difficulty) == (name, difficulty)
            assert task.domain == ("math" if reasoning else "general")
            assert task.track == ("reasoning" if reasoning else "non_reasoning")
            assert task.prompt and task.gold
            think, answer = split_solution(task)
            # R1 answers non-reasoning prompts with an empty think block.
            assert bool(think) == reasoning
            assert answer.strip() == answer and "\n" not in answer


def test_prompt_ids_are_unique_in_a_large_batch() -> None:
    batch = list(generate_mixture({name: 125 for name in SOURCES}, seed=11, difficulty=1))
    assert len(batch) == 1000
    assert len({t.prompt_id for t in batch}) == 1000


@pytest.mark.parametrize(
    ("n", "seed", "difficulty", "error"),
    [
        (-1, 0, 1, ValueError),
        (5, 0, 0, ValueError),
        (5, 0, MAX_DIFFICULTY + 1, ValueError),
        (5, 0, True, TypeError),
        (5, "0", 1, TypeError),
        (2.0, 0, 1, TypeError),
    ],
)
def test_bad_arguments_fail_at_the_call(n: int, seed: int, difficulty: int, error: type) -> None:
    # Raised by generate() itself, before any task is drawn.
    with pytest.raises(error):
        SOURCES["toy-arithmetic"].generate(n, seed, difficulty)


def test_render_pretraining_text_is_prompt_then_solution() -> None:
    task = tasks("toy-arithmetic", 1)[0]
    assert render_pretraining_text(task) == f"{task.prompt}\n{task.solution}"


# --- mixtures --------------------------------------------------------------------------


def test_mixture_is_each_family_prefix_in_a_seeded_order() -> None:
    counts = {"toy-countdown": 12, "toy-facts": 5, "toy-linear": 8}
    mixed = list(generate_mixture(counts, seed=4, difficulty=2))
    reordered = list(generate_mixture(dict(reversed(counts.items())), seed=4, difficulty=2))
    assert mixed == reordered
    assert Counter(t.source for t in mixed) == counts
    for name, count in counts.items():
        assert {t for t in mixed if t.source == name} == set(tasks(name, count, 4, 2))
    # Shuffled, not one family after another.
    assert [t.source for t in mixed] != sorted(t.source for t in mixed)
    assert mixed != list(generate_mixture(counts, seed=5, difficulty=2))


def test_mixture_rejects_unknown_sources_and_bad_counts() -> None:
    with pytest.raises(KeyError, match="toy-poetry"):
        generate_mixture({"toy-poetry": 3}, seed=0, difficulty=1)
    with pytest.raises(ValueError, match="toy-facts"):
        generate_mixture({"toy-facts": -2}, seed=0, difficulty=1)


# --- arithmetic --------------------------------------------------------------------------


@pytest.mark.parametrize("difficulty", [1, 2, 3, 4])
def test_arithmetic_steps_recompute_to_the_gold(difficulty: int) -> None:
    golds = []
    for task in tasks("toy-arithmetic", 100, 0, difficulty):
        think, answer = split_solution(task)
        values = check_steps(think)
        # Difficulty d takes exactly d + 1 steps.
        assert len(values) == difficulty + 1, task.solution
        assert str(values[-1]) == task.gold == answer
        assert values[-1] >= 0
        golds.append(Fraction(task.gold))
    fractional = [g for g in golds if g.denominator != 1]
    if difficulty < 3:
        assert not fractional
    else:
        assert fractional, "from difficulty 3 some answers are fractions"


def test_arithmetic_difficulty_one_keeps_small_operands() -> None:
    for task in tasks("toy-arithmetic", 200):
        if task.prompt.startswith(("What is", "Compute", "Calculate")):
            assert all(1 <= int(n) <= 20 for n in re.findall(r"\d+", task.prompt)), task.prompt


def test_arithmetic_uses_varied_templates() -> None:
    markers = {
        "bare": r"^(What is|Compute|Calculate) \d",
        "collection": r" has \d+ ",
        "shopping": r" costs? ",
        "travel": r" km per hour ",
        "sharing": r"shared equally",
    }
    seen: Counter[str] = Counter()
    for task in tasks("toy-arithmetic", 200, 2, 2):
        hits = [kind for kind, pattern in markers.items() if re.search(pattern, task.prompt)]
        assert len(hits) == 1, (hits, task.prompt)
        seen[hits[0]] += 1
    assert set(seen) == set(markers)


# --- countdown ---------------------------------------------------------------------------


@pytest.mark.parametrize("difficulty", [1, 2, 3, 5])
def test_countdown_answers_reach_the_target_with_the_given_numbers(difficulty: int) -> None:
    for task in tasks("toy-countdown", 100, 1, difficulty):
        gold = json.loads(task.gold)
        target, numbers = gold["target"], gold["numbers"]
        assert set(gold) == {"target", "numbers"}
        assert len(numbers) == difficulty + 2
        assert 1 <= target <= 100 * difficulty and target not in numbers
        assert str(target) in task.prompt and json.dumps(numbers) in task.prompt
        think, answer = split_solution(task)
        used: list[int] = []
        assert evaluate(answer, used) == target, task.solution
        # Each given number at most once (a repeated number may be used as often as given).
        assert not Counter(used) - Counter(numbers), (used, numbers)
        values = check_steps(think)
        assert len(values) == len(numbers) - 1 and values[-1] == target
        assert all(v.denominator == 1 and v > 0 for v in values)


@pytest.mark.parametrize(
    "hostile", ["__import__('os')", "2**10", "(1).real", "[1][0]", "-3+5", "1.5*2"]
)
def test_expression_checker_refuses_anything_but_integer_arithmetic(hostile: str) -> None:
    with pytest.raises(ValueError):
        evaluate(hostile)


# --- linear ------------------------------------------------------------------------------

EQUATION_LINE = re.compile(r"^[0-9xyz+\-/() ]+=[0-9xyz+\-/() ]+$")
# `3x`, `(5/2)y`: the equations write products by juxtaposition.
IMPLICIT_PRODUCT = re.compile(r"(?<=[\d)])(?=[xyz])")


def linear_value(text: str, point: Mapping[str, Fraction]) -> Fraction:
    return evaluate(IMPLICIT_PRODUCT.sub("*", text), names=point, negation=True)


def solve_prompt(equations: list[str], names: tuple[str, ...]) -> list[Fraction]:
    """Read each equation's coefficients by evaluating it, then solve with sympy."""
    zero = dict.fromkeys(names, Fraction(0))

    def residual(equation: str, point: Mapping[str, Fraction]) -> Fraction:
        lhs, rhs = equation.split("=")
        return linear_value(lhs, point) - linear_value(rhs, point)

    matrix, constants = [], []
    for equation in equations:
        constant = residual(equation, zero)
        matrix.append([residual(equation, {**zero, n: Fraction(1)}) - constant for n in names])
        constants.append(-constant)
    system = sympy.Matrix(matrix)
    assert system.det() != 0, equations
    solution = system.LUsolve(sympy.Matrix(constants))
    return [Fraction(int(v.p), int(v.q)) for v in solution]


def linear_gold(task: Task) -> dict[str, Fraction]:
    if task.difficulty == 1:
        return {"x": Fraction(task.gold)}
    match = re.fullmatch(r"\((.+)\) = \((.+)\)", task.gold)
    assert match, task.gold
    names, values = match.group(1).split(", "), match.group(2).split(", ")
    return {n: Fraction(v) for n, v in zip(names, values, strict=True)}


@pytest.mark.parametrize("difficulty", [1, 2, 3, 4])
def test_linear_gold_solves_the_prompt_and_every_step_holds(difficulty: int) -> None:
    size = {1: 1, 2: 2}.get(difficulty, 3)
    for task in tasks("toy-linear", 60, 2, difficulty):
        equations = [line for line in task.prompt.splitlines() if EQUATION_LINE.match(line)]
        assert len(equations) == size, task.prompt
        gold = linear_gold(task)
        assert tuple(gold) == ("x", "y", "z")[:size]
        assert solve_prompt(equations, tuple(gold)) == list(gold.values()), task.prompt
        think, answer = split_solution(task)
        assert answer == task.gold
        for line in think.splitlines():
            if ": " not in line:
                assert "=" not in line, line
                continue
            # Every equation a step states holds at the solution.
            for chain in line.split(": ", 1)[1].rstrip(".").split(", "):
                sides = [linear_value(side, gold) for side in chain.split(" = ")]
                assert len(sides) >= 2 and all(side == sides[0] for side in sides), line


# --- algebra -----------------------------------------------------------------------------


# Sides of the algebra steps are ratios of polynomials in x; up to difficulty 5 the
# numerators have degree <= 6 and the denominators, products of at most three
# linear factors, degree <= 3. Two such sides that differ agree at no more than
# 9 points, and at most 3 of these 17 points are poles, so agreeing at every
# point that is not a pole proves an identity, exactly and without sympy.
POINTS = [Fraction(v) for v in range(-8, 9)]


def same_function(a: str, b: str) -> bool:
    checked = 0
    for x in POINTS:
        try:
            values = [evaluate(s, names={"x": x}, negation=True, powers=True) for s in (a, b)]
        except ZeroDivisionError:
            continue
        if values[0] != values[1]:
            return False
        checked += 1
    assert checked >= len(POINTS) - 3
    return True


def sympify(text: str) -> sympy.Expr:
    return parse_expr(text, local_dict={"x": sympy.Symbol("x")})


@pytest.mark.parametrize("difficulty", [1, 2, 3, 4, 5])
def test_algebra_gold_equals_the_expression_and_every_step_holds(difficulty: int) -> None:
    x = sympy.Symbol("x")
    for task in tasks("toy-algebra", 30, 3, difficulty):
        expression = task.prompt.splitlines()[-1]
        assert same_function(task.gold, expression), task.prompt
        gold = sympify(task.gold)
        # The gold is written the way sympy writes it, so it is canonical.
        assert sympy.sstr(gold) == task.gold
        think, answer = split_solution(task)
        assert answer == task.gold and think.endswith(f"= {task.gold}.")
        for line in think.splitlines():
            sides = line.split(": ")[-1].rstrip(".").split(" = ")
            assert len(sides) >= 2, line
            assert all(same_function(side, sides[0]) for side in sides[1:]), line
        # The shape grows with difficulty: cancelling fractions from 3, cubics from 4.
        if difficulty <= 2:
            assert "/" not in expression
        if difficulty == 3:
            assert "/" in expression
        degree = sympy.degree(gold, x)
        assert degree == 3 if difficulty >= 4 else 1 <= degree <= 2


def test_algebra_gold_passes_sympy_simplify() -> None:
    for difficulty in range(1, 6):
        for task in tasks("toy-algebra", 4, 9, difficulty):
            original = sympify(task.prompt.splitlines()[-1])
            assert sympy.simplify(sympify(task.gold) - original) == 0, task.prompt


# --- non-reasoning -----------------------------------------------------------------------


def test_bundled_tables_are_complete() -> None:
    facts, words = load_table("facts.tsv"), load_table("words.tsv")
    assert len(facts) >= 60 and all(len(row) == 2 for row in facts)
    assert len(words) >= 80 and all(len(row) == 4 for row in words)
    assert len({q for q, _ in facts}) == len(facts)
    assert len({row[0] for row in words}) == len(words)


def test_facts_answer_their_question() -> None:
    table = {question: answer for question, answer in load_table("facts.tsv")}
    for task in tasks("toy-facts", 200):
        question = next(q for q in table if task.prompt.endswith(q))
        assert task.gold == table[question]


@pytest.mark.parametrize("difficulty", [1, 2, 4])
def test_translations_come_from_the_right_column(difficulty: int) -> None:
    rows = {row[0]: row for row in load_table("words.tsv")}
    columns = {"French": 1, "Spanish": 2, "German": 3}
    for task in tasks("toy-translation", 100, 0, difficulty):
        language = next(lang for lang in columns if lang in task.prompt)
        if difficulty == 1:
            quoted = re.search(r'"(.+)"', task.prompt)
            assert quoted, task.prompt
            asked = [quoted.group(1)]
        else:
            asked = task.prompt.rsplit(": ", 1)[1].rstrip(".").split(", ")
        assert len(asked) == difficulty
        assert task.gold == ", ".join(rows[w][columns[language]] for w in asked)


def test_greetings_and_self_cognition_have_fixed_references() -> None:
    for name in ("toy-greeting", "toy-self-cognition"):
        pairs = {(t.prompt, t.gold) for t in tasks(name, 100)}
        # Each prompt always gets the same reference reply.
        assert len({p for p, _ in pairs}) == len(pairs) >= 4
    who = [t for t in tasks("toy-self-cognition", 100) if t.prompt == "Who are you?"]
    assert who and "r1-factory" in who[0].gold
