"""From a completion and its tests to a verdict: extraction, test specs, outcome rules.

A verdict is `correct`, `incorrect` or `unverifiable`, with a `detail`:

| detail              | verdict      | meaning                                                  |
|---------------------|--------------|----------------------------------------------------------|
| passed              | correct      | every stdio case matched / the assert tests returned     |
| wrong_answer        | incorrect    | output differs / an assertion failed                     |
| runtime_error       | incorrect    | an exception, a non-zero exit, a fatal signal            |
| syntax_error        | incorrect    | the code does not compile                                |
| missing_entry_point | incorrect    | assert tests: the code defines no `entry_point`          |
| timeout             | incorrect    | wall-clock deadline or CPU limit                         |
| memory_limit        | incorrect    | MemoryError, or the run's total memory over the limit    |
| output_limit        | incorrect    | stdout over its cap, or too many files written           |
| bad_input           | unverifiable | the row's tests are malformed (`message` names the field)|
| sandbox_error       | unverifiable | the sandbox itself failed, after a retry                 |
"""

from __future__ import annotations

import re
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from verifiers.code.compare import DEFAULT_FLOAT_TOL, first_difference
from verifiers.code.sandbox import Run, RunResult, SandboxError, SandboxPool
from verifiers.format import parse_r1

# A fence line: three or more backticks or tildes, an optional info string.
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})[^\n`]*\n(.*?)^ {0,3}\1[`~]*[ \t]*$", re.M | re.S)
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Enough to show why a run failed without carrying its whole stderr along.
MESSAGE_CHARS = 500


class BadInput(ValueError):
    """A row whose tests cannot be run; the message names the offending field."""


@dataclass(frozen=True)
class CodeVerdict:
    verdict: Literal["correct", "incorrect", "unverifiable"]
    detail: str
    message: str = ""


@dataclass(frozen=True)
class StdioCase:
    input: str
    output: str


@dataclass(frozen=True)
class TestSpec:
    """Parsed `tests` of a row: stdio cases, or assert-style test code with an entry point."""

    kind: Literal["stdio", "assert"]
    cases: tuple[StdioCase, ...] = ()
    code: str = ""
    entry_point: str = ""


def extract_code(completion: str) -> str:
    """The code in the last fenced block of `completion`, or the whole text if it has none.

    An R1-format completion is searched in its `<answer>` block only: code in
    the reasoning is the model thinking aloud, and `<answer>```python` puts
    the fence where a Markdown fence could not otherwise start.
    """
    _, answer = parse_r1(completion)
    text = answer if answer else completion
    blocks = FENCE.findall(text)
    return blocks[-1][1] if blocks else text


def parse_tests(tests: Any) -> TestSpec:
    """Validate a row's `tests` (ARCHITECTURE.md, `r1f verify code`); BadInput says what is wrong."""
    if not isinstance(tests, Mapping):
        raise BadInput(f"tests: expected an object, got {type(tests).__name__}")
    kind = tests.get("kind")
    if kind == "stdio":
        cases = tests.get("cases")
        if not isinstance(cases, list) or not cases:
            raise BadInput("tests.cases: expected a non-empty list of {input, output}")
        parsed = []
        for i, case in enumerate(cases):
            if not isinstance(case, Mapping):
                raise BadInput(f"tests.cases[{i}]: expected an object, got {type(case).__name__}")
            for key in ("input", "output"):
                if not isinstance(case.get(key), str):
                    raise BadInput(f"tests.cases[{i}].{key}: expected a string")
            parsed.append(StdioCase(case["input"], case["output"]))
        return TestSpec("stdio", cases=tuple(parsed))
    if kind == "assert":
        code, entry_point = tests.get("code"), tests.get("entry_point")
        if not isinstance(code, str) or not code.strip():
            raise BadInput("tests.code: expected a non-empty string of test code")
        if not isinstance(entry_point, str) or not IDENTIFIER.fullmatch(entry_point):
            raise BadInput(f"tests.entry_point: expected a Python identifier, got {entry_point!r}")
        return TestSpec("assert", code=code, entry_point=entry_point)
    raise BadInput(f"tests.kind: expected 'stdio' or 'assert', got {kind!r}")


