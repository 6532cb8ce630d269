"""The filter-and-assemble run end to end on a small store table with planted problems."""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest

from data_cards.from_store import card_text_for_version
from filters.decontam import TOY_BENCHMARK
from filters.mixture import TrackSpec
from filters.pipeline import (
    DecontamConfig,
    ExecutionConfig,
    FilterRunConfig,
    InputTable,
    MixtureConfig,
    OutputsConfig,
    PipelineError,
    SelectionConfig,
    run_filter_pipeline,
)
from store.lineage import Lineage, TableRef
from store.record import SAMPLE_SCHEMA, validate_sample
from store.store import Store

VOCABULARY = (
    "first we add the two numbers then check the result against the question so the total "
    "is found by counting each group carefully and the answer follows from this step "
    "because every item was counted once while the remaining part stays the same"
)
WORDS = VOCABULARY.split()
BENCHMARK_ITEM = json.loads(TOY_BENCHMARK.read_text().splitlines()[3])["text"]


def prose(rng: random.Random, words: int) -> str:
    return " ".join(f"{rng.choice(WORDS)}{rng.randint(0, 999)}" for _ in range(words))


def sample(
    sid: str,
    prompt_id: str,
    prompt: str,
    reasoning: str,
    answer: str,
    *,
    track: str = "reasoning",
    verdict: str | None = "correct",
    completion: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    if completion is None:
        think = reasoning if track == "reasoning" else ""
        completion = f"<think>{think}</think><answer>{answer}</answer>"
    verdicts = [] if verdict is None else [{"verifier": "math", "verdict": verdict}]
    row = {
        "sample_id": sid,
        "prompt_id": prompt_id,
        "prompt": prompt,
        "completion": completion,
        "domain": "math" if track == "reasoning" else "general",
        "track": track,
        "source": "toy",
        "language": "en",
        "finish_reason": "stop",
        "verdicts": verdicts,
        **extra,
    }
    return validate_sample(row)


PLANTED = {
    "x-dup-exact": "dedup:exact",
    "x-dup-near": "dedup:near",
    "x-leak": "decontam:toy_benchmark",
    "x-bad-incorrect": "verified:incorrect",
    "x-bad-format": "format:missing_think",
    "x-bad-truncated": "truncated:length",
}


def make_rows() -> list[dict[str, Any]]:
    """40 good reasoning rows (20 prompts x 2), 12 good non-reasoning rows, and the planted ones.

    Planted ids sort after the good ones, so a planted copy is the one dedup drops
    (the survivor of a duplicate group is its smallest sample_id).
    """
    rng = random.Random(0)
    rows = []
    for i in range(40):
        p = i // 2
        rows.append(
            sample(
                f"r{i:03d}", f"p{p:03d}", f"Add {p} apples to {p + 3} pears.", prose(rng, 60), "7"
            )
        )
    for i in range(12):
        rows.append(
            sample(
                f"n{i:03d}",
                f"q{i:03d}",
                f"Greeting number {i}",
                "",
                prose(rng, 12),
                track="non_reasoning",
                verdict=None,
            )
        )
    original = rows[0]
    rows.append({**original, "sample_id": "x-dup-exact"})
    words = rows[2]["completion"].split(" ")
    words[10] = "changed"
    near_completion = " ".join(words)
    rows.append(
        sample("x-dup-near", "p001", rows[2]["prompt"], "", "7", completion=near_completion)
    )
    rows.append(sample("x-leak", "x-leak", BENCHMARK_ITEM, prose(rng, 60), "28"))
    rows.append(
        sample("x-bad-incorrect", "p900", "Add 1 to 2.", prose(rng, 60), "4", verdict="incorrect")
    )
    rows.append(
        sample("x-bad-format", "p901", "Add 2 to 2.", "", "", completion=prose(rng, 60) + " 4")
    )
    rows.append(
        sample(
            "x-bad-truncated",
            "p902",
            "Add 3 to 2.",
            "",
            "",
            completion="<think>" + prose(rng, 60),
            finish_reason="length",
        )
    )
    return [validate_sample(r) for r in rows]


def commit(store: Store, name: str, rows: list[dict[str, Any]]) -> int:
    table = pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA)
    return store.commit(name, table, lineage=Lineage(writer="test")).version


