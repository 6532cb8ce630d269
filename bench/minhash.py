"""Benchmark: our MinHash + LSH against datasketch's MinHash + MinHashLSH, one core each.

    python bench/minhash.py           # 100,000 documents
    python bench/minhash.py --quick   # 5,000 documents, under a minute

The corpus: synthetic documents of pseudo-words drawn with Zipf frequencies
(a 50,000-word vocabulary, frequent words short), with sentence punctuation
and numbers; lengths log-normal around 3 KB with a tail cut at 64 KB. One
document in ten is a planted copy of an earlier one with 0-5% of its words
replaced (true Jaccard of 5-word shingles from 1.0 down to about 0.6).

Both sides get the same work, from text to duplicate clusters, with the same
parameters: 128 permutations, 5-token shingles, and the bands x rows that
`NearDedup` picks for threshold 0.8 (14 x 9). Tokens are the same on both
sides (lowercase; runs of letters and digits; each punctuation character a
token): ours from `filters.minhash.tokenize`, the anchor's from a regex, as a
datasketch user would write it.

- ours: `MinHasher.signatures` over all texts, then `NearDedup`
  (`add_signatures` + `finish`: band hashes, buckets, verification of each
  candidate pair at estimated J >= 0.8, clusters);
- anchor: per batch of 1,000 documents, shingles as bytes in Python,
  `MinHash.bulk`, then for each document `MinHashLSH.query` followed by
  `insert` (candidates are the earlier documents sharing a band), and a
  union-find over the candidate pairs. datasketch does not verify
  candidates; that costs it precision, not time.

Each side runs in its own child process, pinned to the same single CPU, and
builds the corpus itself from the seed (not timed; a digest checks both built
the same texts). Reported: documents per second end to end, MB/s, the ratio,
recall on planted copies with true J >= 0.8, precision of flagged documents
(pointing at their own source), and how far the two sides' candidates and
flags agree.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import (  # noqa: E402
    emit_json,
    print_table,
    rounded,
    run_child,
    write_result,
)

FULL_DOCS = 100_000
QUICK_DOCS = 5_000
SEED = 20250122
NUM_PERM = 128
SHINGLE = 5
THRESHOLD = 0.8
TARGET_RATIO = 10.0
VOCABULARY = 50_000
MEAN_WORDS = 480  # about 3 KB of text
MAX_CHARS = 64 * 1024
PLANTED_SHARE = 0.1
MAX_EDIT_SHARE = 0.05
ANCHOR_BATCH = 1_000
STEP_TIMEOUT_S = 3_000
RSS_CAP_GB = 8.0


# --- corpus --------------------------------------------------------------------------


def plan(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Which documents are planted copies: (source index or -1, share of words edited)."""
    rng = np.random.default_rng([seed, 1])
    copies = rng.random(n) < PLANTED_SHARE
    copies[0] = False
    source = np.where(copies, (rng.random(n) * np.arange(n)).astype(np.int64), -1)
    # A copy of a copy would make its group ambiguous: point at the original instead.
    for i in np.flatnonzero(copies):
        while source[source[i]] >= 0:
            source[i] = source[source[i]]
    edit = np.where(copies, rng.random(n) * MAX_EDIT_SHARE, 0.0)
    return source, edit


