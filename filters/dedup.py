"""Exact and near-duplicate detection, on prompts or on completions.

- **Exact**: two texts are duplicates when their normalised token sequences
  are equal (`filters.minhash.tokenize`: lowercase, whitespace-insensitive,
  punctuation kept as tokens, so "X = -2" equals "x=-2" but not "x = 2").
  Each text becomes one 64-bit hash; equal hashes form a group.
- **Near**: MinHash over word shingles with LSH banding
  (`filters.minhash`). Documents sharing a band are candidates; with
  `verify=True` (the default) a candidate pair is kept only when the
  signatures estimate its Jaccard similarity at or above `threshold`, which
  removes the S-curve's false positives. Kept pairs are joined into
  clusters (transitively: A~B and B~C put A, B and C together).

**Which copy survives** is decided by a fixed order, not by arrival: the
member with the smallest `(rank, id)` (`rank` defaults to 0 for every row,
so by default the smallest id). Callers that prefer, say, kept and verified
samples pass a rank (0 for preferred, 1 otherwise). With unique ids the
survivor does not depend on input order. Every other member gets
`duplicate_of` = the survivor's id; survivors and singletons get None.

Memory: the streaming `NearDedup` keeps, per document, its id and either its
signature (num_perm x 4 bytes, with `verify=True`) or only its band hashes
(bands x 8 bytes); texts are dropped after each batch. 1M documents at 128
permutations hold 512 MB of signatures.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from filters.minhash import (
    DEFAULT_BATCH_CHARS,
    LSHParams,
    MinHasher,
    approx_threshold,
    band_hashes,
    batch_ranges,
    bucket_pairs,
    choose_bands,
    connected_components,
    mix64,
    tokenize,
)
from store.jsonl import BadLine, BadLines, atomic_output, dumps_row, read_jsonl
from store.record import sample_id_of

# With verification, an LSH false positive costs one signature comparison,
# a false negative a missed duplicate: weigh misses nine times heavier.
VERIFIED_FP_WEIGHT = 0.1
# Candidate pairs verified per step: bounds the (pairs, num_perm) temporaries.
_VERIFY_CHUNK = 65_536


@dataclass
class DedupResult:
    """`duplicate_of[i]`: None, or the id of the copy that row i duplicates."""

    duplicate_of: list[str | None]
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def duplicates(self) -> int:
        return sum(d is not None for d in self.duplicate_of)


def exact_hashes(texts: Sequence[str], *, batch_chars: int = DEFAULT_BATCH_CHARS) -> np.ndarray:
    """A 64-bit hash of each text's normalised token sequence, (n,) uint64.

    Each token hash is keyed by its position in the text and the keyed
    values are summed per text, so order matters and the whole batch is
    hashed with array operations.
    """
    out = np.empty(len(texts), dtype=np.uint64)
    for lo, hi in batch_ranges(texts, batch_chars):
        tokens = tokenize(texts[lo:hi], symbols=True)
        counts = tokens.counts
        position = np.arange(len(tokens.hashes)) - np.repeat(tokens.offsets[:-1], counts)
        keyed = mix64(tokens.hashes ^ mix64(position.astype(np.uint64) + np.uint64(1)))
        sums = np.zeros(hi - lo, dtype=np.uint64)
        nonempty = np.flatnonzero(counts > 0)
        if len(nonempty):
            sums[nonempty] = np.add.reduceat(keyed, tokens.offsets[nonempty])
        out[lo:hi] = mix64(sums ^ counts.astype(np.uint64))
    return out


def _survivor_order(ids: Sequence[str], rank: np.ndarray | None) -> np.ndarray:
    """Row indices sorted by (rank, id, row): position 0 is the most preferred.

    polars sorts a million string ids in a fraction of a second, in Arrow
    memory; a numpy string array would be as wide as the longest id.
    """
    frame = pl.DataFrame(
        {
            "rank": np.zeros(len(ids), dtype=np.int64) if rank is None else rank,
            "id": pl.Series(list(ids), dtype=pl.String),
        }
    ).with_row_index("row")
    ordered = frame.sort(["rank", "id", "row"])["row"]
    return ordered.to_numpy().astype(np.int64)


def _resolve(
    ids: Sequence[str], order: np.ndarray, pu: np.ndarray, pv: np.ndarray
) -> tuple[list[str | None], int]:
    """duplicate_of per row from edges between preference positions; also the cluster count."""
    n = len(ids)
    label = connected_components(n, pu, pv)  # smallest position = the survivor
    duplicate_of: list[str | None] = [None] * n
    members = np.flatnonzero(label != np.arange(n))
    for position, root in zip(members.tolist(), label[members].tolist(), strict=True):
        duplicate_of[int(order[position])] = ids[int(order[root])]
    clusters = len(np.unique(label[members]))
    return duplicate_of, clusters


def _check_rank(rank: Sequence[int] | np.ndarray | None, n: int) -> np.ndarray | None:
    if rank is None:
        return None
    array = np.asarray(rank, dtype=np.int64)
    if array.shape != (n,):
        raise ValueError(f"rank must hold one integer per text ({n}), got shape {array.shape}")
    return array


def exact_duplicates(
    ids: Sequence[str],
    texts: Sequence[str],
    *,
    rank: Sequence[int] | np.ndarray | None = None,
) -> list[str | None]:
    """duplicate_of per text under exact (normalised) equality; see the module docstring."""
    if len(ids) != len(texts):
        raise ValueError(f"{len(ids)} ids for {len(texts)} texts")
    order = _survivor_order(ids, _check_rank(rank, len(ids)))
    hashes = exact_hashes(texts)
    pu, pv = bucket_pairs(hashes[order])
    return _resolve(ids, order, pu, pv)[0]


class NearDedup:
    """Streaming near-duplicate detection: `add` batches, then `finish` once.

    `threshold` is the Jaccard similarity (of shingle sets) from which two
    texts count as near-duplicates. Without explicit `bands` and `rows`,
    `choose_bands` picks them for `threshold` (weighted towards recall when
    verifying, balanced when not); `describe()` says what they imply.
    """

    def __init__(
        self,
        *,
        threshold: float = 0.8,
        num_perm: int = 128,
        shingle: int = 5,
        bands: int | None = None,
        rows: int | None = None,
        seed: int = 1,
        verify: bool = True,
        batch_chars: int = DEFAULT_BATCH_CHARS,
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if (bands is None) != (rows is None):
            raise ValueError("give both bands and rows, or neither")
        if bands is None or rows is None:
            fp_weight = VERIFIED_FP_WEIGHT if verify else 0.5
            bands, rows = choose_bands(
                min(threshold, 0.99), num_perm, fp_weight=fp_weight, fn_weight=1.0 - fp_weight
            )
        self.params = LSHParams(bands, rows)
        if bands * rows > num_perm:
            raise ValueError(f"{bands} bands x {rows} rows = {bands * rows} > num_perm={num_perm}")
        self.threshold = threshold
        self.verify = verify
        self.hasher = MinHasher(
            num_perm=num_perm, shingle=shingle, seed=seed, batch_chars=batch_chars
        )
        self._ids: list[str] = []
        self._ranks: list[np.ndarray] = []
        self._blocks: list[np.ndarray] = []  # signatures (verify) or band hashes
        self._signature_seconds = 0.0

    def describe(self) -> str:
        check = (
            f"; candidates kept at estimated J >= {self.threshold:.2f}"
            if self.verify
            else "; candidates not verified"
        )
        return (
            f"MinHash {self.hasher.num_perm} permutations over {self.hasher.shingle}-token "
            f"shingles; {self.params.describe()}{check}"
        )

    def add(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        rank: Sequence[int] | np.ndarray | None = None,
    ) -> None:
        """Add a batch of texts; they are not kept."""
        if len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids for {len(texts)} texts")
        started = time.perf_counter()
        signatures = self.hasher.signatures(texts)
        self._signature_seconds += time.perf_counter() - started
        self.add_signatures(ids, signatures, rank)

    def add_signatures(
        self,
        ids: Sequence[str],
        signatures: np.ndarray,
        rank: Sequence[int] | np.ndarray | None = None,
    ) -> None:
        """Add a batch already hashed by `self.hasher` (for instance in worker processes)."""
        if signatures.shape != (len(ids), self.hasher.num_perm):
            raise ValueError(
                f"signatures must be ({len(ids)}, {self.hasher.num_perm}), got {signatures.shape}"
            )
        checked = _check_rank(rank, len(ids))
        if self._ids and (checked is None) != (not self._ranks):
            raise ValueError("give rank for every batch or for none")
        self._ids.extend(ids)
        if checked is not None:
            self._ranks.append(checked)
        if self.verify:
            self._blocks.append(np.ascontiguousarray(signatures, dtype=np.uint32))
        else:
            self._blocks.append(band_hashes(signatures, self.params))

    def finish(self) -> DedupResult:
        started = time.perf_counter()
        ids, n = self._ids, len(self._ids)
        rank = np.concatenate(self._ranks) if self._ranks else None
        order = _survivor_order(ids, rank)
        blocks = self._blocks
        self._blocks = []
        if blocks:
            stored = np.concatenate(blocks)
        elif self.verify:
            stored = np.zeros((0, self.hasher.num_perm), dtype=np.uint32)
        else:
            stored = np.zeros((0, self.params.bands), dtype=np.uint64)
        del blocks
        keys = band_hashes(stored, self.params) if self.verify else stored
        pu, pv = bucket_pairs(keys[order])
        del keys
        candidates = len(pu)
        if self.verify and candidates:
            similar = np.concatenate(
                [
                    _estimated(
                        stored, order[pu[i : i + _VERIFY_CHUNK]], order[pv[i : i + _VERIFY_CHUNK]]
                    )
                    >= self.threshold
                    for i in range(0, candidates, _VERIFY_CHUNK)
                ]
            )
            pu, pv = pu[similar], pv[similar]
        duplicate_of, clusters = _resolve(ids, order, pu, pv)
        stats = {
            "docs": n,
            "duplicates": sum(d is not None for d in duplicate_of),
            "clusters": clusters,
            "candidate_pairs": candidates,
            "verified_pairs": len(pu) if self.verify else None,
            "threshold": self.threshold,
            "num_perm": self.hasher.num_perm,
            "shingle": self.hasher.shingle,
            "bands": self.params.bands,
            "rows": self.params.rows,
            "lsh_threshold": round(self.params.threshold, 4),
            "lsh_threshold_approx": round(approx_threshold(self.params.bands, self.params.rows), 4),
            "signature_seconds": round(self._signature_seconds, 3),
            "cluster_seconds": round(time.perf_counter() - started, 3),
            "describe": self.describe(),
        }
        return DedupResult(duplicate_of, stats)


def _estimated(signatures: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Estimated Jaccard of row pairs (a[i], b[i])."""
    return np.asarray((signatures[a] == signatures[b]).mean(axis=1))


