"""`r1f filter run | dedup | decontaminate`: the filter commands' contracts, output and errors."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from filters.decontam import TOY_BENCHMARK
from flows.cli import main as r1f
from store.lineage import Lineage
from store.record import SAMPLE_SCHEMA, validate_sample
from store.store import Store

BENCHMARK_ITEM = json.loads(TOY_BENCHMARK.read_text().splitlines()[0])["text"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = r1f(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def story(seed: int, words: int = 60) -> str:
    rng = random.Random(seed)
    return " ".join(f"word{rng.randint(0, 5000)}" for _ in range(words))


def test_help_lists_the_filter_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        r1f(["filter", "--help"])
    out = capsys.readouterr().out
    for command in ("run", "dedup", "decontaminate"):
        assert command in out


def test_dedup_adds_duplicate_of(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = story(1)
    near = base.split()
    near[7] = "changed"
    rows: list[dict[str, Any]] = [
        {"id": "a", "completion": base, "other": 1},
        {"id": "b", "completion": story(2)},
        {"id": "c", "completion": base},  # exact copy of a
        {"id": "d", "completion": " ".join(near)},  # near copy of a
    ]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    code, text, _ = run(capsys, "filter", "dedup", "--input", str(src), "--output", str(out))
    assert code == 0 and "2 duplicates" in text
    result = read_jsonl(out)
    assert [r["duplicate_of"] for r in result] == [None, None, "a", "a"]
    assert result[0]["other"] == 1  # other fields pass through
    code, text, _ = run(
        capsys,
        "filter",
        "dedup",
        "--input",
        str(src),
        "--output",
        str(out),
        "--method",
        "exact",
        "--threshold",
        "0.9",
        "--json",
    )
    assert code == 0 and json.loads(text)["duplicates"] == 1
    assert [r["duplicate_of"] for r in read_jsonl(out)] == [None, None, "a", None]


def test_dedup_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"completion": "no id here"}])
    code, _, err = run(
        capsys, "filter", "dedup", "--input", str(src), "--output", str(tmp_path / "o.jsonl")
    )
    # The row is reported and left out; with no row left, the run found no valid input.
    assert code == 1 and f"{src}:1: no id" in err and "no valid rows" in err
    code, _, err = run(
        capsys, "filter", "dedup", "--input", str(tmp_path / "nope.jsonl"), "--output", "o"
    )
    assert code == 2 and "no such file" in err


def test_decontaminate_flags_leaks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        {"id": 1, "prompt": "What is two plus two?", "completion": story(3)},
        {"id": 2, "prompt": BENCHMARK_ITEM.upper(), "completion": "x"},
    ]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    argv = ["filter", "decontaminate", "--input", str(src), "--output", str(out)]
    code, text, _ = run(capsys, *argv, "--benchmarks", str(TOY_BENCHMARK), "--n", "13")
    assert code == 0 and "1 contaminated" in text and "toy_benchmark" in text
    clean, leak = read_jsonl(out)
    assert (clean["contaminated"], clean["benchmark"], clean["ngram"]) == (False, None, None)
    assert leak["contaminated"] and leak["benchmark"] == "toy_benchmark"
    assert len(leak["ngram"].split()) == 13 and leak["ngram"] in BENCHMARK_ITEM.lower()
    code, text, _ = run(capsys, *argv, "--benchmarks", str(TOY_BENCHMARK), "--json")
    assert code == 0 and json.loads(text)["contaminated"] == 1
    code, _, err = run(capsys, *argv, "--benchmarks", str(tmp_path / "missing.jsonl"))
    assert code == 2 and "no such file" in err


def sample(i: int, **extra: Any) -> dict[str, Any]:
    track = "reasoning" if i % 4 else "non_reasoning"
    think = story(100 + i) if track == "reasoning" else ""
    row = {
        "sample_id": f"s{i:03d}",
        "prompt": f"Question {i}",
        "completion": f"<think>{think}</think><answer>{i}</answer>",
        "domain": "math" if track == "reasoning" else "general",
        "track": track,
        "source": "toy",
        "finish_reason": "stop",
        "verdicts": [{"verifier": "math", "verdict": "correct"}] if track == "reasoning" else [],
        **extra,
    }
    return validate_sample(row)


def test_run_commits_both_tables_and_the_card(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = Store(tmp_path / "store")
    rows = [sample(i) for i in range(24)]
    rows.append(sample(99, verdicts=[{"verifier": "math", "verdict": "incorrect"}]))
    store.commit(
        "toy", pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA), lineage=Lineage(writer="test")
    )
    config = tmp_path / "run.yaml"
    config.write_text(
        f"""
