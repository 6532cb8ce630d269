"""Stdio tests: the comparison rules, code extraction, and stdio programs run in the sandbox."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from verifiers.code import (
    CodeVerdict,
    SandboxPool,
    extract_code,
    first_difference,
    outputs_match,
    verify_code,
)


@pytest.fixture(scope="module")
def pool() -> Iterator[SandboxPool]:
    with SandboxPool(workers=2) as p:
        yield p


def stdio(
    pool: SandboxPool, code: str, *cases: tuple[str, str], timeout: float = 5.0
) -> CodeVerdict:
    tests = {"kind": "stdio", "cases": [{"input": i, "output": o} for i, o in cases]}
    return verify_code(code, tests, pool, timeout=timeout)


# ---------------------------------------------------------------- comparison rules


@pytest.mark.parametrize(
    ("actual", "expected"),
    [
        ("3\n", "3"),
        ("3", "3\n"),
        ("1 2 3   \n", "1 2 3"),  # trailing spaces
        ("a\r\nb\r\n", "a\nb\n"),  # CRLF
        ("x\n\n\n", "x"),  # trailing empty lines
        ("", ""),
        ("\n\n", ""),
        ("0.3333333\n", "0.333333"),  # within 1e-6
        ("1000000.4\n", "1000000.0"),  # relative above 1
        (".5", "0.5"),
        ("1e-3 2", "0.001 2"),
        ("2.0", "2.0000001"),
    ],
)
def test_outputs_that_match(actual: str, expected: str) -> None:
    assert outputs_match(actual, expected), first_difference(actual, expected)


@pytest.mark.parametrize(
    ("actual", "expected"),
    [
        ("4\n", "3"),
        ("\n3", "3"),  # a leading empty line counts
        (" 3", "3"),  # leading whitespace counts
        ("1  2", "1 2"),  # so does the spacing between tokens
        ("1\t2", "1 2"),
        ("10.0", "10"),  # an integer answer asks for an integer
        ("0.33", "0.333333"),  # outside the tolerance
        ("1_000.0", "1000.0"),  # float() would accept it; the rules do not
        ("nan", "0.5"),
        ("3\n4", "3"),
        ("3", "3\n4"),
        ("YES", "yes"),
    ],
)
def test_outputs_that_differ(actual: str, expected: str) -> None:
    assert not outputs_match(actual, expected)


def test_first_difference_names_the_line() -> None:
    assert first_difference("1\n2\n5\n", "1\n2\n3\n") == "line 3: expected '3', got '5'"
    assert first_difference("1\n", "1\n2\n") == "expected 2 lines, got 1"


def test_float_tolerance_is_a_parameter() -> None:
    assert not outputs_match("0.3333", "0.333333")
    assert outputs_match("0.3333", "0.333333", float_tol=1e-3)


# ---------------------------------------------------------------- code extraction


def test_extract_takes_the_last_fenced_block() -> None:
    text = "<think>try\n```python\nprint(1)\n```\n</think>\nFinal:\n```python\nprint(2)\n```\nDone."
    assert extract_code(text) == "print(2)\n"


def test_extract_takes_the_whole_text_without_a_fence() -> None:
    assert extract_code("print(3)\n") == "print(3)\n"


def test_extract_accepts_tildes_and_bare_fences() -> None:
    assert extract_code("~~~\nx = 1\n~~~") == "x = 1\n"
    assert extract_code("```\nx = 2\n```") == "x = 2\n"


# ---------------------------------------------------------------- programs in the sandbox


def test_correct_program_passes_every_case(pool: SandboxPool) -> None:
    code = "```python\nn = int(input())\nprint(sum(map(int, input().split())) * n)\n```"
    verdict = stdio(pool, code, ("2\n1 2 3\n", "12"), ("0\n5\n", "0\n"), ("1\n-1 1\n", "0"))
    assert verdict == CodeVerdict("correct", "passed")


def test_first_failing_case_decides(pool: SandboxPool) -> None:
    verdict = stdio(pool, "print(int(input()) + 1)", ("1", "2"), ("5", "7"), ("x", "0"))
    assert (verdict.verdict, verdict.detail) == ("incorrect", "wrong_answer")
    assert verdict.message.startswith("case 1: line 1")


def test_float_output_within_tolerance(pool: SandboxPool) -> None:
    assert stdio(pool, "print(1/3)", ("", "0.333333")).verdict == "correct"


def test_large_input_and_output(pool: SandboxPool) -> None:
    numbers = " ".join(str(i) for i in range(100_000))
    code = "import sys\nfor x in sys.stdin.read().split():\n    print(x)"
    expected = "\n".join(str(i) for i in range(100_000))
    assert stdio(pool, code, (numbers, expected)).verdict == "correct"


def test_runtime_error_after_correct_output(pool: SandboxPool) -> None:
    verdict = stdio(pool, "print(3)\nraise ValueError('late')", ("", "3"))
    assert (verdict.verdict, verdict.detail) == ("incorrect", "runtime_error")
    assert "ValueError: late" in verdict.message


def test_exit_status_counts(pool: SandboxPool) -> None:
    assert stdio(pool, "import sys\nprint(3)\nsys.exit(0)\nprint(4)", ("", "3")).verdict == (
        "correct"
    )
    verdict = stdio(pool, "import sys\nprint(3)\nsys.exit(2)", ("", "3"))
    assert (verdict.detail, verdict.message) == ("runtime_error", "exit status 2")


def test_syntax_error(pool: SandboxPool) -> None:
    verdict = stdio(pool, "print(1", ("", "1"))
    assert (verdict.verdict, verdict.detail) == ("incorrect", "syntax_error")


def test_program_runs_as_main_and_may_use_a_thread(pool: SandboxPool) -> None:
    # The competitive-programming idiom: a bigger stack in a thread, output from it.
    code = (
        "import sys, threading\n"
        "def main():\n"
        "    sys.setrecursionlimit(100000)\n"
        "    f = lambda n: 0 if n == 0 else 1 + f(n - 1)\n"
        "    print(f(20000))\n"
        "if __name__ == '__main__':\n"
        "    threading.stack_size(64 * 1024 * 1024)\n"
        "    threading.Thread(target=main).start()\n"
    )
    assert stdio(pool, code, ("", "20000")).verdict == "correct"


def test_unread_input_is_fine(pool: SandboxPool) -> None:
    assert stdio(pool, "print('ok')", ("x\n" * 200_000, "ok")).verdict == "correct"


def test_program_sees_no_input_beyond_the_case(pool: SandboxPool) -> None:
    code = "import sys\nprint(repr(sys.stdin.read()))"
    assert stdio(pool, code, ("a\nb", "'a\\nb'")).verdict == "correct"


def test_r1_format_completions_are_searched_in_the_answer_block():
    from verifiers.code import extract_code

    fenced = "<think>try `x`\n```python\nprint('draft')\n```</think><answer>```python\nprint(2)\n```</answer>"
    assert extract_code(fenced) == "print(2)\n"
    bare = "<think>easy</think><answer>print(3)</answer>"
    assert extract_code(bare) == "print(3)"