def near_duplicates(
    ids: Sequence[str],
    texts: Sequence[str],
    *,
    threshold: float = 0.8,
    num_perm: int = 128,
    shingle: int = 5,
    bands: int | None = None,
    rows: int | None = None,
    seed: int = 1,
    verify: bool = True,
    rank: Sequence[int] | np.ndarray | None = None,
) -> DedupResult:
    """duplicate_of per text under MinHash-LSH near-duplication, with stats (see NearDedup)."""
    dedup = NearDedup(
        threshold=threshold,
        num_perm=num_perm,
        shingle=shingle,
        bands=bands,
        rows=rows,
        seed=seed,
        verify=verify,
    )
    dedup.add(ids, texts, rank)
    return dedup.finish()


# --- JSONL ---------------------------------------------------------------------------


def dedup_jsonl(
    input_path: str | Path,
    output_path: str | Path,
    *,
    field: str = "completion",
    threshold: float = 0.8,
    method: Literal["near", "exact"] = "near",
    id_field: str | None = None,
    num_perm: int = 128,
    shingle: int = 5,
    bands: int | None = None,
    rows: int | None = None,
    seed: int = 1,
    batch_chars: int = 8_000_000,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Copy IN to OUT, adding `duplicate_of` (null, or the id of the kept copy) to each row.

    Two passes over IN: the first hashes `field` batch by batch (texts are
    not kept), the second writes the rows. Each row's id is its `id_field`;
    by default (`None`) its `sample_id`, else its `id`, else the sample id
    `r1f datasets import` would give it, so the rows import takes are
    accepted as they are. A row that cannot take part (a line that is not a
    JSON object, no usable id or text, an id used before) is reported in the
    stats (`bad_lines`, `bad_line_examples`, as `FILE:LINE: reason`) and left
    out of OUT; the rest are deduplicated. OUT is written atomically, so it
    may be IN itself. Returns the stats (see NearDedup.finish;
    `method="exact"` gives docs, duplicates and clusters).
    """
    source = Path(input_path)
    ids: list[str] = []
    texts: list[str] = []
    size = 0
    seen: dict[str, int] = {}
    skipped: set[int] = set()
    bad_lines = BadLines(source)
    near = None
    hashes: list[np.ndarray] = []
    if method == "near":
        near = NearDedup(
            threshold=threshold,
            num_perm=num_perm,
            shingle=shingle,
            bands=bands,
            rows=rows,
            seed=seed,
        )
        if log:
            log(f"near-duplicates on {field!r}: {near.describe()}")
    elif method != "exact":
        raise ValueError(f"method must be 'near' or 'exact', got {method!r}")

    def flush() -> None:
        if near is not None:
            near.add(ids[len(ids) - len(texts) :], texts)
        else:
            hashes.append(exact_hashes(texts))
        texts.clear()

    for number, row in read_jsonl(source):
        if isinstance(row, BadLine):
            problem: str | None = row.reason
        else:
            key, problem = _row_id(row, id_field)
            if key is not None and key in seen:
                problem = f"id {key!r} already used on line {seen[key]}; ids must be unique"
            text = row.get(field)
            if problem is None and not isinstance(text, str):
                what = "missing" if field not in row else f"a {type(text).__name__}, not a string"
                problem = f"{field!r} is {what} (choose the field to dedup with --field)"
        if problem is not None:
            bad_lines.add(number, problem)
            skipped.add(number)
            continue
        assert key is not None and isinstance(text, str)
        seen[key] = number
        ids.append(key)
        texts.append(text)
        size += len(text)
        if size >= batch_chars:
            flush()
            size = 0
    flush()
    del seen
    if near is not None:
        result = near.finish()
        duplicate_of, stats = result.duplicate_of, result.stats
    else:
        order = _survivor_order(ids, None)
        keys = np.concatenate(hashes) if hashes else np.zeros(0, dtype=np.uint64)
        pu, pv = bucket_pairs(keys[order])
        duplicate_of, clusters = _resolve(ids, order, pu, pv)
        stats = {
            "docs": len(ids),
            "duplicates": sum(d is not None for d in duplicate_of),
            "clusters": clusters,
        }
    with atomic_output(output_path) as out:
        index = 0
        for number, kept in read_jsonl(source):
            if number in skipped or isinstance(kept, BadLine):
                continue
            kept["duplicate_of"] = duplicate_of[index]
            index += 1
            out.write(dumps_row(kept))
    stats["field"] = field
    stats["method"] = method
    stats.update(bad_lines.to_dict())
    return stats


def _row_id(row: dict[str, Any], id_field: str | None) -> tuple[str | None, str | None]:
    """(id, None), or (None, what is wrong) when the row has no usable id."""
    if id_field is None:
        if "sample_id" not in row and "id" in row:
            id_field = "id"
        else:
            key = sample_id_of(row)
            if key is None:
                return None, (
                    "no id: give the row a sample_id, an id or a string prompt "
                    "(or name the id's field with --id-field)"
                )
            return key, None
    value = row.get(id_field)
    if value is None or isinstance(value, bool) or not isinstance(value, str | int):
        return None, (
            f"{id_field!r} must be a string or an integer, got {value!r:.40}; "
            "every row needs a unique id (choose the field with --id-field)"
        )
    return str(value), None