def config(tmp_path: Path, **overrides: Any) -> FilterRunConfig:
    base: dict[str, Any] = {
        "inputs": [InputTable("cands")],
        "outputs": OutputsConfig(card_dir=str(tmp_path / "cards")),
        "execution": ExecutionConfig(executor="local", batch_rows=16),
        "decontam": DecontamConfig(benchmarks=[str(TOY_BENCHMARK)]),
        "mixture": MixtureConfig(
            tracks={"reasoning": TrackSpec(30), "non_reasoning": TrackSpec(16)}, max_upsample=2.0
        ),
    }
    base.update(overrides)
    return FilterRunConfig(**base)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "store")
    commit(store, "cands", make_rows())
    return store


def test_planted_problems_get_their_reasons_and_nothing_is_deleted(
    store: Store, tmp_path: Path
) -> None:
    report = run_filter_pipeline(store, config(tmp_path), Lineage(writer="test"), seed=3)
    candidates = store.read("sft-candidates")
    assert candidates.height == report.rows == len(make_rows())
    reasons = dict(candidates.select("sample_id", "filter_reason").iter_rows())
    for sid, reason in PLANTED.items():
        assert reasons[sid] == reason, sid
    # The survivor of a duplicate pair is the smaller id, and it is kept.
    assert reasons["r000"] in (None, "mixture:not_sampled")
    mixture = store.read("sft-mixture")
    assert mixture.height == report.mixture_rows == 46
    assert mixture.get_column("kept").all()
    assert mixture.get_column("filter_reason").null_count() == mixture.height
    # 12 non-reasoning samples fill a target of 16 with 4 second copies.
    copies = mixture.filter(pl.col("sample_id").str.contains("~"))
    assert copies.height == 4 and copies.get_column("sample_id").str.ends_with("~1").all()
    kept = set(candidates.filter(pl.col("kept")).get_column("sample_id"))
    originals = set(mixture.get_column("sample_id").str.replace(r"~\d+$", ""))
    assert kept == originals
    assert report.mixture_report.tracks[0].achieved == 30 and not report.mixture_report.short


def test_lineage_parents_are_the_exact_input_versions(store: Store, tmp_path: Path) -> None:
    commit(store, "cands", [])  # nothing new: still version 0
    store.commit(
        "cands",
        pa.Table.from_pylist(
            [sample("late", "late", "Add 9 to 9.", prose(random.Random(1), 60), "18")],
            schema=SAMPLE_SCHEMA,
        ),
        lineage=Lineage(writer="test"),
    )
    cfg = config(tmp_path, inputs=[InputTable("cands", version=0)])
    report = run_filter_pipeline(store, cfg, Lineage(writer="test run", config_hash="abc"))
    assert report.inputs == [TableRef("cands", 0)]
    cand_commit = store.history("sft-candidates")[0].lineage
    mix_commit = store.history("sft-mixture")[0].lineage
    assert cand_commit is not None and mix_commit is not None
    assert cand_commit.parents == (TableRef("cands", 0),)
    assert mix_commit.parents == (TableRef("cands", 0), report.candidates)
    assert mix_commit.writer == "test run" and mix_commit.config_hash == "abc"
    assert "late" not in set(store.read("sft-candidates").get_column("sample_id"))


