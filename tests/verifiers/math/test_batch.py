"""verify_jsonl: the function behind `r1f verify math`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from verifiers.math.batch import verify_jsonl


def write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_rows_keep_order_and_fields(tmp_path: Path) -> None:
    rows = [
        {"id": 0, "gold": "7/3", "completion": "<answer>14/6</answer>", "extra": [1, 2]},
        {"id": 1, "gold": "\\sqrt{2}", "completion": "\\boxed{\\frac{2}{\\sqrt 2}}"},
        {"id": 2, "gold": "5", "completion": "no answer"},
        {"id": 3, "gold": "@#!", "completion": "\\boxed{5}"},
        {"id": 4, "gold": 12, "completion": "\\boxed{12}"},
    ]
    source = write(tmp_path / "in.jsonl", rows)
    finished: list[int] = []
    summary = verify_jsonl(
        source, tmp_path / "out" / "out.jsonl", timeout=5.0, workers=1, progress=finished.append
    )
    out = [json.loads(line) for line in (tmp_path / "out" / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in out] == [0, 1, 2, 3, 4]
    assert out[0]["extra"] == [1, 2]
    assert [(r["verdict"], r["reason"]) for r in out] == [
        ("correct", "match_exact"),
        ("correct", "match_symbolic"),
        ("incorrect", "no_answer"),
        ("unverifiable", "gold_unparseable"),
        ("correct", "match_exact"),
    ]
    assert out[0]["extracted"] == "14/6"
    assert out[2]["extracted"] is None
    assert summary["rows"] == 5
    assert (summary["correct"], summary["incorrect"], summary["unverifiable"]) == (3, 1, 1)
    assert summary["reasons"]["match_exact"] == 2
    assert sum(finished) == 5


def test_rows_without_gold_or_completion_are_kept(tmp_path: Path) -> None:
    rows = [
        {"completion": "\\boxed{1}"},
        {"gold": None, "completion": "\\boxed{1}"},
        {"gold": "1"},
        {"gold": "1", "completion": ["not", "text"]},
        {"gold": "1", "completion": "\\boxed{1}"},
    ]
    source = write(tmp_path / "in.jsonl", rows)
    summary = verify_jsonl(source, tmp_path / "out.jsonl", timeout=5.0, workers=1)
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in out] == [
        "bad_input: missing 'gold'",
        "bad_input: 'gold' is null",
        "bad_input: missing 'completion'",
        "bad_input: 'completion' is not a string",
        "match_exact",
    ]
    assert summary["unverifiable"] == 4


@pytest.mark.parametrize(
    ("line", "reason", "message"),
    [
        ("{not json", "bad_input: invalid JSON", "invalid JSON (Expecting property name"),
        ("[1, 2]", "bad_input: expected a JSON object, got an array", "got an array"),
        ('{"gold": "\\ud800", "completion": "1"}', "bad_input: invalid JSON", "lone surrogate"),
        (b"\xff{}", "bad_input: not UTF-8", "not UTF-8"),
    ],
)
def test_a_broken_line_gets_a_bad_input_row_and_the_rest_is_judged(
    tmp_path: Path, line: str | bytes, reason: str, message: str
) -> None:
    source = tmp_path / "in.jsonl"
    good = json.dumps({"gold": "1", "completion": "\\boxed{1}"}).encode()
    broken = line if isinstance(line, bytes) else line.encode()
    source.write_bytes(good + b"\n\n" + broken + b"\n" + good + b"\n")
    summary = verify_jsonl(source, tmp_path / "out.jsonl", timeout=5.0, workers=1)
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["verdict"] for r in out] == ["correct", "unverifiable", "correct"]
    bad = out[1]
    assert bad["reason"] == reason and bad["line"] == 3
    assert bad["message"].startswith("line 3: ") and message in bad["message"]
    assert summary["bad_lines"] == 1
    assert summary["bad_line_examples"] == [f"{source}:3: {bad['message'][8:]}"]
