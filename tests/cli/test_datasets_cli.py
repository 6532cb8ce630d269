"""The `r1f` command line: every datasets command, config show, errors and JSON output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flows.cli import build_parser
from flows.cli import main as r1f
from store.record import to_table, validate_sample


@pytest.fixture
def populated(store, rows, lineage):
    """A store with one table at version 2 (insert, insert, change+delete)."""
    base = rows(30)
    store.commit("toy", to_table(base), lineage=lineage)
    store.commit("toy", to_table(rows(10, start=30)), lineage=lineage)
    store.upsert("toy", to_table([validate_sample({**base[0], "kept": False})]), lineage=lineage)
    store.delete("toy", [base[1]["sample_id"]], lineage=lineage)
    return store


def run(capsys, *argv):
    code = r1f(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        r1f(["--help"])
    out = capsys.readouterr().out
    for command in ("datasets", "verify", "config", "demo"):
        assert command in out
    with pytest.raises(SystemExit):
        r1f(["datasets", "--help"])
    out = capsys.readouterr().out
    for command in (
        "list",
        "show",
        "history",
        "diff",
        "import",
        "export",
        "verify",
        "card",
        "vacuum",
        "usage",
    ):
        assert command in out


def test_cli_import_stays_light():
    # `r1f --help` must not pay for polars, deltalake, torch or prefect.
    probe = (
        "import sys; from flows.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('polars', 'deltalake', 'torch', 'prefect', 'rich') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_list_show_history(populated, capsys):
    root = populated.root
    code, out, _ = run(capsys, "datasets", "--store", root, "list", "--json")
    assert code == 0
    [info] = json.loads(out)
    assert (info["name"], info["version"], info["rows"]) == ("toy", 3, 39)

    code, out, _ = run(capsys, "datasets", "--store", root, "show", "toy@1", "--json")
    shown = json.loads(out)
    assert (shown["version"], shown["rows"]) == (1, 40)
    assert sum(g["rows"] for g in shown["composition"]) == 40
    assert shown["content_hash"] == populated.content_hash("toy", 1)

    code, out, _ = run(capsys, "datasets", "--store", root, "show", "toy")
    assert code == 0 and "toy@3" in out and "Composition" in out and "tests" in out

    code, out, _ = run(capsys, "datasets", "--store", root, "history", "toy", "--json")
    history = json.loads(out)
    assert [c["version"] for c in history] == [3, 2, 1, 0]
    assert [c["operation"] for c in history] == ["MERGE", "MERGE", "WRITE", "WRITE"]
    assert history[-1]["lineage"]["config_hash"] == "cfg0"
    code, out, _ = run(capsys, "datasets", "--store", root, "history", "toy")
    assert code == 0 and "MERGE" in out


def test_diff(populated, capsys):
    code, out, _ = run(
        capsys, "datasets", "--store", populated.root, "diff", "toy@0", "toy@3", "--json"
    )
    diff = json.loads(out)
    assert (diff["added"], diff["removed"], diff["changed"]) == (10, 1, 1)
    code, out, _ = run(capsys, "datasets", "--store", populated.root, "diff", "toy@0", "toy@3")
    assert code == 0 and "Composition" in out


def test_export_verify_and_card(populated, capsys, tmp_path):
    release = tmp_path / "release"
    code, out, _ = run(
        capsys,
        "datasets",
        "--store",
        populated.root,
        "export",
        "toy@2",
        "--to",
        str(release),
        "--json",
    )
    assert code == 0
    manifest = json.loads(out)
    assert manifest["rows"] == 40 and (release / "README.md").is_file()
    code, out, _ = run(capsys, "datasets", "verify", str(release))
    assert code == 0 and "every shard matches" in out
    (release / manifest["shards"][0]["path"]).write_bytes(b"tampered")
    code, _, err = run(capsys, "datasets", "verify", str(release))
    assert code == 1 and "bytes, manifest says" in err

    card_dir = tmp_path / "card"
    code, out, _ = run(
        capsys, "datasets", "--store", populated.root, "card", "toy", "--to", str(card_dir)
    )
    assert code == 0 and (card_dir / "README.md").read_text().startswith("---\n")


def test_vacuum_lists_then_removes(populated, capsys):
    code, out, _ = run(capsys, "datasets", "--store", populated.root, "vacuum", "toy", "--json")
    assert code == 0 and json.loads(out)["would_remove"] == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["show", "nope"], "no table 'nope'"),
        (["show", "toy@99"], "toy@99: no such version"),
        (["diff", "toy@0", "toy"], "name a version, e.g. toy@0"),
        (["diff", "toy@0", "other@1"], "two versions of one table"),
        (["export", "toy@x", "--to", "d"], "must be a number"),
        (["import", "missing.jsonl", "--table", "toy"], "missing.jsonl: no such file"),
    ],
)
def test_user_errors_are_one_line_with_status_2(populated, capsys, argv, message):
    code, _, err = run(capsys, "datasets", "--store", populated.root, *argv)
    assert code == 2
    assert err.startswith("r1f: error:") and message in err
    assert "Traceback" not in err


def test_usage_and_show_name_the_models_trained_on_a_version(populated, capsys, tmp_path):
    from store.usage import ModelUse, record_model_use

    root = populated.root
    code, out, _ = run(capsys, "datasets", "--store", root, "usage", "toy@1")
    assert code == 0 and "No model recorded as trained on toy@1" in out
    student = tmp_path / "student"
    student.mkdir()
    for model, version, stage in ((student, 1, "distill"), (tmp_path / "gone", 1, "sft")):
        record_model_use(
            populated,
            ModelUse(
                table="toy",
                version=version,
                content_hash=populated.content_hash("toy", version),
                model=str(model),
                stage=stage,
                steps=200,
                config_hash="abc123",
            ),
        )
    record_model_use(
        populated,
        ModelUse(table="toy", version=2, content_hash="x", model=str(student), stage="sft"),
    )
    code, out, _ = run(capsys, "datasets", "--store", root, "usage", "toy@1", "--json")
    uses = json.loads(out)
    assert code == 0 and [(u["stage"], u["model_exists"]) for u in uses] == [
        ("distill", True),
        ("sft", False),
    ]
    assert {u["version"] for u in uses} == {1} and uses[0]["steps"] == 200
    code, out, _ = run(capsys, "datasets", "--store", root, "usage", "toy")
    assert code == 0 and "any version" in out and out.count(str(student)) == 2
    code, out, _ = run(capsys, "datasets", "--store", root, "show", "toy@1", "--json")
    assert [u["model"] for u in json.loads(out)["used_by"]] == [
        str(student),
        str(tmp_path / "gone"),
    ]
    code, out, _ = run(capsys, "datasets", "--store", root, "show", "toy@1")
    assert code == 0 and "used by" in out and "2 model(s)" in out
    # Errors: an unknown version, and an unreadable record (named, one line, exit 2;
    # `show` still shows the version and warns).
    code, _, err = run(capsys, "datasets", "--store", root, "usage", "toy@9")
    assert code == 2 and err.startswith("r1f: error:") and err.count("\n") == 1
    bad = Path(root) / "_model_usage" / "broken.json"
    bad.write_text("{not json")
    code, _, err = run(capsys, "datasets", "--store", root, "usage", "toy")
    assert code == 2 and err.count("\n") == 1 and "broken.json" in err
    code, out, err = run(capsys, "datasets", "--store", root, "show", "toy@1")
    assert code == 0 and "warning: used by:" in err and "broken.json" in err


def test_config_show_prints_the_resolved_config(tmp_path, capsys):
    base = tmp_path / "base.yaml"
    base.write_text("seed: 3\nstore:\n  root: /data/store\n")
    child = tmp_path / "child.yaml"
    child.write_text("extends: base.yaml\nname: child\n")
    code, out, _ = run(capsys, "config", "show", str(child))
    assert code == 0
    assert "name: child" in out and "seed: 3" in out and "root: /data/store" in out
    assert "batch_rows: 2048" in out  # defaults are filled in
    code, out, _ = run(capsys, "config", "show", str(child), "--json")
    shown = json.loads(out)
    assert shown["config"]["seed"] == 3 and len(shown["config_hash"]) == 16


def test_config_show_names_file_line_and_key(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 1\nstore:\n  rot: /x\n")
    code, _, err = run(capsys, "config", "show", str(bad))
    assert code == 2
    assert f"{bad}:3: store.rot: unknown key" in err and "Did you mean 'root'?" in err
    code, _, err = run(capsys, "config", "show", str(tmp_path / "none.yaml"))
    assert code == 2 and "config file not found" in err


def test_verify_code_adds_verdicts_in_order(tmp_path, capsys):
    rows = [
        {
            "id": 1,
            "completion": "print(int(input()) * 2)",
            "tests": {"kind": "stdio", "cases": [{"input": "21\n", "output": "42\n"}]},
        },
        {
            "id": 2,
            "completion": "def add(a, b):\n    return a - b",
            "tests": {
                "kind": "assert",
                "code": "def check(f):\n    assert f(2, 3) == 5",
                "entry_point": "add",
            },
        },
        {"id": 3, "completion": "x = 1", "tests": {"kind": "unknown"}},
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    target = tmp_path / "out.jsonl"
    code, out, _ = run(
        capsys,
        "verify",
        "code",
        "--input",
        str(source),
        "--output",
        str(target),
        "--workers",
        "1",
        "--json",
    )
    assert code == 0
    assert json.loads(out)["rows"] == 3
    results = [json.loads(line) for line in target.read_text().splitlines()]
    assert [r["id"] for r in results] == [1, 2, 3]
    assert [(r["verdict"], r["detail"]) for r in results] == [
        ("correct", "passed"),
        ("incorrect", "wrong_answer"),
        ("unverifiable", "bad_input"),
    ]


def test_every_subcommand_has_a_handler():
    parser = build_parser()
    for args in (
        ["datasets", "list"],
        ["config", "show", "f"],
        ["demo"],
        ["verify", "math", "--input", "a", "--output", "b"],
    ):
        assert callable(parser.parse_args(args).handler)