@pytest.mark.parametrize("parallel", [True, False])
def test_a_failed_candidates_write_leaves_both_outputs_as_they_were(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parallel: bool
) -> None:
    # A first run lands version 0 of both outputs; a second run whose
    # candidates commit fails must not commit a mixture naming it.
    execution = ExecutionConfig(executor="local", batch_rows=16, parallel_writes=parallel)
    first = run_filter_pipeline(
        store, config(tmp_path, execution=execution), Lineage(writer="test"), seed=3
    )
    before = store.content_hash("sft-mixture")
    real_commit = Store.commit

    def failing(self: Store, name: str, data: Any, **kwargs: Any) -> Any:
        if name == "sft-candidates":
            raise OSError("disk full")
        return real_commit(self, name, data, **kwargs)

    monkeypatch.setattr(Store, "commit", failing)
    with pytest.raises(OSError, match="disk full"):
        run_filter_pipeline(
            store, config(tmp_path, execution=execution), Lineage(writer="test"), seed=4
        )
    monkeypatch.undo()
    assert store.latest_version("sft-candidates") == first.candidates.version == 0
    assert store.latest_version("sft-mixture") == first.mixture.version == 0
    assert store.content_hash("sft-mixture") == before
    # A rerun finishes the work: both outputs move on together.
    again = run_filter_pipeline(
        store, config(tmp_path, execution=execution), Lineage(writer="test"), seed=4
    )
    assert (again.candidates.version, again.mixture.version) == (1, 1)
    parents = store.history("sft-mixture")[0].lineage
    assert parents is not None and parents.parents[-1] == again.candidates


def test_several_inputs_make_one_commit_per_output(tmp_path: Path) -> None:
    # The second table is opened before the writer starts pulling batches
    # (opening a Delta table inside write_deltalake's runtime panics).
    store = Store(tmp_path / "store")
    rows = make_rows()
    commit(store, "first", rows[:30])
    commit(store, "second", rows[30:])
    cfg = config(tmp_path, inputs=[InputTable("first"), InputTable("second")])
    report = run_filter_pipeline(store, cfg, Lineage(writer="test"))
    assert report.inputs == [TableRef("first", 0), TableRef("second", 0)]
    assert store.read("sft-candidates").height == len(rows)
    assert store.latest_version("sft-candidates") == 0 and store.latest_version("sft-mixture") == 0
    mix_commit = store.history("sft-mixture")[0].lineage
    assert mix_commit is not None
    assert mix_commit.parents == (TableRef("first", 0), TableRef("second", 0), report.candidates)


def test_both_versions_carry_the_step_decontamination_and_mixture_reports(
    store: Store, tmp_path: Path
) -> None:
    report = run_filter_pipeline(store, config(tmp_path), Lineage(writer="test"))
    steps = [s.step for s in report.steps]
    assert steps == ["rejection", "decontamination", "dedup", "mixture"]
    kinds = ["filter.steps", "filter.decontamination", "filter.mixture", "filter.yield"]
    for ref in (report.candidates, report.mixture):
        found = store.reports(ref.table, ref.version)
        assert found.kinds() == kinds and {r.version for r in found.reports} == {ref.version}
        assert {r.writer for r in found.reports} == {"test"}
    found = store.reports("sft-mixture", report.mixture.version)
    data = {r.kind: r.report.data for r in found.reports}
    assert [s["step"] for s in data["filter.steps"]["steps"]] == steps
    assert data["filter.steps"]["dedup"] == report.dedup
    assert (
        report.decontam is not None and data["filter.decontamination"] == report.decontam.as_dict()
    )
    assert data["filter.mixture"] == report.mixture_report.to_dict()
    # Per input: its rows and how many made it into the mixture (no generation cost here).
    (entry,) = data["filter.yield"]["inputs"]
    # Distinct samples: a repeated sample's copies carry ids of their own.
    distinct = sum(report.steps[-1].tallies.values())
    assert (entry["rows"], entry["accepted"], entry["generation"]) == (report.rows, distinct, None)
    # The run renders no card of its own; the one rendered from the store has the sections.
    assert not (tmp_path / "cards").exists()
    text = card_text_for_version(store, "sft-mixture", 0)
    for heading in ("## Filter steps", "## Decontamination", "## Mixture", "## Lineage"):
        assert text.count(heading) == 1, heading
    assert "`verified:incorrect`" in text and "`dedup:near`" in text
    assert "toy_benchmark" in text and "| `reasoning` | 30 | 30 |" in text


