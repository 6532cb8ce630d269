"""filters.minhash: tokeniser, signatures against true Jaccard and datasketch, LSH helpers."""

from __future__ import annotations

import random

import numpy as np
import pytest

from filters.minhash import (
    MAX_SIG,
    LSHParams,
    MinHasher,
    approx_threshold,
    band_hashes,
    bucket_pairs,
    choose_bands,
    connected_components,
    estimate_jaccard,
    gram_counts,
    gram_hashes,
    s_curve,
    s_curve_threshold,
    tokenize,
)


def token_texts(text: str, *, symbols: bool = True) -> list[str]:
    tokens = tokenize([text], symbols=symbols)
    return [tokens.text(t, t + 1) for t in range(len(tokens.hashes))]


def vocabulary(rng: random.Random, size: int = 3000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choices(letters, k=rng.randint(2, 11))) for _ in range(size)]


# --- tokeniser ---------------------------------------------------------------------


def test_words_and_symbols() -> None:
    assert token_texts("Hello, World!  x=-2") == ["hello", ",", "world", "!", "x", "=", "-", "2"]
    assert token_texts("Hello, World!  x=-2", symbols=False) == ["hello", "world", "x", "2"]
    assert token_texts("don't  stop\tnow\n") == ["don", "'", "t", "stop", "now"]


def test_spacing_and_case_do_not_matter() -> None:
    a = tokenize(["Solve 3x + 2 = 7"]).hashes
    b = tokenize(["solve 3X+2=7"]).hashes
    assert np.array_equal(a, b)


def test_unicode_classes() -> None:
    assert token_texts("Ça va? Ünïcode") == ["ça", "va", "?", "ünïcode"]
    # CJK: one token per character; CJK punctuation is a symbol.
    assert token_texts("你好世界。") == ["你", "好", "世", "界", "。"]
    assert token_texts("你好世界。", symbols=False) == ["你", "好", "世", "界"]
    # No-break space separates; math signs and emoji are symbols.
    times, at_most = "\u00d7", "\u2264"
    assert token_texts(f"a\u00a0b 2{times}3 {at_most} 7 😀") == [
        "a",
        "b",
        "2",
        times,
        "3",
        at_most,
        "7",
        "😀",
    ]
    assert token_texts("“quoted”—dash", symbols=False) == ["quoted", "dash"]
    assert token_texts("Кошка и собака") == ["кошка", "и", "собака"]


def test_long_tokens_hash_by_all_their_bytes() -> None:
    words = ["abcdefgh", "abcdefghi", "abcdefghij", "abcdefghijklmnopq", "abcdefghijklmnopr"]
    hashes = tokenize([" ".join(words)]).hashes
    assert len(set(hashes.tolist())) == len(words)
    assert token_texts("x" * 1000 + " y") == ["x" * 1000, "y"]


def test_token_hash_does_not_depend_on_position_or_batch() -> None:
    alone = tokenize(["averyveryverylongword"]).hashes[0]
    inside = tokenize(["", "pad", "xx averyveryverylongword yy"]).hashes[2]
    assert alone == inside


def test_token_hashes_are_pinned() -> None:
    # The hash must be the same in every process and release: signatures are stored.
    assert tokenize(["hello"]).hashes.tolist() == [10943157772500783653]


def test_nul_and_empty_documents() -> None:
    tokens = tokenize(["a\x00b", "", "c"])
    assert tokens.counts.tolist() == [2, 0, 1]
    assert tokenize([]).counts.tolist() == []


def test_grams_stay_inside_documents() -> None:
    tokens = tokenize(["a b c d e f", "x y", "", "p q r s t"])
    hashes, first = gram_hashes(tokens, 5, short=True)
    assert gram_counts(tokens, 5, short=True).tolist() == [2, 1, 0, 1]
    assert first.tolist() == [0, 1, 6, 8]
    _, first_full = gram_hashes(tokens, 5, short=False)
    assert first_full.tolist() == [0, 1, 8]
    again, _ = gram_hashes(tokenize(["zz a b c d e"]), 5, short=False)
    assert again[1] == hashes[0]


# --- signatures --------------------------------------------------------------------


def shingle_set(text: str, k: int) -> set[tuple[str, ...]]:
    words = token_texts(text)
    return {tuple(words[i : i + k]) for i in range(len(words) - k + 1)}


def similar_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """Pairs of 150-word texts with anything from no to full overlap."""
    rng = random.Random(seed)
    vocab = vocabulary(rng)
    pairs = []
    for _ in range(n):
        words = rng.choices(vocab, k=150)
        edited = list(words)
        for _ in range(rng.randint(0, 40)):
            edited[rng.randrange(len(edited))] = rng.choice(vocab)
        pairs.append((" ".join(words), " ".join(edited)))
    return pairs


def test_estimates_track_true_jaccard() -> None:
    pairs = similar_pairs(300, seed=1)
    truth = []
    for a, b in pairs:
        sa, sb = shingle_set(a, 5), shingle_set(b, 5)
        truth.append(len(sa & sb) / len(sa | sb))
    hasher = MinHasher(num_perm=128, shingle=5, seed=3)
    sigs = hasher.signatures([t for pair in pairs for t in pair])
    est = estimate_jaccard(sigs[0::2], sigs[1::2])
    errors = np.asarray(est) - np.asarray(truth)
    assert abs(errors.mean()) < 0.01
    assert np.abs(errors).mean() < 0.04  # standard error at J=0.5 is 0.044
    assert max(truth) > 0.9 and min(truth) < 0.3
    # Independent permutations give variance J (1 - J) / num_perm: correlated
    # ones would inflate it. 300 pairs measure the ratio within about +-0.25.
    j = np.asarray(truth)
    inside = (j > 0.05) & (j < 0.95)
    z = errors[inside] / np.sqrt(j[inside] * (1 - j[inside]) / 128)
    assert 0.7 < float(np.mean(z**2)) < 1.3