name: cli-test
store: {{root: {tmp_path / "store"}}}
filter:
  inputs: [{{table: toy}}]
  outputs: {{candidates: toy-cands, mixture: toy-mix, card_dir: {tmp_path / "cards"}}}
  execution: {{executor: local, batch_rows: 8}}
  decontam: {{benchmarks: [{TOY_BENCHMARK}]}}
  mixture:
    tracks:
      reasoning: {{target: 12}}
      non_reasoning: {{target: 10}}
"""
    )
    code, text, err = run(capsys, "filter", "run", "--config", str(config))
    assert code == 0, err
    assert "Filtered 25 rows of toy@0" in text and "toy-mix@0 (18 rows)" in text
    assert "verified:incorrect 1" in text
    assert "warning: non_reasoning: 6 of the 10 target (short by 4)" in err
    card = tmp_path / "cards" / "toy-mix-v0" / "README.md"
    assert card.is_file() and "## Mixture" in card.read_text()
    code, text, _ = run(capsys, "filter", "run", "--config", str(config), "--json")
    report = json.loads(text)
    assert code == 0 and report["mixture"] == "toy-mix@1" and report["mixture_rows"] == 18
    assert [s["name"] for s in report["stages"]][-1] == "card"


def test_run_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(f"store: {{root: {tmp_path}}}\nfilter: {{inputs: [{{table: absent}}]}}\n")
    code, _, err = run(capsys, "filter", "run", "--config", str(config))
    assert code == 2 and "r1f: error: input table 'absent' is not in store" in err
    config.write_text("filter: {mixture: {max_upsample: 0.5}}\n")
    code, _, err = run(capsys, "filter", "run", "--config", str(config))
    assert code == 2 and "max_upsample must be >= 1.0" in err


def test_config_paths_are_relative_to_the_config_and_history_agrees_with_diff(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path / "data" / "store")
    rows = [sample(i) for i in range(24)]
    store.commit(
        "toy", pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA), lineage=Lineage(writer="test")
    )
    (tmp_path / "configs").mkdir()
    shutil.copy(TOY_BENCHMARK, tmp_path / "data" / "bench.jsonl")
    config = tmp_path / "configs" / "run.yaml"
    config.write_text(
        """
store: {root: ../data/store}
filter:
  inputs: [{table: toy}]
  outputs: {candidates: toy-cands, mixture: toy-mix, card_dir: ../cards}
  execution: {executor: local, batch_rows: 8}
  decontam: {benchmarks: [../data/bench.jsonl]}
  mixture: {tracks: {reasoning: {target: 12}, non_reasoning: {target: 4}}}
"""
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the config's paths do not depend on where r1f runs
    for _ in range(2):  # a rerun on unchanged inputs writes the same rows again
        code, _, err = run(capsys, "filter", "run", "--config", str(config))
        assert code == 0, err
    assert (tmp_path / "cards" / "toy-mix-v1" / "README.md").is_file()
    assert list(elsewhere.iterdir()) == []
    root = str(store.root)
    for table in ("toy-cands", "toy-mix"):
        code, text, _ = run(capsys, "datasets", "history", table, "--store", root, "--json")
        rerun = json.loads(text)[0]
        code, text, _ = run(
            capsys, "datasets", "diff", f"{table}@0", f"{table}@1", "--store", root, "--json"
        )
        diff = json.loads(text)
        assert (diff["added"], diff["removed"], diff["changed"]) == (0, 0, 0)
        assert (rerun["rows_added"], rerun["rows_removed"], rerun["rows_updated"]) == (0, 0, 0)
    # --store replaces the config's store.root.
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "data" / "store", moved)
    code, text, err = run(capsys, "filter", "run", "--config", str(config), "--store", str(moved))
    assert code == 0, err
    assert Store(moved).latest_version("toy-cands") == 2
    assert store.latest_version("toy-cands") == 1


def filter_setup(tmp_path: Path) -> tuple[Store, Path]:
    """A store with one judged input table and a run config over it."""
    store = Store(tmp_path / "store")
    rows = [sample(i) for i in range(24)]
    rows.append(sample(99, verdicts=[{"verifier": "math", "verdict": "incorrect"}]))
    store.commit(
        "toy", pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA), lineage=Lineage(writer="test")
    )
    config = tmp_path / "run.yaml"
    config.write_text(
        f"""
store: {{root: {store.root}}}
filter:
  inputs: [{{table: toy}}]
  outputs: {{candidates: toy-cands, mixture: toy-mix, card_dir: {tmp_path / "cards"}}}
  execution: {{executor: local, batch_rows: 8}}
  decontam: {{benchmarks: [{TOY_BENCHMARK}]}}
  mixture: {{tracks: {{reasoning: {{target: 12}}, non_reasoning: {{target: 4}}}}}}