def test_a_run_without_benchmarks_reports_it_did_not_check(store: Store, tmp_path: Path) -> None:
    report = run_filter_pipeline(
        store, config(tmp_path, decontam=DecontamConfig()), Lineage(writer="test")
    )
    found = store.reports("sft-mixture", report.mixture.version).get("filter.decontamination")
    assert found is not None and found.report.data == {"checked": False}
    assert "not checked" in found.report.markdown


def test_selection_and_pass_rate_window(tmp_path: Path) -> None:
    rng = random.Random(2)
    rows = [sample(f"c{i}", "crowded", "Add 5 to 6.", prose(rng, 60), "11") for i in range(6)]
    # One correct of four judged: a pass rate of 0.25, below the window.
    rows += [sample("hard0", "hard", "Add 7 to 8.", prose(rng, 60), "15")]
    rows += [
        sample(f"hard{i}", "hard", "Add 7 to 8.", prose(rng, 60), "16", verdict="incorrect")
        for i in (1, 2, 3)
    ]
    store = Store(tmp_path / "store")
    commit(store, "cands", [validate_sample(r) for r in rows])
    cfg = config(
        tmp_path,
        selection=SelectionConfig(pass_rate_window=(0.5, 1.0), per_prompt=2),
        mixture=MixtureConfig(tracks={"reasoning": TrackSpec(2)}),
    )
    report = run_filter_pipeline(store, cfg, Lineage(writer="test"))
    reasons = dict(store.read("sft-candidates").select("sample_id", "filter_reason").iter_rows())
    assert reasons["hard0"] == "pass_rate:0.25_outside_[0.5,1]"
    assert sum(reasons[f"c{i}"] == "selection:over_k" for i in range(6)) == 4
    assert report.mixture_rows == 2


def test_process_executor_and_routing_decide_as_local_does(store: Store, tmp_path: Path) -> None:
    local = run_filter_pipeline(
        store, config(tmp_path, routing=True), Lineage(writer="test"), seed=1
    )
    first = store.read("sft-candidates").select("sample_id", "kept", "filter_reason", "track")
    mix_hash = store.content_hash("sft-mixture")
    pooled = config(
        tmp_path,
        routing=True,
        execution=ExecutionConfig(executor="process", workers=2, batch_rows=16),
    )
    again = run_filter_pipeline(store, pooled, Lineage(writer="test"), seed=1)
    second = store.read("sft-candidates").select("sample_id", "kept", "filter_reason", "track")
    assert first.sort("sample_id").equals(second.sort("sample_id"))
    assert store.content_hash("sft-mixture") == mix_hash  # same seed, same mixture
    assert (local.mixture.version, again.mixture.version) == (0, 1)
    routing = next(s for s in again.steps if s.step == "routing")
    assert routing.tallies["track:non_reasoning"] + routing.tallies["track:reasoning"] == again.rows


@pytest.mark.ray
def test_ray_executor_decides_as_local_does(store: Store, tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="the ray tests need `make test-ray`")
    run_filter_pipeline(store, config(tmp_path, routing=True), Lineage(writer="test"), seed=1)
    first = store.read("sft-candidates").select("sample_id", "kept", "filter_reason", "track")
    mix_hash = store.content_hash("sft-mixture")
    on_ray = config(
        tmp_path, routing=True, execution=ExecutionConfig(executor="ray", workers=2, batch_rows=16)
    )
    run_filter_pipeline(store, on_ray, Lineage(writer="test"), seed=1)
    second = store.read("sft-candidates").select("sample_id", "kept", "filter_reason", "track")
    assert first.sort("sample_id").equals(second.sort("sample_id"))
    assert store.content_hash("sft-mixture") == mix_hash


