"""Dataset cards: stats checked against independent counts, the README, plots, and loading."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq
import pytest
import yaml

from data_cards.render import CardMeta, card_text, render_card, size_category
from data_cards.stats import NULL_KEY, CardStats, compute_stats
from store.record import to_table, validate_sample
from store.reports import AttachedReport, Report, VersionReports

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LENGTH_FIELDS = ("prompt_chars", "completion_chars", "reasoning_chars", "answer_chars")

# (domain, track, source, verifier or None)
KINDS = [
    ("math", "reasoning", "toy/arithmetic", "math"),
    ("math", "reasoning", "toy/linear", "math"),
    ("code", "reasoning", "toy/countdown", "code"),
    ("general", "non_reasoning", "toy/greetings", None),
    ("general", "non_reasoning", "toy/facts", None),
]


def _raw_rows(n: int = 300, seed: int = 0) -> list[dict[str, Any]]:
    """A few hundred varied rows: long-tailed lengths, non-ASCII text, partial judgements."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        domain, track, source, verifier = KINDS[rng.randrange(len(KINDS))]
        # Non-ASCII letters make character counts differ from byte counts.
        prompt = f"Q{i}: " + "é" * rng.randrange(0, 40) + "x" * int(10 ** rng.uniform(0.5, 3))
        answer = rng.choice(["", "42", "x = 3/4", "∑ done"])
        reasoning = "t∑" * int(10 ** rng.uniform(1, 3.5)) if track == "reasoning" else None
        think = f"<think>{reasoning}</think>" if reasoning is not None else ""
        verdicts = []
        if verifier is not None and rng.random() < 0.8:
            verdict = rng.choice(["correct", "correct", "incorrect", "unverifiable"])
            reason = {"correct": None, "incorrect": "wrong_answer", "unverifiable": "timeout"}
            verdicts.append({"verifier": verifier, "verdict": verdict, "reason": reason[verdict]})
            if rng.random() < 0.5:
                verdicts.append({"verifier": "format", "verdict": "correct", "version": "1"})
        kept = rng.choice([True, True, False, None])
        rows.append(
            {
                "prompt": prompt,
                "completion": think + answer,
                "reasoning": reasoning,
                "answer": answer if rng.random() < 0.9 else None,
                "domain": domain,
                "track": track,
                "source": source,
                "seed": i,
                "finish_reason": rng.choice(["stop", "stop", "length", None]),
                "completion_tokens": rng.randrange(1, 5000) if rng.random() < 0.6 else None,
                "verdicts": verdicts,
                "kept": kept,
                "filter_reason": None
                if kept is None
                else ("ok" if kept else rng.choice(["wrong_answer", "too_long", "language_mix"])),
            }
        )
    return rows


def _frame(raw: list[dict[str, Any]]) -> pl.DataFrame:
    df = pl.from_arrow(to_table([validate_sample(r) for r in raw]))
    assert isinstance(df, pl.DataFrame)
    return df


