"""Judging stored samples: verdicts per domain, merged into the rows, committed once."""

from __future__ import annotations

import json

import polars as pl

from store.record import to_table, validate_sample
from verifiers.judge import JudgeConfig, judge


def sample(i, **fields):
    return validate_sample(
        {"prompt": f"q{i}", "track": "reasoning", "source": "t", "sample_index": i, **fields}
    )


def test_judge_table_verifies_by_domain_and_is_idempotent(store, lineage):
    rows = [
        sample(
            0, domain="math", gold="7/3", completion="<think>x</think><answer>\\frac{7}{3}</answer>"
        ),
        sample(1, domain="math", gold="5", completion="<think>x</think><answer>6</answer>"),
        sample(2, domain="math", gold="5", completion="no tags at all: 5"),
        sample(
            3,
            domain="code",
            gold=json.dumps({"kind": "stdio", "cases": [{"input": "2\n", "output": "4\n"}]}),
            completion="<think>double it</think><answer>```python\nprint(int(input())*2)\n```</answer>",
        ),
        sample(
            4,
            domain="general",
            track="non_reasoning",
            completion="<think></think><answer>Hi!</answer>",
        ),
    ]
    store.commit("t", to_table(rows), lineage=lineage)
    report = judge(store, JudgeConfig("t", workers=1), lineage)
    assert (report.judged_version, report.version, report.rows, report.changed) == (0, 1, 5, 5)
    assert report.verdicts["math"] == {"correct": 1, "incorrect": 2}
    assert report.verdicts["code"] == {"correct": 1}
    assert report.verdicts["format"] == {"correct": 4, "incorrect": 1}

    judged = store.read("t").sort("sample_index")
    by_row = [
        {v["verifier"]: (v["verdict"], v["reason"]) for v in verdicts}
        for verdicts in judged["verdicts"].to_list()
    ]
    assert by_row[0]["math"] == ("correct", "match_exact")
    assert by_row[1]["math"] == ("incorrect", "mismatch")
    assert by_row[2]["math"] == ("incorrect", "no_answer")
    assert by_row[2]["format"][0] == "incorrect"
    assert by_row[3]["code"] == ("correct", "passed")
    assert set(by_row[4]) == {"format"}

    commit = store.history("t")[0]
    assert [str(p) for p in commit.lineage.parents] == ["t@0"]

    again = judge(store, JudgeConfig("t", workers=1), lineage)
    assert (again.changed, again.version) == (0, 1)


def test_other_verifiers_verdicts_are_kept(store, lineage):
    row = sample(
        0,
        domain="math",
        gold="1",
        completion="<think>x</think><answer>1</answer>",
        verdicts=[{"verifier": "human", "verdict": "correct", "reason": "spot check"}],
    )
    store.commit("t", to_table([row]), lineage=lineage)
    judge(store, JudgeConfig("t", workers=1), lineage)
    verifiers = store.read("t").select(
        pl.col("verdicts").list.eval(pl.element().struct.field("verifier"))
    )
    assert sorted(verifiers.item().to_list()) == ["format", "human", "math"]


def test_cli_verify_table_judges_commits_and_reports(tmp_path, capsys, lineage):
    from flows.cli import main
    from store.store import Store

    store = Store(tmp_path / "store")
    rows = [
        sample(0, domain="math", gold="4", completion="<think>2+2</think><answer>4</answer>"),
        sample(1, domain="math", gold="4", completion="<think>2+2</think><answer>5</answer>"),
    ]
    store.commit("t", to_table(rows), lineage=lineage)
    argv = ["verify", "table", "t@0", "--store", str(store.root), "--workers", "1", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["judged_version"], report["version"], report["changed"]) == (0, 1, 2)
    assert report["verdicts"]["math"] == {"correct": 1, "incorrect": 1}
    assert store.history("t")[0].lineage.writer == "r1f verify table"

    assert main(["verify", "table", "t", "--store", str(store.root), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "Judged t@1: 2 samples, 0 with new verdicts unchanged, still t@1" in out


def test_cli_verify_table_mistakes_are_one_line_with_exit_2(tmp_path, capsys, lineage):
    from flows.cli import main
    from store.store import Store

    store = Store(tmp_path / "store")
    store.commit("t", to_table([sample(0, domain="general", completion="hi")]), lineage=lineage)
    root = str(store.root)
    cases = [
        (["t@7"], "t@7: no such version (versions 0..0)"),
        (["nope"], "no table 'nope'"),
        (["t@x"], "the version after '@' must be a number"),
        (["t", "--workers", "0"], "argument --workers: must be an integer >= 1, got 0"),
        (["t", "--math-timeout", "0"], "argument --math-timeout: must be a number > 0, got 0"),
    ]
    for extra, message in cases:
        assert main(["verify", "table", *extra, "--store", root]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert message in err, err
    assert store.latest_version("t") == 0