def test_estimates_agree_with_datasketch() -> None:
    datasketch = pytest.importorskip("datasketch")
    pairs = similar_pairs(200, seed=2)
    hasher = MinHasher(num_perm=128, shingle=5, seed=5)
    sigs = hasher.signatures([t for pair in pairs for t in pair])
    ours = np.asarray(estimate_jaccard(sigs[0::2], sigs[1::2]))
    theirs = []
    for a, b in pairs:
        ma, mb = (datasketch.MinHash(num_perm=128, seed=5) for _ in range(2))
        ma.update_batch([" ".join(s).encode() for s in shingle_set(a, 5)])
        mb.update_batch([" ".join(s).encode() for s in shingle_set(b, 5)])
        theirs.append(ma.jaccard(mb))
    diff = ours - np.asarray(theirs)
    # Two independent estimators of the same quantity: no bias, spread ~ sqrt(2) x one's.
    assert abs(diff.mean()) < 0.01
    assert diff.std() < 0.07
    assert np.corrcoef(ours, theirs)[0, 1] > 0.97


def test_signatures_do_not_depend_on_batching() -> None:
    rng = random.Random(4)
    vocab = vocabulary(rng)
    texts = [" ".join(rng.choices(vocab, k=rng.randint(0, 400))) for _ in range(60)]
    texts += ["x", "", "a b"]
    whole = MinHasher().signatures(texts)
    tiny = MinHasher(batch_chars=500).signatures(texts)
    one_by_one = np.concatenate([MinHasher().signatures([t]) for t in texts])
    assert np.array_equal(whole, tiny)
    assert np.array_equal(whole, one_by_one)
    assert whole.dtype == np.uint32 and whole.shape == (len(texts), 128)


def test_signature_cases() -> None:
    hasher = MinHasher(num_perm=64)
    sigs = hasher.signatures(["The cat sat.", "the  CAT sat .", "", "   ", "dog"])
    assert np.array_equal(sigs[0], sigs[1])
    assert (sigs[2] == MAX_SIG).all() and (sigs[3] == MAX_SIG).all()
    assert estimate_jaccard(sigs[0], sigs[4]) < 0.2
    other_seed = MinHasher(num_perm=64, seed=2).signatures(["The cat sat."])
    assert not np.array_equal(other_seed[0], sigs[0])


def test_bad_hasher_arguments() -> None:
    with pytest.raises(ValueError, match="num_perm"):
        MinHasher(num_perm=0)
    with pytest.raises(ValueError, match="shingle"):
        MinHasher(shingle=0)


# --- LSH ---------------------------------------------------------------------------


def test_s_curve_threshold() -> None:
    for bands, rows in ((9, 13), (14, 9), (20, 5)):
        t = s_curve_threshold(bands, rows)
        assert float(s_curve(t, bands, rows)) == pytest.approx(0.5)
        assert approx_threshold(bands, rows) == pytest.approx((1 / bands) ** (1 / rows))
    assert "50% at J=0.819" in LSHParams(9, 13).describe()


def test_choose_bands_matches_datasketch_search() -> None:
    lsh = pytest.importorskip("datasketch.lsh")
    for threshold, num_perm in ((0.8, 128), (0.5, 128), (0.9, 64)):
        ours = choose_bands(threshold, num_perm)
        theirs = lsh._optimal_param(threshold, num_perm, 0.5, 0.5)
        assert ours == theirs
    bands, rows = choose_bands(0.8, 128, fp_weight=0.1, fn_weight=0.9)
    assert bands * rows <= 128
    assert s_curve_threshold(bands, rows) < s_curve_threshold(9, 13)  # recall-leaning
    with pytest.raises(ValueError, match="threshold"):
        choose_bands(1.0, 128)


def test_band_hashes_and_buckets() -> None:
    rng = np.random.default_rng(0)
    sigs = rng.integers(0, 2**32, size=(6, 12), dtype=np.uint32)
    sigs[3] = sigs[0]
    sigs[5, :4] = sigs[1, :4]  # shares band 0 only
    keys = band_hashes(sigs, LSHParams(3, 4))
    assert keys.shape == (6, 3)
    u, v = bucket_pairs(keys)
    assert sorted(zip(u.tolist(), v.tolist(), strict=True)) == [(3, 0), (5, 1)]
    with pytest.raises(ValueError, match="exceeds num_perm"):
        band_hashes(sigs, LSHParams(4, 4))


def reference_components(n: int, edges: list[tuple[int, int]]) -> list[int]:
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)
    return [find(x) for x in range(n)]


def test_connected_components_against_union_find() -> None:
    rng = random.Random(0)
    for n, m in ((10, 0), (50, 30), (500, 400), (2000, 3000)):
        edges = [(rng.randrange(n), rng.randrange(n)) for _ in range(m)]
        u = np.array([a for a, _ in edges], dtype=np.int64)
        v = np.array([b for _, b in edges], dtype=np.int64)
        assert connected_components(n, u, v).tolist() == reference_components(n, edges)
    chain = np.arange(999, 0, -1)
    assert (connected_components(1000, chain, chain - 1) == 0).all()