def _nearest_rank(values: list[int], pct: int) -> int:
    """Textbook nearest-rank percentile: the ceil(p/100 * n)-th smallest value."""
    ordered = sorted(values)
    rank = max(1, -(-pct * len(ordered) // 100))
    return ordered[rank - 1]


def _meta(**overrides: Any) -> CardMeta:
    base: dict[str, Any] = {
        "name": "toy_sft",
        "version": 3,
        "parent_version": 2,
        "content_hash": "c0ffee12",
        "description": "Rejection-sampled SFT data from the toy universe.",
        "lineage": {
            "writer": "filters.reject",
            "flow_run_id": "run-7",
            "config_hash": "cfg-abc",
            "code_version": "1fe6bb6",
            "parents": [{"table": "toy_gen", "version": 5}],
            "created_at": "2025-01-01T00:00:00Z",
        },
        "history": [
            {"version": 3, "timestamp": "2025-01-01", "operation": "WRITE", "writer": "filters"},
            {"version": 2, "timestamp": "2024-12-31", "operation": "WRITE", "writer": "verify"},
        ],
    }
    return CardMeta(**(base | overrides))


@pytest.fixture(scope="module")
def raw() -> list[dict[str, Any]]:
    return _raw_rows()


@pytest.fixture(scope="module")
def stats(raw: list[dict[str, Any]]) -> CardStats:
    return compute_stats(_frame(raw).lazy())


def test_counts_match_independent_tally(raw: list[dict[str, Any]], stats: CardStats) -> None:
    assert stats.rows == len(raw)
    composition = Counter((r["domain"], r["track"], r["source"]) for r in raw)
    assert {(c.domain, c.track, c.source): c.count for c in stats.composition} == composition
    counts = [c.count for c in stats.composition]
    assert counts == sorted(counts, reverse=True)
    assert stats.domains == dict(Counter(r["domain"] for r in raw))
    assert stats.tracks == dict(Counter(r["track"] for r in raw))
    assert stats.sources == sorted({k[2] for k in KINDS})

    verdicts = Counter(
        (v["verifier"], v["verdict"], v.get("reason")) for r in raw for v in r["verdicts"]
    )
    assert {(v.verifier, v.verdict, v.reason): v.count for v in stats.verdicts} == verdicts
    assert stats.unjudged == sum(1 for r in raw if not r["verdicts"])
    decisions = Counter((r["kept"], r["filter_reason"]) for r in raw)
    assert {(d.kept, d.filter_reason): d.count for d in stats.decisions} == decisions
    assert [d.kept for d in stats.decisions] == sorted(
        (d.kept for d in stats.decisions), key=lambda k: {True: 0, False: 1, None: 2}[k]
    )
    finish = Counter(NULL_KEY if r["finish_reason"] is None else r["finish_reason"] for r in raw)
    assert stats.finish_reasons == dict(finish)


def test_lengths_match_independent_computation(raw: list[dict[str, Any]], stats: CardStats) -> None:
    columns = {
        "prompt_chars": "prompt",
        "completion_chars": "completion",
        "reasoning_chars": "reasoning",
        "answer_chars": "answer",
        "completion_tokens": "completion_tokens",
    }
    assert set(stats.lengths) == set(columns)
    for name, col in columns.items():
        # Python's len() counts code points, as str.len_chars does; "é" and "∑" are one each.
        values = [
            (r[col] if name == "completion_tokens" else len(r[col]))
            for r in raw
            if r[col] is not None
        ]
        s = stats.lengths[name]
        assert s.count == len(values), name
        assert s.empty == values.count(0), name
        assert s.min == min(values) and s.max == max(values), name
        assert s.mean == pytest.approx(sum(values) / len(values)), name
        for pct in (50, 90, 99):
            assert getattr(s, f"p{pct}") == _nearest_rank(values, pct), (name, pct)
        hist = s.histogram
        assert hist.edges == sorted(set(hist.edges)) and all(isinstance(e, int) for e in hist.edges)
        assert len(hist.counts) == len(hist.edges) - 1 <= 40
        assert sum(hist.counts) + s.empty == s.count
        # Every positive value falls in exactly the bin [edges[i], edges[i+1]) that holds it.
        expected = [
            sum(1 for v in values if lo <= v < hi)
            for lo, hi in zip(hist.edges, hist.edges[1:], strict=False)
        ]
        assert hist.counts == expected, name
        # Per-track distributions share the overall edges and add up to the overall counts.
        per_track = [t[name] for t in stats.lengths_by_track.values() if name in t]
        assert all(t.histogram.edges == hist.edges for t in per_track)
        assert sum(t.count for t in per_track) == s.count
    # Long-tailed fields get log bins; answers ("", "42", "x = 3/4", "∑ done") span < a decade.
    assert stats.lengths["completion_chars"].histogram.scale == "log"
    assert stats.lengths["answer_chars"].histogram.scale == "linear"
    assert stats.lengths_by_track["non_reasoning"]["reasoning_chars"].count == 0


def test_small_table_literal_values() -> None:
    raw = [
        {
            "prompt": "p" * n,
            "completion": "c",
            "domain": "math",
            "track": "reasoning",
            "source": "s",
        }
        for n in (1, 2, 3, 4, 100)
    ]
    s = compute_stats(_frame(raw).lazy(), histogram_bins=4)
    p = s.lengths["prompt_chars"]
    assert (p.count, p.empty, p.min, p.p50, p.p90, p.p99, p.max) == (5, 0, 1, 3, 100, 100, 100)
    assert p.mean == 22.0
    # 1..101 over 4 log bins: 1, 101**0.25 = 3.17, 101**0.5 = 10.05, 101**0.75 = 31.9, 101.
    assert (p.histogram.scale, p.histogram.edges, p.histogram.counts) == (
        "log",
        [1, 3, 10, 32, 101],
        [2, 2, 0, 1],
    )
    # No generator recorded token counts: the field is left out, not shown as zero rows.
    assert "completion_tokens" not in s.lengths
    assert s.lengths["reasoning_chars"].count == 0 and s.lengths["reasoning_chars"].mean is None
    assert s.verdicts == [] and s.unjudged == 5
    assert [(d.kept, d.filter_reason, d.count) for d in s.decisions] == [(None, None, 5)]


def test_to_dict_is_json_and_round_trips(stats: CardStats) -> None:
    text = json.dumps(stats.to_dict(), sort_keys=True)
    assert CardStats.from_dict(json.loads(text)) == stats


def test_streams_from_a_parquet_scan(
    tmp_path: Path, raw: list[dict[str, Any]], stats: CardStats
) -> None:
    path = tmp_path / "samples.parquet"
    pq.write_table(to_table([validate_sample(r) for r in raw]), path)
    assert compute_stats(pl.scan_parquet(path)) == stats


def test_rejects_bad_arguments() -> None:
    lf = _frame(_raw_rows(3)).lazy()
    with pytest.raises(ValueError, match="histogram_bins"):
        compute_stats(lf, histogram_bins=0)
    with pytest.raises(ValueError, match="lacks column\\(s\\) verdicts, answer"):
        compute_stats(lf.drop("verdicts", "answer"))


def _front_matter(text: str) -> dict[str, Any]:
    assert text.startswith("---\n")
    head, _, _ = text[4:].partition("\n---\n")
    data = yaml.safe_load(head)
    assert isinstance(data, dict)
    return data


def test_front_matter_has_hub_and_r1f_keys(stats: CardStats) -> None:
    front = _front_matter(card_text(stats, _meta()))
    assert front["pretty_name"] == "toy_sft"
    assert front["license"] == "other"
    assert front["size_categories"] == ["n<1K"]
    assert front["task_categories"] == ["text-generation"]
    assert front["source_datasets"] == stats.sources
    assert "configs" not in front
    assert front["r1f"] == {
        "name": "toy_sft",
        "version": 3,
        "parent_version": 2,
        "content_hash": "c0ffee12",
        "rows": 300,
        "config_hash": "cfg-abc",
        "code_version": "1fe6bb6",
    }


@pytest.mark.parametrize(
    ("rows", "label"),
    [(0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"), (800_000, "100K<n<1M"), (10**7, "10M<n<100M")],
)
def test_size_category_buckets(rows: int, label: str) -> None:
    assert size_category(rows) == label


def _reports(*attached: AttachedReport, searched_from: int = 0, complete: bool = True) -> Any:
    return VersionReports("toy_sft", 3, attached, searched_from, complete)


def test_body_sections_in_order(stats: CardStats) -> None:
    decontam = Report("filter.decontamination", "Decontamination", {}, "No overlap.")
    cost = Report("generation.cost", "Generation cost", {"tokens": 1200, "finish": {"stop": 3}})
    meta = _meta(
        reports=_reports(
            AttachedReport(cost, 1, "r1f generate"), AttachedReport(decontam, 3, "filters")
        )
    )
    text = card_text(stats, meta)
    headings = [line[3:] for line in text.splitlines() if line.startswith("## ")]
    assert headings == [
        "Composition",
        "Length distributions",
        "Verdicts",
        "Filter decisions and reject reasons",
        "Generation cost",
        "Decontamination",
        "Lineage",
        "History",
        "How to load",
    ]
    assert "**300 samples**" in text
    assert "| `math` | `reasoning` | `toy/arithmetic` |" in text
    assert "`toy_gen` v5" in text and "| flow_run_id | `run-7` |" in text
    assert "| 3 | 2025-01-01 | WRITE | filters |" in text
    assert "| rejected | too_long |" in text
    assert 'pl.read_parquet(f"{DIR}/**/*.parquet")' in text
    assert "r1f datasets export toy_sft@3 --to DIR" in text
    # Each report is signed with the version it was stored with; an older one says so.
    assert "_Report `filter.decontamination`, stored with version 3 by `filters`._" in text
    assert (
        "_Report `generation.cost`, stored with version 1 by `r1f generate`; versions 2-3 "
        "added or changed rows without a new `generation.cost` report, so it describes the "
        "rows of version 1._"
    ) in text
    # Without Markdown, the report's data is shown as a table.
    assert "| `tokens` | 1200 |" in text and '| `finish` | `{"stop": 3}` |' in text
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["r1f"]["reports"] == ["generation.cost", "filter.decontamination"]


def test_a_version_without_reports_says_so(stats: CardStats) -> None:
    text = card_text(stats, _meta(reports=_reports(searched_from=2)))
    assert "## Reports\n\nNo reports were stored with versions 2-3" in text
    assert "its writer, `filters.reject`, attached none" in text
    assert yaml.safe_load(text.split("---\n")[1])["r1f"]["reports"] == []
    # Rendered from stats alone (no store), the card has no reports section at all.
    assert "## Reports" not in card_text(stats, _meta())


def test_a_log_cut_short_is_named(stats: CardStats) -> None:
    steps = Report("filter.steps", "Filter steps", {}, "Every step.")
    meta = _meta(reports=_reports(AttachedReport(steps, 3, None), searched_from=2, complete=False))
    text = card_text(stats, meta)
    assert "## Filter steps" in text and "stored with version 3._" in text
    assert "no longer reaches back before version 2" in text


def test_says_when_nothing_judged_or_filtered() -> None:
    raw = [
        {
            "prompt": "hi",
            "completion": "hello",
            "domain": "general",
            "track": "non_reasoning",
            "source": "s",
        }
    ]
    text = card_text(compute_stats(_frame(raw).lazy()), _meta(lineage={}, history=()))
    assert "No verifier has judged these samples yet." in text
    assert "No filter has run yet" in text
    assert "No lineage was recorded" in text and "No history was recorded." in text


def test_plots_are_pngs_referenced_from_readme(tmp_path: Path, stats: CardStats) -> None:
    readme = render_card(stats, _meta(), tmp_path)
    text = readme.read_text(encoding="utf-8")
    pngs = sorted((tmp_path / "plots").glob("*.png"))
    assert {p.stem for p in pngs} == {*LENGTH_FIELDS, "completion_tokens"}
    for png in pngs:
        assert png.read_bytes()[:8] == PNG_MAGIC
        assert f"](plots/{png.name})" in text


def test_rerender_drops_stale_plots(tmp_path: Path, stats: CardStats) -> None:
    render_card(stats, _meta(), tmp_path)
    raw = [{"prompt": "p", "completion": "c", "domain": "d", "track": "reasoning", "source": "s"}]
    render_card(compute_stats(_frame(raw).lazy()), _meta(), tmp_path)
    assert {p.stem for p in (tmp_path / "plots").glob("*.png")} == {
        "prompt_chars",
        "completion_chars",
    }


def test_empty_table(tmp_path: Path) -> None:
    empty = _frame(_raw_rows(3)).clear()
    s = compute_stats(empty.lazy())
    assert (s.rows, s.composition, s.verdicts, s.decisions, s.finish_reasons) == (0, [], [], [], {})
    assert set(s.lengths) == set(LENGTH_FIELDS)
    assert all(v.count == 0 and v.histogram.counts == [] for v in s.lengths.values())
    readme = render_card(s, _meta(parent_version=None), tmp_path)
    text = readme.read_text(encoding="utf-8")
    assert "This table is empty" in text and "the first version" in text
    front = _front_matter(text)
    assert front["size_categories"] == ["n<1K"] and front["r1f"]["rows"] == 0
    assert list((tmp_path / "plots").glob("*.png")) == []


def test_render_is_deterministic(tmp_path: Path, stats: CardStats) -> None:
    meta = _meta(data_files={"train": "data/train-*.parquet"})
    a = render_card(stats, meta, tmp_path / "a").parent
    b = render_card(stats, meta, tmp_path / "b").parent
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 6
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_configs_block(stats: CardStats) -> None:
    meta = _meta(
        data_files={"train": "data/train-*.parquet", "rejected": "data/rejected-*.parquet"}
    )
    text = card_text(stats, meta)
    assert _front_matter(text)["configs"] == [
        {
            "config_name": "default",
            "data_files": [
                {"split": "train", "path": "data/train-*.parquet"},
                {"split": "rejected", "path": "data/rejected-*.parquet"},
            ],
        }
    ]
    assert "datasets.load_dataset(CARD_DIR)" in text
    assert 'pl.read_parquet("data/train-*.parquet")' in text


@pytest.mark.parametrize(
    ("data_files", "message"),
    [({"train split": "data/*.parquet"}, "split name"), ({"train": "/abs/*.parquet"}, "relative")],
)
def test_bad_data_files_are_named(
    stats: CardStats, data_files: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        card_text(stats, _meta(data_files=data_files))


def test_datasets_loads_the_card_directory_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raw: list[dict[str, Any]], stats: CardStats
) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    card = tmp_path / "card"
    (card / "data").mkdir(parents=True)
    pq.write_table(
        to_table([validate_sample(r) for r in raw]), card / "data" / "train-00000-of-00001.parquet"
    )
    render_card(stats, _meta(data_files={"train": "data/train-*.parquet"}), card)
    ds = datasets.load_dataset(str(card), cache_dir=str(tmp_path / "hf_cache"))
    assert list(ds) == ["train"]
    assert ds["train"].num_rows == stats.rows == len(raw)
    assert ds["train"][0]["prompt"] == raw[0]["prompt"]
