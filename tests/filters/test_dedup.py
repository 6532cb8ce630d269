"""filters.dedup: exact and near duplicates, planted near-duplicates, survivors, JSONL."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from filters.dedup import NearDedup, dedup_jsonl, exact_duplicates, near_duplicates
from filters.minhash import tokenize

THRESHOLD = 0.8


def zipf_text(rng: random.Random, vocab: list[str], weights: list[float], words: int) -> str:
    """Words drawn with Zipf frequencies, cut into sentences with punctuation."""
    picked = rng.choices(vocab, weights=weights, k=words)
    out = []
    for i, word in enumerate(picked):
        out.append(word)
        if i % 12 == 11:
            out[-1] += rng.choice([".", ",", ";", "?"])
    return " ".join(out)


def make_corpus(
    seed: int, distinct: int, planted: int, edits: tuple[int, int] = (1, 3)
) -> tuple[list[str], list[str], dict[str, str]]:
    """`distinct` unrelated ~200-word texts plus `planted` copies with a few words edited.

    Returns ids, texts and each copy's source id.
    """
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["".join(rng.choices(letters, k=rng.randint(1, 10))) for _ in range(20_000)]
    weights = [1.0 / (rank + 1) for rank in range(len(vocab))]
    ids = [f"doc-{i:05d}" for i in range(distinct)]
    texts = [zipf_text(rng, vocab, weights, rng.randint(180, 220)) for _ in range(distinct)]
    source_of = {}
    for j in range(planted):
        src = rng.randrange(distinct)
        words = texts[src].split(" ")
        for _ in range(rng.randint(*edits)):
            words[rng.randrange(len(words))] = rng.choice(vocab)
        copy_id = f"copy-{j:05d}"
        ids.append(copy_id)
        texts.append(" ".join(words))
        source_of[copy_id] = ids[src]
    return ids, texts, source_of


def groups(ids: list[str], duplicate_of: list[str | None]) -> dict[str, str]:
    """Each id's cluster, named by its survivor."""
    return {i: d if d is not None else i for i, d in zip(ids, duplicate_of, strict=True)}


# --- exact ---------------------------------------------------------------------------


def test_exact_normalisation() -> None:
    texts = [
        "What is 2 + 3?",
        "what is 2+3 ?",  # case and spacing: same
        "WHAT  IS\n2 + 3?",  # same
        "What is 2 - 3?",  # another sign: different
        "What is 2 + 3",  # no question mark: different
        "What is 23?",  # digits joined: different
        "",
        "   ",  # empty after normalisation: same as ""
    ]
    ids = [f"r{i}" for i in range(len(texts))]
    assert exact_duplicates(ids, texts) == [None, "r0", "r0", None, None, None, None, "r6"]


def test_exact_survivor_is_smallest_id_whatever_the_order() -> None:
    ids = ["b", "c", "a", "d"]
    texts = ["same text", "same text", "same text", "other"]
    assert exact_duplicates(ids, texts) == ["a", "a", None, None]
    assert exact_duplicates(ids[::-1], texts[::-1]) == [None, None, "a", "a"]


def test_rank_prefers_a_copy() -> None:
    ids = ["a", "b", "c"]
    texts = ["x y z"] * 3
    # b is the one to keep (say: kept and verified correct), whatever its id.
    assert exact_duplicates(ids, texts, rank=[1, 0, 1]) == ["b", None, "b"]
    with pytest.raises(ValueError, match="rank"):
        exact_duplicates(ids, texts, rank=[0, 1])


# --- near ----------------------------------------------------------------------------


def test_planted_near_duplicates_recall_and_precision() -> None:
    ids, texts, source_of = make_corpus(seed=0, distinct=2000, planted=300)
    result = near_duplicates(ids, texts, threshold=THRESHOLD)
    cluster = groups(ids, result.duplicate_of)
    # Recall: a planted copy is found when it lands in its source's cluster.
    found = sum(cluster[c] == cluster[s] for c, s in source_of.items())
    recall = found / len(source_of)
    # Precision: a flagged row must be planted-related to the copy it points at.
    truth_group = {i: source_of.get(i, i) for i in ids}
    flagged = [(i, d) for i, d in zip(ids, result.duplicate_of, strict=True) if d is not None]
    right = sum(truth_group[i] == truth_group[d] for i, d in flagged)
    precision = right / len(flagged)
    print(
        f"\nplanted near-duplicates: recall {recall:.3f} ({found}/{len(source_of)}), "
        f"precision {precision:.3f} ({right}/{len(flagged)}); {result.stats['describe']}"
    )
    assert recall >= 0.9
    assert precision >= 0.95
    assert result.stats["docs"] == len(ids)
    assert result.stats["bands"] * result.stats["rows"] <= 128