def verify_code(
    completion: str,
    tests: Any,
    pool: SandboxPool,
    *,
    timeout: float,
    float_tol: float = DEFAULT_FLOAT_TOL,
) -> CodeVerdict:
    """Run the completion's code against `tests` in the sandbox and judge it.

    `timeout` is the wall-clock limit of one run: each stdio case, or the
    whole assert run. Stdio cases run in order, each in a fresh process, and
    the first failing case decides.
    """
    try:
        spec = parse_tests(tests)
    except BadInput as exc:
        return CodeVerdict("unverifiable", "bad_input", str(exc))
    if not isinstance(completion, str):
        return CodeVerdict("unverifiable", "bad_input", "completion: expected a string")
    code = extract_code(completion)
    try:
        if spec.kind == "assert":
            result = pool.run(
                Run("assert", code, timeout, tests=spec.code, entry_point=spec.entry_point)
            )
            return judge_assert(result)
        for number, case in enumerate(spec.cases):
            result = pool.run(Run("stdio", code, timeout, stdin=case.input))
            verdict = judge_stdio(result, case.output, float_tol)
            if verdict.verdict != "correct":
                where = f"case {number}" if len(spec.cases) > 1 else ""
                message = f"{where}: {verdict.message}" if where else verdict.message
                return CodeVerdict(verdict.verdict, verdict.detail, message)
        return CodeVerdict("correct", "passed")
    except SandboxError as exc:
        return CodeVerdict("unverifiable", "sandbox_error", _clip(str(exc)))


def judge_stdio(result: RunResult, expected: str, float_tol: float) -> CodeVerdict:
    failed = _failure(result)
    if failed is not None:
        return failed
    if result.exit_code != 0:
        return _incorrect("runtime_error", f"exit status {result.exit_code}", result)
    actual = result.stdout.decode("utf-8", errors="replace")
    difference = first_difference(actual, expected, float_tol)
    if difference is not None:
        return CodeVerdict("incorrect", "wrong_answer", _clip(difference))
    return CodeVerdict("correct", "passed")


def judge_assert(result: RunResult) -> CodeVerdict:
    failed = _failure(result)
    if failed is not None:
        return failed
    report = result.report
    if report is not None and report.get("status") == "passed" and result.exit_code == 0:
        return CodeVerdict("correct", "passed")
    if result.tampered:
        return CodeVerdict("incorrect", "runtime_error", "the harness's report was forged")
    if result.exit_code not in (0, None):
        return _incorrect("runtime_error", f"exit status {result.exit_code}", result)
    return _incorrect("runtime_error", "exited before the tests finished", result)


def _failure(result: RunResult) -> CodeVerdict | None:
    """The verdict when the run did not end normally; None when only the output can tell."""
    if result.timed_out:
        return CodeVerdict("incorrect", "timeout", f"wall-clock limit, {result.wall_s:.1f} s")
    if result.memory_exceeded:
        return CodeVerdict("incorrect", "memory_limit", "total memory of the run over the limit")
    if result.output_exceeded:
        return CodeVerdict("incorrect", "output_limit", "stdout over its cap")
    if result.files_exceeded:
        return CodeVerdict("incorrect", "output_limit", "too many files in /tmp and /dev/shm")
    report = result.report
    if report is not None and report.get("status") == "error":
        detail = str(report.get("detail", "runtime_error"))
        if detail == "program_exited":
            # Assert runs: the program's own process ended while the tests needed it.
            return _program_ended(result, str(report.get("error", "")))
        return CodeVerdict("incorrect", detail, _clip(str(report.get("error", ""))))
    if result.signal is not None:
        return _killed(result.signal, result.cpu_s, result)
    return None


def _killed(number: int, cpu_s: float, result: RunResult) -> CodeVerdict:
    # RLIMIT_CPU sends SIGXCPU, then SIGKILL to a program that ignores it.
    if number == signal.SIGXCPU or (number == signal.SIGKILL and cpu_s >= result.cpu_limit_s):
        return CodeVerdict("incorrect", "timeout", f"CPU time limit, {cpu_s:.1f} s")
    return _incorrect("runtime_error", f"killed by {_signal_name(number)}", result)


def _program_ended(result: RunResult, why: str) -> CodeVerdict:
    if result.program_signal is not None:
        return _killed(result.program_signal, result.program_cpu_s or 0.0, result)
    if result.program_exit_code is not None:
        return _incorrect(
            "runtime_error", f"{why} (exit status {result.program_exit_code})", result
        )
    return _incorrect("runtime_error", why, result)


def _incorrect(detail: str, what: str, result: RunResult) -> CodeVerdict:
    tail = result.stderr.decode("utf-8", errors="replace").strip()
    return CodeVerdict("incorrect", detail, _clip(f"{what}: {tail}" if tail else what, tail=True))


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _clip(text: str, *, tail: bool = False) -> str:
    if len(text) <= MESSAGE_CHARS:
        return text
    return "..." + text[-MESSAGE_CHARS:] if tail else text[:MESSAGE_CHARS] + "..."
