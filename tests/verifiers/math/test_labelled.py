"""The hand-written labelled set: at least 150 (gold, completion, label) pairs, 98% agreement.

labelled_pairs.jsonl covers extraction, normalisation, exact and decimal
numbers, symbolic equality, typed structures, hedges, countdown, the guards
(the two named pathological inputs among them) and the toy tasks' formats;
each row's `note` says what it tests. Labels are what a careful grader would
say, not what the verifier happened to answer.
"""

from __future__ import annotations

import json
from pathlib import Path

from verifiers.math import MathVerifier

PAIRS = Path(__file__).with_name("labelled_pairs.jsonl")
MIN_PAIRS = 150
MIN_AGREEMENT = 0.98


def test_labelled_agreement() -> None:
    rows = [json.loads(line) for line in PAIRS.read_text().splitlines() if line.strip()]
    assert len(rows) >= MIN_PAIRS
    assert {r["label"] for r in rows} == {"correct", "incorrect", "unverifiable"}
    with MathVerifier(workers=2, timeout=5.0) as verifier:
        verdicts = verifier.verify_many([(r["gold"], r["completion"]) for r in rows])
    disagreements = [
        f"{r['note']}: gold {r['gold']!r}, labelled {r['label']}, got {v.verdict}/{v.reason}"
        for r, v in zip(rows, verdicts, strict=True)
        if v.verdict != r["label"]
    ]
    agreement = 1 - len(disagreements) / len(rows)
    print(f"labelled agreement {agreement:.4f} over {len(rows)} pairs")
    for line in disagreements:
        print("  " + line)
    assert agreement >= MIN_AGREEMENT, "\n".join(disagreements)