def true_jaccard(a: str, b: str, k: int = 5) -> float:
    def shingles(text: str) -> set[tuple[str, ...]]:
        tokens = tokenize([text])
        words = [tokens.text(t, t + 1) for t in range(len(tokens.hashes))]
        return {tuple(words[i : i + k]) for i in range(len(words) - k + 1)}

    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


def test_threshold_separates_close_from_loose_copies() -> None:
    # 1 to 15 of ~200 words edited: true Jaccard from about 0.95 down to 0.45.
    ids, texts, source_of = make_corpus(seed=5, distinct=1000, planted=300, edits=(1, 15))
    result = near_duplicates(ids, texts, threshold=THRESHOLD)
    cluster = groups(ids, result.duplicate_of)
    text_of = dict(zip(ids, texts, strict=True))
    jaccard = {c: true_jaccard(text_of[c], text_of[s]) for c, s in source_of.items()}
    close = [c for c, j in jaccard.items() if j >= THRESHOLD + 0.05]
    loose = [c for c, j in jaccard.items() if j < THRESHOLD - 0.1]
    found_close = sum(cluster[c] == cluster[source_of[c]] for c in close)
    found_loose = sum(cluster[c] == cluster[source_of[c]] for c in loose)
    flagged = [(i, d) for i, d in zip(ids, result.duplicate_of, strict=True) if d is not None]
    flagged_j = [true_jaccard(text_of[i], text_of[d]) for i, d in flagged]
    strict = sum(j >= THRESHOLD for j in flagged_j)
    near = sum(j >= THRESHOLD - 0.1 for j in flagged_j)
    print(
        f"\nJ >= {THRESHOLD + 0.05:.2f}: {found_close}/{len(close)} found; "
        f"J < {THRESHOLD - 0.1:.2f}: {found_loose}/{len(loose)} flagged; flagged rows with "
        f"true J >= {THRESHOLD}: {strict}/{len(flagged)}, >= {THRESHOLD - 0.1:.1f}: {near}"
    )
    assert found_close >= 0.95 * len(close)
    assert found_loose == 0
    # 128 permutations estimate J within about +-0.035: pairs just under the
    # threshold pass sometimes (and pull their cluster along), none far under.
    assert near >= 0.97 * len(flagged)


def test_survivor_does_not_depend_on_order() -> None:
    ids, texts, _ = make_corpus(seed=1, distinct=300, planted=80)
    first = dict(zip(ids, near_duplicates(ids, texts).duplicate_of, strict=True))
    perm = np.random.default_rng(0).permutation(len(ids))
    shuffled = near_duplicates([ids[i] for i in perm], [texts[i] for i in perm])
    assert dict(zip([ids[i] for i in perm], shuffled.duplicate_of, strict=True)) == first
    survivors = {d for d in first.values() if d is not None}
    assert all(first[s] is None for s in survivors)  # a survivor points nowhere


def test_streaming_batches_give_the_same_answer() -> None:
    ids, texts, _ = make_corpus(seed=2, distinct=400, planted=60)
    whole = near_duplicates(ids, texts)
    dedup = NearDedup()
    for lo in range(0, len(ids), 97):
        dedup.add(ids[lo : lo + 97], texts[lo : lo + 97])
    assert dedup.finish().duplicate_of == whole.duplicate_of


def test_unverified_band_hash_mode() -> None:
    ids, texts, source_of = make_corpus(seed=3, distinct=400, planted=60)
    result = near_duplicates(ids, texts, threshold=THRESHOLD, verify=False)
    assert result.stats["verified_pairs"] is None
    assert (result.stats["bands"], result.stats["rows"]) == (9, 13)
    cluster = groups(ids, result.duplicate_of)
    found = sum(cluster[c] == cluster[s] for c, s in source_of.items())
    assert found >= 0.7 * len(source_of)  # the balanced S-curve is at 0.82