"""
    )
    return store, config


def card_files(folder: Path) -> dict[str, bytes]:
    """README.md and plots, by path relative to the folder."""
    files = [folder / "README.md", *sorted((folder / "plots").glob("*.png"))]
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in files}


def test_one_card_per_version_wherever_it_is_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, config = filter_setup(tmp_path)
    code, _, err = run(capsys, "filter", "run", "--config", str(config))
    assert code == 0, err
    root = str(store.root)
    code, _, err = run(
        capsys, "datasets", "card", "toy-mix@0", "--to", str(tmp_path / "card"), "--store", root
    )
    assert code == 0, err
    code, _, err = run(
        capsys, "datasets", "export", "toy-mix@0", "--to", str(tmp_path / "rel"), "--store", root
    )
    assert code == 0, err
    # The filter run's card, `datasets card` and the release's README: the same bytes,
    # plots included. Only the release has shards and a manifest beside its card.
    from_run = card_files(tmp_path / "cards" / "toy-mix-v0")
    assert card_files(tmp_path / "card") == from_run == card_files(tmp_path / "rel")
    assert len(from_run) > 1
    text = from_run["README.md"].decode()
    for heading in ("## Filter steps", "## Decontamination", "## Mixture"):
        assert text.count(heading) == 1, heading
    assert "_Report `filter.mixture`, stored with version 0 by `r1f filter run`._" in text
    assert "`verified:incorrect`" in text and "toy_benchmark" in text
    assert "- filter.steps" in text  # the front matter lists the reports
    assert not (tmp_path / "card" / "manifest.json").exists()
    assert (tmp_path / "rel" / "manifest.json").is_file()

    # `datasets show` names them; --json has them in full.
    code, out, _ = run(capsys, "datasets", "show", "toy-mix", "--store", root)
    assert (
        "filter.steps (v0), filter.decontamination (v0), filter.mixture (v0), filter.yield (v0)"
        in out
    )
    code, out, _ = run(capsys, "datasets", "show", "toy-cands@0", "--store", root, "--json")
    shown = json.loads(out)["reports"]
    assert [r["kind"] for r in shown["reports"]] == [
        "filter.steps",
        "filter.decontamination",
        "filter.mixture",
        "filter.yield",
    ]
    assert shown["reports"][2]["data"]["achieved"] == 16

    # A version whose writer attached no report says so, in the card and in `show`.
    code, _, err = run(
        capsys, "datasets", "card", "toy", "--to", str(tmp_path / "bare"), "--store", root
    )
    assert code == 0, err
    bare = (tmp_path / "bare" / "README.md").read_text()
    assert "## Reports\n\nNo reports were stored with version 0: its writer, `test`," in bare
    assert "## Filter steps" not in bare
    code, out, _ = run(capsys, "datasets", "show", "toy", "--store", root)
    assert "none stored" in out


KILLED_BEFORE_CARD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from flows import filter_run

    config, marker = sys.argv[1], Path(sys.argv[2])

    def stall(*args, **kwargs):
        marker.write_text("committed")  # the parent kills us from here on
        time.sleep(600)

    filter_run.write_card_for_version = stall
    filter_run.run_filter(config)
    print("finished, which the test must prevent")
    """
)


def test_a_run_killed_between_its_commits_and_its_card_loses_no_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, config = filter_setup(tmp_path)
    marker = tmp_path / "marker"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_BEFORE_CARD, str(config), str(marker)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
        assert time.monotonic() < deadline, "the child never got past its commits"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    out, _ = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL and b"finished" not in out
    assert not (tmp_path / "cards").exists()  # the run never wrote its card

    # Its version is not cardless: the card is rendered from the store, reports and all.
    root = str(store.root)
    assert Store(root).latest_version("toy-mix") == 0
    code, _, err = run(
        capsys, "datasets", "export", "toy-mix@0", "--to", str(tmp_path / "rel"), "--store", root
    )
    assert code == 0, err
    text = (tmp_path / "rel" / "README.md").read_text()
    for heading in ("## Filter steps", "## Decontamination", "## Mixture"):
        assert text.count(heading) == 1, heading
    # A rerun makes the next version and its card, with the same mixture.
    code, _, err = run(capsys, "filter", "run", "--config", str(config))
    assert code == 0, err
    rerun = (tmp_path / "cards" / "toy-mix-v1" / "README.md").read_text()
    assert "_Report `filter.mixture`, stored with version 1 by `r1f filter run`._" in rerun
