"""`verify_jsonl`, the function behind `r1f verify code`: streaming, order, pass-through, bad rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from verifiers.code.batch import verify_jsonl

ADD = {
    "kind": "stdio",
    "cases": [{"input": "2 3\n", "output": "5"}, {"input": "1 1", "output": "2"}],
}
SQUARE = {
    "kind": "assert",
    "code": "def check(candidate):\n    assert candidate(3) == 9\n",
    "entry_point": "sq",
}


def write_jsonl(path: Path, lines: list[Any]) -> None:
    path.write_text(
        "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_verdicts_in_input_order_with_fields_passed_through(tmp_path: Path) -> None:
    rows: list[Any] = []
    for i in range(30):
        good = i % 3 != 0
        if i % 2:
            body = "a, b = map(int, input().split())\nprint(a + b)" if good else "print(0)"
            rows.append({"id": i, "completion": f"```python\n{body}\n```", "tests": ADD})
        else:
            body = "def sq(x):\n    return x * x" if good else "def sq(x):\n    return x + x"
            rows.append({"id": i, "completion": body, "tests": SQUARE, "extra": {"k": [i]}})
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(source, rows)
    advanced: list[int] = []
    summary = verify_jsonl(source, target, workers=2, timeout=5.0, progress=advanced.append)
    out = read_jsonl(target)
    assert [r["id"] for r in out] == list(range(30))
    for row, result in zip(rows, out, strict=True):
        assert {k: result[k] for k in row} == row  # every input field, unchanged
        expected = "correct" if row["id"] % 3 != 0 else "incorrect"
        assert result["verdict"] == expected, result
        assert result["detail"] == ("passed" if expected == "correct" else "wrong_answer")
    assert sum(advanced) == 30 and set(advanced) == {1}
    assert summary["rows"] == 30
    assert (summary["correct"], summary["incorrect"], summary["unverifiable"]) == (20, 10, 0)
    assert summary["details"] == {"passed": 20, "wrong_answer": 10}


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "invalid JSON (Expecting property name"),
        ('"\\ud800"', "expected a JSON object, got a string"),
        ('{"completion": "\\udc00", "tests": 1}', "lone surrogate \\udc00"),
        ("[1, 2]", "expected a JSON object, got an array"),
        ({"tests": ADD}, "completion: expected a string"),
        ({"completion": 3, "tests": ADD}, "completion: expected a string"),
        ({"completion": "print(1)"}, "tests: missing"),
        ({"completion": "print(1)", "tests": "print"}, "tests: expected an object"),
        ({"completion": "print(1)", "tests": {"kind": "fuzz"}}, "tests.kind: expected"),
        ({"completion": "print(1)", "tests": {"kind": "stdio", "cases": []}}, "tests.cases"),
        (
            {"completion": "x", "tests": {"kind": "stdio", "cases": [{"input": "1"}]}},
            "tests.cases[0].output: expected a string",
        ),
        (
            {"completion": "x", "tests": {"kind": "assert", "code": "pass", "entry_point": "a b"}},
            "tests.entry_point: expected a Python identifier",
        ),
        (
            {"completion": "x", "tests": {"kind": "assert", "entry_point": "f"}},
            "tests.code: expected a non-empty string",
        ),
    ],
)
def test_malformed_rows_are_bad_input(tmp_path: Path, line: Any, problem: str) -> None:
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    good = {
        "completion": "print(2)",
        "tests": {"kind": "stdio", "cases": [{"input": "", "output": "2"}]},
    }
    write_jsonl(source, [good, line, "", good])  # the blank line is not a row
    summary = verify_jsonl(source, target, workers=1, timeout=5.0)
    first, bad, last = read_jsonl(target)
    assert first["verdict"] == last["verdict"] == "correct"
    assert (bad["verdict"], bad["detail"]) == ("unverifiable", "bad_input")
    assert bad["message"].startswith("line 2: ") and problem in bad["message"]
    if isinstance(line, str):
        assert bad["raw"] == line  # kept, so no input row is lost
    assert summary["details"] == {"bad_input": 1, "passed": 2}


def test_arguments_are_checked(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("")
    with pytest.raises(ValueError, match="workers"):
        verify_jsonl(source, tmp_path / "out.jsonl", workers=0, timeout=1.0)
    with pytest.raises(ValueError, match="timeout"):
        verify_jsonl(source, tmp_path / "out.jsonl", workers=1, timeout=0)


def test_empty_input(tmp_path: Path) -> None:
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("")
    summary = verify_jsonl(source, target, workers=1, timeout=1.0)
    assert summary["rows"] == 0 and target.read_text() == ""