def make_corpus(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng([seed, 2])
    letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
    letter_p = np.linspace(2.0, 0.2, len(letters))
    letter_p /= letter_p.sum()
    words: set[str] = set()
    vocab: list[str] = []
    while len(vocab) < VOCABULARY:
        rank = len(vocab)
        length = 1 + int(min(11, np.log2(rank + 2) * 0.8 + rng.integers(0, 3)))
        word = "".join(rng.choice(letters, size=length, p=letter_p))
        if word not in words:
            words.add(word)
            vocab.append(word)
    weights = 1.0 / np.arange(1, VOCABULARY + 1)
    cdf = np.cumsum(weights) / weights.sum()
    vocab_array = np.array(vocab, dtype=object)
    source, edit = plan(n, seed)
    texts: list[str] = []
    tokens_of: dict[int, list[str]] = {}
    needed = set(source[source >= 0].tolist())
    for i in range(n):
        if source[i] >= 0:
            picked = list(tokens_of[int(source[i])])
            changes = round(edit[i] * len(picked))
            at = rng.integers(0, len(picked), size=changes)
            fresh = vocab_array[np.searchsorted(cdf, rng.random(changes))]
            for position, word in zip(at.tolist(), fresh.tolist(), strict=True):
                picked[position] = word
        else:
            count = int(np.clip(rng.lognormal(np.log(MEAN_WORDS) - 0.32, 0.8), 20, 20_000))
            picked = vocab_array[np.searchsorted(cdf, rng.random(count))].tolist()
            for position in range(11, count, 12):
                picked[position] += "." if position % 36 == 35 else ","
            for position in rng.integers(0, count, size=count // 40).tolist():
                picked[position] = str(int(rng.integers(0, 10_000)))
        if i in needed:
            tokens_of[i] = picked
        text = " ".join(picked)
        if len(text) > MAX_CHARS:
            text = text[: text.rfind(" ", 0, MAX_CHARS)]
        texts.append(text)
    return texts


def digest(texts: list[str]) -> str:
    h = hashlib.sha256()
    for text in texts:
        h.update(text.encode())
        h.update(b"\x00")
    return h.hexdigest()[:16]


_TOKEN = re.compile(r"[0-9a-z]+|[^\s0-9a-z]")


def python_shingles(text: str) -> list[bytes]:
    """The anchor's shingles: the same tokens as ours (the corpus is ASCII), as bytes."""
    tokens = _TOKEN.findall(text.lower())
    if 0 < len(tokens) < SHINGLE:
        return [" ".join(tokens).encode()]
    return [" ".join(tokens[i : i + SHINGLE]).encode() for i in range(len(tokens) - SHINGLE + 1)]


def union_find_labels(n: int, pairs: list[tuple[int, int]]) -> list[int]:
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [find(x) for x in range(n)]


# --- the two sides (children) --------------------------------------------------------


def lsh_params() -> tuple[int, int]:
    from filters.dedup import NearDedup

    params = NearDedup(threshold=THRESHOLD, num_perm=NUM_PERM, shingle=SHINGLE).params
    return params.bands, params.rows


def step_ours(n: int, seed: int) -> dict[str, Any]:
    from filters.dedup import NearDedup
    from filters.minhash import band_hashes, bucket_pairs

    texts = make_corpus(n, seed)
    text_bytes = sum(map(len, texts))
    dedup = NearDedup(threshold=THRESHOLD, num_perm=NUM_PERM, shingle=SHINGLE)
    ids = [f"{i:08d}" for i in range(n)]  # the smallest id survives: the earliest document
    cpu0, started = time.process_time(), time.perf_counter()
    signatures = dedup.hasher.signatures(texts)
    signed = time.perf_counter()
    dedup.add_signatures(ids, signatures)
    result = dedup.finish()
    finished = time.perf_counter()
    cpu = time.process_time() - cpu0
    # Not timed: what the LSH proposed before verification, and the planted pairs' truth.
    u, v = bucket_pairs(band_hashes(signatures, dedup.params))
    candidate_docs = sorted(set(u.tolist()) | set(v.tolist()))
    index = {d: i for i, d in enumerate(ids)}
    labels = [index[d] if d is not None else i for i, d in enumerate(result.duplicate_of)]
    source, _ = plan(n, seed)
    truth = []
    for copy in np.flatnonzero(source >= 0).tolist():
        a = set(python_shingles(texts[copy]))
        b = set(python_shingles(texts[int(source[copy])]))
        truth.append([copy, int(source[copy]), len(a & b) / len(a | b)])
    return {
        "digest": digest(texts),
        "text_bytes": text_bytes,
        "max_doc_bytes": max(map(len, texts)),
        "signature_s": signed - started,
        "lsh_s": finished - signed,
        "seconds": finished - started,
        "cpu_s": cpu,
        "bands": dedup.params.bands,
        "rows": dedup.params.rows,
        "candidate_pairs": result.stats["candidate_pairs"],
        "verified_pairs": result.stats["verified_pairs"],
        "candidate_docs": candidate_docs,
        "labels": labels,
        "truth": truth,
    }


def step_anchor(n: int, seed: int) -> dict[str, Any]:
    import datasketch
    from datasketch import MinHash, MinHashLSH

    bands, rows = lsh_params()
    texts = make_corpus(n, seed)
    lsh = MinHashLSH(num_perm=NUM_PERM, params=(bands, rows))
    pairs: list[tuple[int, int]] = []
    shingle_s = minhash_s = lsh_s = 0.0
    cpu0 = time.process_time()
    for lo in range(0, n, ANCHOR_BATCH):
        t0 = time.perf_counter()
        shingles = [python_shingles(t) for t in texts[lo : lo + ANCHOR_BATCH]]
        t1 = time.perf_counter()
        sketches = MinHash.bulk(shingles, num_perm=NUM_PERM, seed=1)
        t2 = time.perf_counter()
        for offset, sketch in enumerate(sketches):
            key = lo + offset
            pairs.extend((key, other) for other in lsh.query(sketch))
            lsh.insert(key, sketch)
        t3 = time.perf_counter()
        shingle_s, minhash_s, lsh_s = shingle_s + t1 - t0, minhash_s + t2 - t1, lsh_s + t3 - t2
    t4 = time.perf_counter()
    labels = union_find_labels(n, pairs)
    lsh_s += time.perf_counter() - t4
    cpu = time.process_time() - cpu0
    return {
        "digest": digest(texts),
        "version": datasketch.__version__,
        "shingle_s": shingle_s,
        "minhash_s": minhash_s,
        "lsh_s": lsh_s,
        "seconds": shingle_s + minhash_s + lsh_s,
        "cpu_s": cpu,
        "candidate_pairs": len(pairs),
        "candidate_docs": sorted({d for pair in pairs for d in pair}),
        "labels": labels,
    }


# --- the parent ----------------------------------------------------------------------


def quality(labels: list[int], truth: list[list[float]]) -> dict[str, Any]:
    """Recall on planted copies at J >= THRESHOLD; precision of flagged documents."""
    source_of = {int(c): int(s) for c, s, _ in truth}
    jaccard = {int(c): j for c, _, j in truth}
    close = [c for c, j in jaccard.items() if j >= THRESHOLD]
    found = sum(labels[c] == labels[source_of[c]] for c in close)
    clear = [c for c, j in jaccard.items() if j >= THRESHOLD + 0.05]
    found_clear = sum(labels[c] == labels[source_of[c]] for c in clear)
    flagged = [i for i, label in enumerate(labels) if label != i]
    # Flagged is right when it is a planted copy in its source's cluster.
    right = sum(i in source_of and labels[source_of[i]] == labels[i] for i in flagged)
    loose = sum(jaccard.get(i, 0.0) < THRESHOLD - 0.1 for i in flagged)
    return {
        "close_copies": len(close),
        "found": found,
        "recall": found / len(close) if close else 1.0,
        "recall_clear": found_clear / len(clear) if clear else 1.0,
        "flagged": len(flagged),
        "precision": right / len(flagged) if flagged else 1.0,
        "flagged_below": loose,
        "flagged_set": set(flagged),
    }


def overlap(a: set[int], b: set[int]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_DOCS:,} documents")
    parser.add_argument("--docs", type=int, help="number of documents (overrides --quick)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--step", choices=("ours", "anchor"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    n = args.docs or (QUICK_DOCS if args.quick else FULL_DOCS)
    if args.step:
        fn = step_ours if args.step == "ours" else step_anchor
        write_result(Path(args.out), fn(n, args.seed))
        return 0

    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})  # children inherit the pin: one core for both sides
    load = os.getloadavg()[0]
    print(f"bench/minhash.py: {n:,} documents, one CPU (#{cpu}), load average {load:.2f}")
    outcomes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for side in ("ours", "anchor"):
            out = Path(tmp) / f"{side}.json"
            command = [sys.executable, __file__, f"--step={side}", f"--docs={n}"]
            command += [f"--seed={args.seed}", f"--out={out}"]
            outcome = run_child(side, command, out, timeout_s=STEP_TIMEOUT_S, rss_cap_gb=RSS_CAP_GB)
            if not outcome.ok:
                print(f"{side} FAILED: {outcome.error}")
                return 1
            outcomes[side] = outcome
    ours, anchor = outcomes["ours"].result, outcomes["anchor"].result
    if ours["digest"] != anchor["digest"]:
        print("the two sides built different corpora")
        return 1

    mb = ours["text_bytes"] / 1e6
    ours_per_s = n / ours["seconds"]
    anchor_per_s = n / anchor["seconds"]
    anchor_hash_per_s = n / (anchor["minhash_s"] + anchor["lsh_s"])
    ratio = ours_per_s / anchor_per_s
    # CPU seconds: what each side cost its core, whatever else ran on the machine.
    ratio_cpu = anchor["cpu_s"] / ours["cpu_s"]
    q_ours = quality(ours["labels"], ours["truth"])
    q_anchor = quality(anchor["labels"], ours["truth"])
    candidates_agree = overlap(set(ours["candidate_docs"]), set(anchor["candidate_docs"]))
    flags_agree = overlap(q_ours["flagged_set"], q_anchor["flagged_set"])

    print(
        f"corpus: {n:,} docs, {mb:,.0f} MB, mean {ours['text_bytes'] / n / 1024:.2f} KB, "
        f"max {ours['max_doc_bytes'] / 1024:.0f} KB; {len(ours['truth']):,} planted copies "
        f"({q_ours['close_copies']:,} with true J >= {THRESHOLD}); {NUM_PERM} permutations, "
        f"{SHINGLE}-token shingles, {ours['bands']} bands x {ours['rows']} rows; "
        f"datasketch {anchor['version']}\n"
    )
    print_table(
        ["side", "stage", "seconds", "CPU s", "docs/s", "MB/s"],
        [
            ["ours", "signatures", rounded(ours["signature_s"]), None, None, None],
            ["ours", "LSH + verify + clusters", rounded(ours["lsh_s"]), None, None, None],
            [
                "ours",
                "total",
                rounded(ours["seconds"]),
                rounded(ours["cpu_s"]),
                round(ours_per_s),
                round(mb / ours["seconds"], 1),
            ],
            ["datasketch", "shingles (Python)", rounded(anchor["shingle_s"]), None, None, None],
            ["datasketch", "MinHash.bulk", rounded(anchor["minhash_s"]), None, None, None],
            ["datasketch", "MinHashLSH + clusters", rounded(anchor["lsh_s"]), None, None, None],
            [
                "datasketch",
                "total",
                rounded(anchor["seconds"]),
                rounded(anchor["cpu_s"]),
                round(anchor_per_s),
                round(mb / anchor["seconds"], 1),
            ],
        ],
    )
    print(
        f"\nratio {ratio:.1f}x end to end in wall time (target {TARGET_RATIO:.0f}x), "
        f"{ratio_cpu:.1f}x in CPU time; {ours_per_s / anchor_hash_per_s:.1f}x against "
        f"datasketch's MinHash + LSH alone (its Python shingling left out)"
    )
    print(
        f"other processes took {outcomes['ours'].others_cpu_share:.0%} / "
        f"{outcomes['anchor'].others_cpu_share:.0%} of the machine's CPUs during ours / anchor\n"
    )
    print_table(
        [
            "side",
            "candidate pairs",
            "candidate docs",
            "flagged",
            f"recall (J>={THRESHOLD})",
            f"recall (J>={THRESHOLD + 0.05:.2f})",
            "precision",
            f"flagged J<{THRESHOLD - 0.1:.1f}",
            "peak RSS GB",
        ],
        [
            [
                name,
                r["candidate_pairs"],
                len(r["candidate_docs"]),
                q["flagged"],
                rounded(q["recall"]),
                rounded(q["recall_clear"]),
                rounded(q["precision"]),
                q["flagged_below"],
                rounded(r["peak_rss_gb"], 2),
            ]
            for name, r, q in (("ours", ours, q_ours), ("datasketch", anchor, q_anchor))
        ],
    )
    print(
        f"\nagreement: candidate documents {candidates_agree:.3f}, flagged documents "
        f"{flags_agree:.3f} (Jaccard of the two sides' sets)"
    )
    emit_json(
        {
            "bench": "minhash",
            "quick": n == QUICK_DOCS,
            "docs": n,
            "text_mb": round(mb, 1),
            "mean_doc_kb": round(ours["text_bytes"] / n / 1024, 2),
            "num_perm": NUM_PERM,
            "shingle": SHINGLE,
            "bands": ours["bands"],
            "rows": ours["rows"],
            "threshold": THRESHOLD,
            "ours_per_s": round(ours_per_s, 1),
            "ours_mb_per_s": round(mb / ours["seconds"], 2),
            "ours_signature_s": rounded(ours["signature_s"]),
            "ours_lsh_s": rounded(ours["lsh_s"]),
            "anchor_per_s": round(anchor_per_s, 1),
            "anchor_mb_per_s": round(mb / anchor["seconds"], 2),
            "anchor_shingle_s": rounded(anchor["shingle_s"]),
            "anchor_minhash_s": rounded(anchor["minhash_s"]),
            "anchor_lsh_s": rounded(anchor["lsh_s"]),
            "ratio": round(ratio, 2),
            "ratio_cpu": round(ratio_cpu, 2),
            "ours_cpu_s": rounded(ours["cpu_s"]),
            "anchor_cpu_s": rounded(anchor["cpu_s"]),
            "ratio_vs_anchor_minhash_lsh_only": round(ours_per_s / anchor_hash_per_s, 2),
            "target_ratio": TARGET_RATIO,
            "met": ratio >= TARGET_RATIO,
            "ours_recall": rounded(q_ours["recall"]),
            "ours_recall_clear": rounded(q_ours["recall_clear"]),
            "ours_precision": rounded(q_ours["precision"]),
            "anchor_recall": rounded(q_anchor["recall"]),
            "anchor_recall_clear": rounded(q_anchor["recall_clear"]),
            "anchor_precision": rounded(q_anchor["precision"]),
            "ours_flagged_below": q_ours["flagged_below"],
            "anchor_flagged_below": q_anchor["flagged_below"],
            "ours_flagged": q_ours["flagged"],
            "anchor_flagged": q_anchor["flagged"],
            "ours_candidate_pairs": ours["candidate_pairs"],
            "anchor_candidate_pairs": anchor["candidate_pairs"],
            "candidate_docs_agreement": round(candidates_agree, 4),
            "flagged_agreement": round(flags_agree, 4),
            "ours_peak_rss_gb": rounded(ours["peak_rss_gb"]),
            "anchor_peak_rss_gb": rounded(anchor["peak_rss_gb"]),
            "others_cpu_share": rounded(max(o.others_cpu_share for o in outcomes.values())),
            "load_avg_start": round(load, 2),
            "datasketch": anchor["version"],
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
