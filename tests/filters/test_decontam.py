"""filters.decontam: planted benchmark leaks at 8 and 13 tokens, clean data, reports, JSONL."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from filters.decontam import (
    TOY_BENCHMARK,
    BenchmarkIndex,
    DecontamReport,
    decontaminate_jsonl,
    load_benchmark,
    report_markdown,
)
from filters.minhash import tokenize
from generators.tasks import SOURCES

TOY = load_benchmark(TOY_BENCHMARK)


def filler(rng: random.Random, words: int) -> str:
    vocab = ["the", "a", "of", "to", "and", "we", "then", "so", "next", "value", "step"]
    return " ".join(rng.choice(vocab) for _ in range(words))


def window(text: str, start: int, length: int) -> str:
    """`length` words of `text` from word `start`, re-cased and with punctuation changed."""
    tokens = tokenize([text], symbols=False)
    words = [tokens.text(t, t + 1) for t in range(len(tokens.hashes))][start : start + length]
    return ", ".join(w.upper() if i % 3 == 0 else w for i, w in enumerate(words)) + "!"


def normalised(text: str) -> str:
    tokens = tokenize([text], symbols=False)
    return tokens.text(0, len(tokens.hashes))


def planted(length: int, count: int, seed: int) -> list[tuple[str, int]]:
    """`count` texts, each hiding `length` words of one toy benchmark item; with the item."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        item = rng.randrange(len(TOY.texts))
        n_words = len(tokenize([TOY.texts[item]], symbols=False).hashes)
        start = rng.randrange(n_words - length + 1)
        leak = window(TOY.texts[item], start, length)
        out.append((f"{filler(rng, 30)} {leak} {filler(rng, 30)}", item))
    return out


def test_toy_benchmark_is_bundled() -> None:
    assert len(TOY.texts) == 50 and TOY.text_field == "text" and TOY.name == "toy_benchmark"
    index = BenchmarkIndex([TOY], n=13)
    assert index.skipped == [0] and index.grams[13] > 500


@pytest.mark.parametrize("n", [8, 13])
def test_planted_leaks_are_found(n: int) -> None:
    index = BenchmarkIndex([TOY], n=n)
    leaks = planted(n, 100, seed=n)
    hits = index.check([t for t, _ in leaks])
    assert all(h is not None for h in hits)
    for hit, (_, item) in zip(hits, leaks, strict=True):
        assert hit is not None and hit.benchmark == "toy_benchmark" and hit.n == n
        assert hit.ngram in normalised(TOY.texts[hit.item])
        # The leaked words may also occur in another item; then either is a right answer.
        assert hit.item == item or hit.ngram in normalised(TOY.texts[item])


def test_leak_shorter_than_n_is_not_found_at_n() -> None:
    leaks = planted(10, 50, seed=3)
    assert all(h is None for h in BenchmarkIndex([TOY], n=13).check([t for t, _ in leaks]))
    both = BenchmarkIndex([TOY], n=(8, 13)).check([t for t, _ in leaks])
    assert all(h is not None and h.n == 8 for h in both)


def test_longest_then_earliest_match_is_reported() -> None:
    item = TOY.texts[2]
    text = f"{window(item, 0, 9)} filler words here {window(item, 0, 20)}"
    hit = BenchmarkIndex([TOY], n=(8, 13)).check([text])[0]
    assert hit is not None and hit.n == 13 and hit.item == 2
    assert hit.position == 12  # 9 words + 3 filler words before the 13-gram
    assert hit.ngram == "a train travels at 64 km per hour for 3 hours and then"


def test_no_false_hits_on_clean_data() -> None:
    index = BenchmarkIndex([TOY], n=13)
    texts = []
    for source in SOURCES.values():
        for task in source.generate(300, seed=11, difficulty=2):
            texts += [task.prompt, task.solution]
    rng = random.Random(0)
    texts += [filler(rng, 500) for _ in range(50)]
    assert [h for h in index.check(texts) if h is not None] == []
    # 8-grams on unrelated prose: nothing either.
    assert all(h is None for h in BenchmarkIndex([TOY], n=8).check(texts[-50:]))