def test_a_short_mixture_says_so(store: Store, tmp_path: Path) -> None:
    cfg = config(tmp_path, mixture=MixtureConfig(tracks={"reasoning": TrackSpec(1000)}))
    report = run_filter_pipeline(store, cfg, Lineage(writer="test"))
    mix = report.mixture_report
    assert mix.short and mix.tracks[0].shortfall == 1000 - mix.tracks[0].achieved
    assert any(
        w.startswith("reasoning: 40 of the 1,000 target (short by 960)") for w in mix.warnings
    )
    assert mix.excluded == {"non_reasoning": 12}
    reasons = store.read("sft-candidates").get_column("filter_reason").to_list()
    assert reasons.count("mixture:excluded") == 12


def test_errors_name_the_problem(store: Store, tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="'missing' is not in store"):
        run_filter_pipeline(
            store, config(tmp_path, inputs=[InputTable("missing")]), Lineage(writer="test")
        )
    commit(store, "copy", make_rows()[:3])
    twice = config(tmp_path, inputs=[InputTable("cands"), InputTable("copy")])
    with pytest.raises(PipelineError, match="share a sample_id"):
        run_filter_pipeline(store, twice, Lineage(writer="test"))
    with pytest.raises(ValueError, match="also an input"):
        config(tmp_path, outputs=OutputsConfig(candidates="cands"))


KILLED_RUN = textwrap.dedent(
    """
    import pickle, sys, time
    from pathlib import Path
    from filters import pipeline
    from store.lineage import Lineage
    from store.store import Store

    root, cfg_path, marker = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    real_write = pipeline._Run.write

    def write(self, name, lineage, copies, total, *, before_commit=None, **kwargs):
        def stall():
            if before_commit is not None:
                before_commit()
            marker.write_text(name)  # the parent kills us from here on
            time.sleep(600)
        hook = stall if name == "sft-mixture" else before_commit
        return real_write(self, name, lineage, copies, total, before_commit=hook, **kwargs)

    pipeline._Run.write = write
    cfg = pickle.loads(Path(cfg_path).read_bytes())
    pipeline.run_filter_pipeline(Store(root), cfg, Lineage(writer="doomed"), seed=3)
    print("finished, which the test must prevent")
    """
)


def test_a_run_killed_before_its_mixture_commit_is_finished_by_a_rerun(
    store: Store, tmp_path: Path
) -> None:
    cfg = config(tmp_path)
    first = run_filter_pipeline(store, cfg, Lineage(writer="test"), seed=3)
    mixture_hash = store.content_hash("sft-mixture")
    cfg_path, marker = tmp_path / "cfg.pickle", tmp_path / "marker"
    cfg_path.write_bytes(pickle.dumps(cfg))
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, str(store.root), str(cfg_path), str(marker)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
        assert time.monotonic() < deadline, "the child never reached the mixture commit"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    out, _ = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL and b"finished" not in out

    # The candidates commit landed; the mixture's never started: its last
    # version is the first run's, unchanged.
    reopened = Store(store.root)
    assert reopened.latest_version("sft-candidates") == 1
    assert reopened.latest_version("sft-mixture") == first.mixture.version == 0
    assert reopened.content_hash("sft-mixture") == mixture_hash
    # Each version carries the reports of the run that wrote it, and only those.
    kinds = ["filter.steps", "filter.decontamination", "filter.mixture", "filter.yield"]
    for table, version, writer in (("sft-candidates", 1, "doomed"), ("sft-mixture", 0, "test")):
        found = reopened.reports(table, version)
        assert found.kinds() == kinds
        assert {(r.version, r.writer) for r in found.reports} == {(version, writer)}
    # A rerun finishes the work: a new version of each, the same mixture
    # content (same inputs, same seed), lineage naming the new candidates.
    again = run_filter_pipeline(reopened, cfg, Lineage(writer="test"), seed=3)
    assert (again.candidates.version, again.mixture.version) == (2, 1)
    assert reopened.content_hash("sft-mixture") == mixture_hash
    commit = reopened.history("sft-mixture")[0].lineage
    assert commit is not None and commit.parents[-1] == TableRef("sft-candidates", 2)
    ids = reopened.read("sft-mixture", columns=["sample_id"]).get_column("sample_id")
    assert ids.n_unique() == ids.len() == again.mixture_rows
