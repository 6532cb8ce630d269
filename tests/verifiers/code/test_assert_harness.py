"""Assert tests run in a harness process apart from the program: what crosses between them
(plain data both ways, handles to the program's objects), what a correct program still does,
and how each way of failing is judged. The forgeries are in test_adversarial.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from verifiers.code import CodeVerdict, Run, SandboxConfig, SandboxPool, verify_code


@pytest.fixture(scope="module")
def pool(uid_base: int) -> Iterator[SandboxPool]:
    config = SandboxConfig(memory_bytes=256 << 20, uid_base=uid_base + 50)
    with SandboxPool(workers=2, config=config) as p:
        yield p


def judge(pool: SandboxPool, code: str, tests: str, entry_point: str = "f") -> CodeVerdict:
    spec = {"kind": "assert", "code": tests, "entry_point": entry_point}
    return verify_code(code, spec, pool, timeout=10.0)


PASSED = CodeVerdict("correct", "passed")

ECHO_TESTS = """
import math
values = [
    None, True, False, 0, -7, 2 ** 200, -(3 ** 90), 1.5, -0.0, float("inf"), 1e-300,
    "", "h\\u00e9llo \\U0001f600", b"\\x00\\xff", 2 - 3j, [1, [2, [3]]], (1, (2,)),
    {1, 2}, frozenset({"a"}), {"a": 1, (1, 2): [3], 4: {"b": None}},
]
for value in values:
    back = f(value)
    assert back == value and type(back) is type(value), (value, back)
assert math.copysign(1.0, f(-0.0)) == -1.0
assert math.isnan(f(float("nan")))
assert f(bytearray(b"ab")) == b"ab"  # bytes-like data crosses as bytes
assert f(x=5) == 5
"""


def test_plain_data_crosses_unchanged(pool: SandboxPool) -> None:
    assert judge(pool, "def f(x):\n    return x\n", ECHO_TESTS) == PASSED


def test_check_candidate_and_helpers_of_the_program(pool: SandboxPool) -> None:
    # HumanEval's shape: a check function, and a helper of the prompt the tests call too.
    code = "def poly(xs, x):\n    return sum(c * x ** i for i, c in enumerate(xs))\n"
    code += "def f(xs):\n    return -xs[0] / xs[1]\n"
    tests = "def check(candidate):\n    assert abs(poly([2, 4], candidate([2, 4]))) < 1e-9\n"
    assert judge(pool, code, tests) == PASSED


def test_objects_of_the_program_travel_as_handles(pool: SandboxPool) -> None:
    # MBPP's shape: the tests build the program's own class and hand the objects back.
    code = (
        "class Pair:\n"
        "    def __init__(self, a, b):\n"
        "        self.a, self.b = a, b\n"
        "    def span(self):\n"
        "        return self.b - self.a\n"
        "def f(pairs):\n"
        "    return max(p.span() for p in pairs)\n"
        "def counter(n):\n"
        "    yield from range(n)\n"
        "def table():\n"
        "    return {'rows': [Pair(1, 4)]}\n"
    )
    tests = (
        "p = Pair(5, 24)\n"
        "assert p.a == 5 and p.span() == 19\n"
        "assert f([p, Pair(15, 25)]) == 19\n"
        "assert list(counter(3)) == [0, 1, 2]\n"
        "assert 2 in counter(3)\n"
        "assert table()['rows'][0].span() == 3\n"
    )
    assert judge(pool, code, tests) == PASSED


def test_exceptions_of_the_program_reach_the_tests(pool: SandboxPool) -> None:
    code = "def f(x):\n    if x < 0:\n        raise ValueError('negative')\n    return x\n"
    tests = (
        "try:\n    f(-1)\nexcept ValueError as exc:\n    assert 'negative' in str(exc)\n"
        "else:\n    raise AssertionError('no ValueError')\n"
    )
    assert judge(pool, code, tests) == PASSED
    custom = "class Oops(Exception):\n    pass\ndef f(x):\n    raise Oops('x')\n"
    verdict = judge(pool, custom, "f(1)\n")
    assert (verdict.verdict, verdict.detail) == ("incorrect", "runtime_error")
    assert "Oops" in verdict.message
    failing = judge(pool, "def f(x):\n    assert x > 0\n    return x\n", "f(-1)\n")
    assert (failing.verdict, failing.detail) == ("incorrect", "wrong_answer")


def test_modules_the_program_imported_are_there_for_the_tests(pool: SandboxPool) -> None:
    code = "import math\nfrom collections import Counter\ndef f(x):\n    return math.sqrt(x)\n"
    tests = "assert math.isclose(f(2.0), 1.4142135623730951)\nassert Counter('aa')['a'] == 2\n"
    assert judge(pool, code, tests) == PASSED


def test_only_data_crosses_into_the_program(pool: SandboxPool) -> None:
    verdict = judge(pool, "def f(g):\n    return g(1)\n", "assert f(lambda v: v + 1) == 2\n")
    assert (verdict.verdict, verdict.detail) == ("incorrect", "runtime_error")
    assert "only plain data" in verdict.message


@pytest.mark.parametrize(
    ("code", "detail", "message"),
    [
        ("def f(x:\n    return x\n", "syntax_error", "SyntaxError"),
        ("def g(x):\n    return x\n", "missing_entry_point", "f"),
        ("raise KeyError('at import')\ndef f(x):\n    return x\n", "runtime_error", "KeyError"),
        ("import sys\nsys.exit(0)\ndef f(x):\n    return x\n", "runtime_error", "exited"),
        ("import os\ndef f(x):\n    os._exit(3)\n", "runtime_error", "exit status 3"),
        ("def f(x):\n    return f(x)\n", "runtime_error", "RecursionError"),
        ("def f(x):\n    return bytearray(1 << 30)\n", "memory_limit", "MemoryError"),
    ],
    ids=[
        "syntax",
        "no-entry-point",
        "raises-at-import",
        "exits-at-import",
        "exits-in-call",
        "recursion",
        "memory",
    ],
)
def test_failures_are_judged(pool: SandboxPool, code: str, detail: str, message: str) -> None:
    verdict = judge(pool, code, "assert f(1) == 1\n")
    assert (verdict.verdict, verdict.detail) == ("incorrect", detail), verdict
    assert message in verdict.message, verdict


def test_a_program_that_never_answers_times_out(pool: SandboxPool) -> None:
    spec = {"kind": "assert", "code": "assert f(1) == 1\n", "entry_point": "f"}
    verdict = verify_code("def f(x):\n    while True:\n        pass\n", spec, pool, timeout=1.0)
    assert (verdict.verdict, verdict.detail) == ("incorrect", "timeout")


def test_tests_that_swallow_the_program_leaving_still_fail(pool: SandboxPool) -> None:
    tests = "try:\n    f(1)\nexcept:\n    pass\n"
    verdict = judge(pool, "import os\ndef f(x):\n    os._exit(0)\n", tests)
    assert (verdict.verdict, verdict.detail) == ("incorrect", "runtime_error"), verdict


def test_the_program_prints_to_the_captured_stdout(pool: SandboxPool) -> None:
    code = "print('loading')\ndef f(x):\n    print('called with', x)\n    return x\n"
    result = pool.run(Run("assert", code, 10.0, tests="assert f(4) == 4\n", entry_point="f"))
    assert result.report is not None and result.report["status"] == "passed"
    assert result.stdout == b"loading\ncalled with 4\n"