def test_benchmark_files_fields_and_short_items(tmp_path: Path) -> None:
    pq.write_table(
        pa.table(
            {
                "question": [
                    "What is the capital city of the small country of Freedonia today?",
                    "Name two primes.",
                ],
                "answer": ["Fredville", "2, 3"],
            }
        ),
        tmp_path / "trivia.parquet",
    )
    bench = load_benchmark(tmp_path / "trivia.parquet")
    assert bench.text_field == "question"  # found among the usual names
    index = BenchmarkIndex.from_files([TOY_BENCHMARK, tmp_path / "trivia.parquet"], n=13)
    assert index.skipped == [0, 1]  # "Name two primes." is under 8 tokens
    # 12 tokens < 13: matched whole.
    hits = index.check(
        [
            "so: what is the capital city of the small country of freedonia today? easy",
            "what is the capital city of the small country of freedonia",  # not all of it
            "name two primes",
        ]
    )
    assert hits[0] is not None and hits[0].benchmark == "trivia" and hits[0].n == 12
    assert hits[1] is None and hits[2] is None


def test_benchmark_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bench.jsonl"
    bad.write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"none of text, question.*fields: body"):
        load_benchmark(bad)
    with pytest.raises(ValueError, match="no field 'stem'"):
        load_benchmark(bad, text_field="stem")
    (tmp_path / "x.csv").write_text("text\nhello\n")
    with pytest.raises(ValueError, match=r"\.jsonl or \.parquet"):
        load_benchmark(tmp_path / "x.csv")
    with pytest.raises(ValueError, match="no such file"):
        load_benchmark(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="must differ"):
        BenchmarkIndex([TOY, TOY])


def test_jsonl_round_trip_and_report(tmp_path: Path) -> None:
    rng = random.Random(7)
    rows: list[dict[str, str | int]] = [
        {"id": f"s{i}", "prompt": filler(rng, 20), "completion": filler(rng, 80), "k": i}
        for i in range(40)
    ]
    rows[3]["prompt"] = "Please solve: " + window(TOY.texts[10], 0, 16)
    rows[7]["completion"] = f"{rows[7]['completion']} {window(TOY.texts[40], 2, 14)}"
    rows[9] = {"id": "s9", "completion": window(TOY.texts[10], 1, 15)}  # no prompt field
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = decontaminate_jsonl(source, [TOY_BENCHMARK], tmp_path / "out.jsonl", n=13)
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["k"] for r in out if "k" in r] == [r["k"] for r in rows if "k" in r]
    flagged = {r["id"]: r for r in out if r["contaminated"]}
    assert set(flagged) == {"s3", "s7", "s9"}
    assert flagged["s3"]["benchmark"] == "toy_benchmark"
    assert flagged["s3"]["ngram"].startswith("a library has 340 books")
    assert all(r["benchmark"] is None and r["ngram"] is None for r in out if not r["contaminated"])

    assert report.samples == 40 and report.contaminated == 3
    toy = report.benchmarks["toy_benchmark"]
    assert toy.contaminated == 3 and toy.items_leaked == {10, 40}
    assert dict(toy.by_field) == {"prompt": 1, "completion": 2}
    assert {e["id"] for e in toy.examples} == {"s3", "s7", "s9"}
    card = report_markdown(report)
    assert "## Decontamination" in card and "| toy_benchmark | 50 | 3 |" in card
    assert "`s3` (prompt) matches toy_benchmark item 10" in card
    assert report.as_dict()["benchmarks"][0]["items_leaked"] == 2


def test_jsonl_bad_rows_are_reported_and_left_out(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(
        json.dumps({"id": 1, "text": "hello"})
        + "\n"
        + json.dumps({"id": 2, "prompt": 5})
        + "\n[1]\n"
        + json.dumps({"id": 3, "prompt": "fine"})
        + "\n"
    )
    report = decontaminate_jsonl(source, [TOY_BENCHMARK], tmp_path / "out.jsonl")
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in out] == [3]
    assert report.bad_lines is not None and report.bad_lines.count == 3
    first, second, third = report.bad_lines.examples
    assert first.startswith(f"{source}:1: none of 'prompt', 'completion'")
    assert second == f"{source}:2: 'prompt' is a int, not a string"
    assert third == f"{source}:3: expected a JSON object, got an array"
    assert report.as_dict()["bad_lines"] == 3


def test_empty_report_renders() -> None:
    index = BenchmarkIndex([TOY], n=(8, 13))
    report = DecontamReport.for_index(index, ["completion"])
    report.record("a", [])
    card = report_markdown(report)
    assert "1 samples checked (completion) for 8 and 13-gram" in card
    assert "Examples" not in card