def test_explicit_bands_and_threshold_text() -> None:
    dedup = NearDedup(bands=16, rows=8, threshold=0.7)
    text = dedup.describe()
    assert "16 bands x 8 rows" in text and "J >= 0.70" in text
    with pytest.raises(ValueError, match="both bands and rows"):
        NearDedup(bands=4)
    with pytest.raises(ValueError, match="num_perm"):
        NearDedup(bands=20, rows=8)


def test_short_texts_are_near_duplicates_only_when_equal() -> None:
    ids = ["a", "b", "c", "d"]
    texts = ["Compute 12+4.", "compute 12 + 4.", "Compute 12-4.", "Hi!"]
    assert near_duplicates(ids, texts).duplicate_of == [None, "a", None, None]


# --- JSONL ---------------------------------------------------------------------------


def write_rows(path: Path, rows: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def read_rows(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_dedup_jsonl_on_prompts_and_on_completions(tmp_path: Path) -> None:
    ids, texts, source_of = make_corpus(seed=4, distinct=200, planted=30)
    rows = [
        {"id": i, "prompt": f"Problem {n % 50}: add the numbers.", "completion": t, "extra": n}
        for n, (i, t) in enumerate(zip(ids, texts, strict=True))
    ]
    source = tmp_path / "in.jsonl"
    write_rows(source, rows)
    logged: list[str] = []
    stats = dedup_jsonl(source, tmp_path / "c.jsonl", field="completion", log=logged.append)
    out = read_rows(tmp_path / "c.jsonl")
    assert [r["extra"] for r in out] == list(range(len(rows)))  # order and fields kept
    assert "bands" in logged[0] and stats["field"] == "completion"
    flagged = {r["id"]: r["duplicate_of"] for r in out if r["duplicate_of"] is not None}
    assert len(flagged) >= 0.9 * len(source_of)
    assert all(isinstance(d, str) for d in flagged.values())

    dedup_jsonl(source, tmp_path / "p.jsonl", field="prompt", method="exact")
    by_prompt = read_rows(tmp_path / "p.jsonl")
    assert sum(r["duplicate_of"] is None for r in by_prompt) == 50


def test_dedup_jsonl_reports_bad_rows_and_dedups_the_rest(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(
        b"".join(
            [
                b'{"id": "a", "completion": "x y z"}\n',
                b'{"id": "a", "completion": "y"}\n',  # repeated id
                b'{"completion": "no id"}\n',  # no sample_id, id or prompt
                b'{"id": "b", "prompt": "x"}\n',  # no completion
                b"{broken\n",
                b'{"id": "c", "completion": "\\ud800"}\n',  # lone surrogate
                b'{"id": "d", "completion": "x y z"}\n',
            ]
        )
    )
    stats = dedup_jsonl(source, tmp_path / "out.jsonl", method="exact")
    out = read_rows(tmp_path / "out.jsonl")
    assert [(r["id"], r["duplicate_of"]) for r in out] == [("a", None), ("d", "a")]
    assert stats["bad_lines"] == 5
    reasons = "\n".join(stats["bad_line_examples"])
    assert f"{source}:2: id 'a' already used on line 1" in reasons
    assert f"{source}:3: no id" in reasons
    assert f"{source}:4: 'completion' is missing" in reasons
    assert f"{source}:5: invalid JSON" in reasons
    assert f"{source}:6: invalid JSON (lone surrogate \\ud800" in reasons
    with pytest.raises(ValueError, match="method"):
        dedup_jsonl(source, tmp_path / "out.jsonl", method="fuzzy")  # type: ignore[arg-type]


def test_dedup_jsonl_takes_the_rows_import_takes(tmp_path: Path) -> None:
    # No `id`: rows are named by the sample id import gives them, and their sample_index
    # keeps two samples of one prompt apart, as in the store.
    source = tmp_path / "in.jsonl"
    rows = [
        {"prompt": "p", "completion": "same text here", "sample_index": 0},
        {"prompt": "p", "completion": "same text here", "sample_index": 1},
    ]
    write_rows(source, rows)
    dedup_jsonl(source, source, method="exact")  # in place: read fully, then replaced
    out = read_rows(source)
    assert out[0]["duplicate_of"] is None or out[1]["duplicate_of"] is None
    assert {r["sample_index"] for r in out} == {0, 1}
    assert sum(r["duplicate_of"] is not None for r in out) == 1
