"""Decontamination: word n-gram overlap of samples with benchmark problems.

A sample is contaminated by a benchmark when its prompt or completion
contains a run of `n` consecutive tokens that also occurs in one of the
benchmark's items (the GPT-3 and Llama recipe; 13 and 8 are the usual n).
Text is normalised as for dedup (`filters.minhash.tokenize`) but with
punctuation dropped (`symbols=False`): lowercase, tokens are runs of letters
and digits and single CJK characters, so "12 + 7" and "12+7," match.

Benchmark items shorter than the smallest `n` cannot hold an n-gram; those
with at least `min_tokens` tokens are matched whole (the sample must contain
the entire item), shorter ones are skipped and counted in the report.

Benchmarks are JSONL or Parquet files, one item per row, with the text in
`text_field`; when it is not given the first present of `TEXT_FIELDS` is
used. A benchmark is named by its file stem.

What is covered: verbatim or re-spaced, re-cased, re-punctuated copies of
any n consecutive words of an item. What is not: paraphrases, translations,
changed numbers inside every window of n tokens, items shorter than
`min_tokens`.

Membership is exact up to 64-bit hash collisions: the items' n-gram hashes
sit in a sorted array, probed by binary search behind a bitmap prefilter.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from filters.minhash import DEFAULT_BATCH_CHARS, Tokens, batch_ranges, gram_hashes, tokenize
from store.jsonl import BadLine, BadLines, atomic_output, dumps_row, read_jsonl
from store.record import sample_id_of

TEXT_FIELDS = ("text", "question", "problem", "prompt", "input", "content")
TOY_BENCHMARK = Path(__file__).resolve().parent / "data" / "toy_benchmark.jsonl"
DEFAULT_N = 13
DEFAULT_MIN_TOKENS = 8


@dataclass(frozen=True)
class Benchmark:
    """One benchmark file's items."""

    name: str
    path: str
    text_field: str
    texts: list[str]


def load_benchmark(path: str | Path, *, text_field: str | None = None) -> Benchmark:
    """Read a JSONL or Parquet benchmark; see the module docstring for the text field."""
    source = Path(path)
    if not source.is_file():
        raise ValueError(f"benchmark {source}: no such file")
    suffix = source.suffix.lower()
    if suffix == ".parquet":
        names = pq.read_schema(source).names
        chosen = _pick_field(names, text_field, source)
        column = pq.read_table(source, columns=[chosen]).column(chosen).to_pylist()
        texts = [_item_text(v, chosen, source, i + 1) for i, v in enumerate(column)]
    elif suffix in (".jsonl", ".json"):
        rows = []
        for number, row in read_jsonl(source):
            if isinstance(row, BadLine):
                # A benchmark item that cannot be read cannot be checked against:
                # skipping it would quietly weaken the check, so the file is refused.
                raise ValueError(f"benchmark {row.describe(source)}; fix or remove the line")
            rows.append((number, row))
        if not rows:
            raise ValueError(f"benchmark {source}: no rows")
        chosen = _pick_field(list(rows[0][1]), text_field, source)
        texts = [_item_text(row.get(chosen), chosen, source, number) for number, row in rows]
    else:
        raise ValueError(f"benchmark {source}: expected a .jsonl or .parquet file")
    return Benchmark(source.stem, str(source), chosen, texts)


def _pick_field(names: Sequence[str], wanted: str | None, source: Path) -> str:
    if wanted is not None:
        if wanted not in names:
            raise ValueError(f"benchmark {source}: no field {wanted!r}; fields: {', '.join(names)}")
        return wanted
    for name in TEXT_FIELDS:
        if name in names:
            return name
    raise ValueError(
        f"benchmark {source}: none of {', '.join(TEXT_FIELDS)} present "
        f"(fields: {', '.join(names)}); name the text field"
    )


def _item_text(value: Any, name: str, source: Path, number: int) -> str:
    if not isinstance(value, str):
        raise ValueError(f"benchmark {source}, row {number}: {name!r} is not a string")
    return value


@dataclass(frozen=True)
class Hit:
    """Where a text matched a benchmark.

    `item` is the benchmark row (0-based), `n` the gram length in tokens,
    `ngram` the matched tokens (normalised, space-joined) and `position` the
    token index in the checked text where the match starts.
    """

    benchmark: str
    item: int
    n: int
    ngram: str
    position: int


@dataclass(frozen=True)
class _GramSet:
    """Sorted gram hashes of one length, each with its owner (benchmark << 32 | item)."""

    keys: np.ndarray  # (G,) uint64, sorted, unique
    owners: np.ndarray  # (G,) int64
    table: np.ndarray  # (2^bits,) bool: is any key's top-bits prefix here
    shift: np.uint64

    @classmethod
    def build(cls, keys: np.ndarray, owners: np.ndarray) -> _GramSet:
        keys, first = np.unique(keys, return_index=True)
        bits = int(min(26, max(16, (16 * len(keys)).bit_length())))
        shift = np.uint64(64 - bits)
        table = np.zeros(1 << bits, dtype=bool)
        table[keys >> shift] = True
        return cls(keys, owners[first], table, shift)

    def lookup(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(indices into queries that are present, their owners)."""
        maybe = np.flatnonzero(self.table[queries >> self.shift])
        at = np.searchsorted(self.keys, queries[maybe])
        at = np.minimum(at, len(self.keys) - 1)
        found = self.keys[at] == queries[maybe]
        return maybe[found], self.owners[at[found]]


class BenchmarkIndex:
    """Hashed n-grams of benchmark items, for `check(texts) -> [Hit | None]`.

    `n` is one gram length or several (say (8, 13)); a text's reported hit
    is its longest match, and among those the earliest.
    """

    def __init__(
        self,
        benchmarks: Sequence[Benchmark],
        *,
        n: int | Sequence[int] = DEFAULT_N,
        min_tokens: int = DEFAULT_MIN_TOKENS,
    ) -> None:
        self.ns = tuple(sorted({n} if isinstance(n, int) else set(n), reverse=True))
        if not self.ns or min(self.ns) < 1:
            raise ValueError(f"n must be one or more positive gram lengths, got {n!r}")
        names = [b.name for b in benchmarks]
        if len(set(names)) != len(names):
            raise ValueError(f"benchmark names (file stems) must differ: {', '.join(names)}")
        self.benchmarks = list(benchmarks)
        self.min_tokens = min_tokens
        self.skipped: list[int] = []  # items too short to match, per benchmark
        self.grams: dict[int, int] = {}  # distinct gram hashes per length
        collected: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = {}
        shortest = min(self.ns)
        for index, bench in enumerate(self.benchmarks):
            skipped = 0
            for lo, hi in batch_ranges(bench.texts, DEFAULT_BATCH_CHARS):
                tokens = tokenize(bench.texts[lo:hi], symbols=False)
                counts = tokens.counts
                owner_of_doc = (np.int64(index) << np.int64(32)) | np.arange(lo, hi, dtype=np.int64)
                for length in self.ns:
                    hashes, first = gram_hashes(tokens, length, short=False)
                    doc = np.searchsorted(tokens.offsets, first, side="right") - 1
                    _collect(collected, length, hashes, owner_of_doc[doc])
                whole = np.flatnonzero((counts >= min_tokens) & (counts < shortest))
                skipped += int(((counts < min_tokens) & (counts < shortest)).sum())
                for length in np.unique(counts[whole]).tolist():
                    docs = whole[counts[whole] == length]
                    hashes, first = gram_hashes(tokens, length, short=False)
                    doc = np.searchsorted(tokens.offsets, first, side="right") - 1
                    pick = np.isin(doc, docs)
                    _collect(collected, length, hashes[pick], owner_of_doc[doc[pick]])
            self.skipped.append(skipped)
        self._sets = {
            length: _GramSet.build(np.concatenate(keys), np.concatenate(owners))
            for length, (keys, owners) in collected.items()
        }
        self.grams = {length: len(s.keys) for length, s in self._sets.items()}

    @classmethod
    def from_files(
        cls,
        paths: Sequence[str | Path],
        *,
        text_field: str | None = None,
        n: int | Sequence[int] = DEFAULT_N,
        min_tokens: int = DEFAULT_MIN_TOKENS,
    ) -> BenchmarkIndex:
        benchmarks = [load_benchmark(p, text_field=text_field) for p in paths]
        return cls(benchmarks, n=n, min_tokens=min_tokens)

    def check(self, texts: Sequence[str]) -> list[Hit | None]:
        """The longest, then earliest, benchmark match of each text, or None."""
        hits: list[Hit | None] = [None] * len(texts)
        for lo, hi in batch_ranges(texts, DEFAULT_BATCH_CHARS):
            tokens = tokenize(texts[lo:hi], symbols=False)
            for i, hit in self._check_tokens(tokens):
                hits[lo + i] = hit
        return hits

    def _check_tokens(self, tokens: Tokens) -> Iterator[tuple[int, Hit]]:
        found = np.zeros(len(tokens.offsets) - 1, dtype=bool)
        for length in sorted(self._sets, reverse=True):
            hashes, first = gram_hashes(tokens, length, short=False)
            present, owners = self._sets[length].lookup(hashes)
            if not len(present):
                continue
            start = first[present]  # ascending: grams come in token order
            doc = np.searchsorted(tokens.offsets, start, side="right") - 1
            fresh = ~found[doc]
            doc, start, owners = doc[fresh], start[fresh], owners[fresh]
            docs, earliest = np.unique(doc, return_index=True)
            found[docs] = True
            for d, k in zip(docs.tolist(), earliest.tolist(), strict=True):
                owner = int(owners[k])
                yield (
                    d,
                    Hit(
                        benchmark=self.benchmarks[owner >> 32].name,
                        item=owner & 0xFFFFFFFF,
                        n=length,
                        ngram=tokens.text(int(start[k]), int(start[k]) + length),
                        position=int(start[k] - tokens.offsets[d]),
                    ),
                )


def _collect(
    collected: dict[int, tuple[list[np.ndarray], list[np.ndarray]]],
    length: int,
    hashes: np.ndarray,
    owners: np.ndarray,
) -> None:
    keys, who = collected.setdefault(length, ([], []))
    keys.append(hashes)
    who.append(owners)


# --- report --------------------------------------------------------------------------


@dataclass
class BenchmarkReport:
    """What one benchmark found: contaminated samples, leaked items and examples."""

    name: str
    path: str
    text_field: str
    items: int
    skipped_items: int
    contaminated: int = 0
    by_field: Counter[str] = field(default_factory=Counter)
    items_leaked: set[int] = field(default_factory=set)
    examples: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "text_field": self.text_field,
            "items": self.items,
            "skipped_items": self.skipped_items,
            "contaminated": self.contaminated,
            "by_field": dict(self.by_field),
            "items_leaked": len(self.items_leaked),
            "examples": self.examples,
        }


@dataclass
class DecontamReport:
    """Per-benchmark hits of one decontamination run, for the log and the data card."""

    ns: tuple[int, ...]
    fields: tuple[str, ...]
    benchmarks: dict[str, BenchmarkReport]
    samples: int = 0
    contaminated: int = 0
    max_examples: int = 5
    # `decontaminate_jsonl`: input lines left out (not an object, no text to check)
    bad_lines: BadLines | None = None

    @classmethod
    def for_index(
        cls, index: BenchmarkIndex, fields: Sequence[str], *, max_examples: int = 5
    ) -> DecontamReport:
        reports = {
            b.name: BenchmarkReport(b.name, b.path, b.text_field, len(b.texts), skipped)
            for b, skipped in zip(index.benchmarks, index.skipped, strict=True)
        }
        return cls(index.ns, tuple(fields), reports, max_examples=max_examples)

    def record(self, sample_id: str, hits: Sequence[tuple[str, Hit]]) -> None:
        """Count one sample; `hits` holds its (field, hit) pairs, first one reported."""
        self.samples += 1
        if not hits:
            return
        self.contaminated += 1
        for name in dict.fromkeys(hit.benchmark for _, hit in hits):
            report = self.benchmarks[name]
            mine = [(f, h) for f, h in hits if h.benchmark == name]
            report.contaminated += 1
            report.by_field.update({f: 1 for f, _ in mine})
            report.items_leaked.update(h.item for _, h in mine)
            if len(report.examples) < self.max_examples:
                f, h = mine[0]
                report.examples.append(
                    {"id": sample_id, "field": f, "item": h.item, "n": h.n, "ngram": h.ngram}
                )

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": list(self.ns),
            "fields": list(self.fields),
            "samples": self.samples,
            "contaminated": self.contaminated,
            "benchmarks": [b.as_dict() for b in self.benchmarks.values()],
            **(self.bad_lines.to_dict() if self.bad_lines is not None else {}),
        }


def report_markdown(report: DecontamReport) -> str:
    """The data card's decontamination section (Markdown)."""
    grams = " and ".join(str(n) for n in sorted(report.ns))
    lines = [
        "## Decontamination",
        "",
        f"{report.samples:,} samples checked ({', '.join(report.fields)}) for {grams}-gram "
        f"overlap with {len(report.benchmarks)} benchmark(s); "
        f"{report.contaminated:,} contaminated.",
        "",
        "| benchmark | items | contaminated samples | by field | items leaked | too short to check |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for b in report.benchmarks.values():
        fields = ", ".join(f"{k} {v:,}" for k, v in sorted(b.by_field.items())) or "-"
        lines.append(
            f"| {b.name} | {b.items:,} | {b.contaminated:,} | {fields} | "
            f"{len(b.items_leaked):,} | {b.skipped_items:,} |"
        )
    examples = [(b.name, e) for b in report.benchmarks.values() for e in b.examples]
    if examples:
        lines += ["", "Examples:", ""]
        for name, e in examples:
            ngram = e["ngram"].replace("|", "\\|").replace("`", "'")
            lines.append(
                f"- `{e['id']}` ({e['field']}) matches {name} item {e['item']} "
                f"({e['n']}-gram): `{ngram}`"
            )
    return "\n".join(lines) + "\n"


# --- JSONL ---------------------------------------------------------------------------


def decontaminate_jsonl(
    input_path: str | Path,
    benchmarks: Sequence[str | Path],
    output_path: str | Path,
    *,
    n: int | Sequence[int] = DEFAULT_N,
    fields: Sequence[str] = ("prompt", "completion"),
    id_field: str | None = None,
    text_field: str | None = None,
    min_tokens: int = DEFAULT_MIN_TOKENS,
    batch_rows: int = 2048,
    max_examples: int = 5,
) -> DecontamReport:
    """Copy IN to OUT, adding `contaminated` (bool), `benchmark` and `ngram` (null when clean).

    Each row's `fields` are checked in order (a row must hold at least one;
    a missing one is skipped); the first field with a hit names the
    benchmark and n-gram. Rows stream through in batches. A row is named in
    the report by `id_field`, by default its sample id (as `dedup_jsonl`
    names rows), else `line N`. A line that is not a JSON object, or a row
    with none of `fields` or a field that is not a string, is reported in
    `report.bad_lines` and left out of OUT. OUT is written atomically, so it
    may be IN itself.
    """
    index = BenchmarkIndex.from_files(benchmarks, text_field=text_field, n=n, min_tokens=min_tokens)
    report = DecontamReport.for_index(index, fields, max_examples=max_examples)
    source = Path(input_path)
    report.bad_lines = BadLines(source)
    with atomic_output(output_path) as out:
        batch: list[tuple[int, dict[str, Any]]] = []
        for number, row in read_jsonl(source):
            problem = row.reason if isinstance(row, BadLine) else _row_problem(row, fields)
            if problem is not None:
                report.bad_lines.add(number, problem)
                continue
            assert isinstance(row, dict)
            batch.append((number, row))
            if len(batch) >= batch_rows:
                _decontaminate_batch(batch, index, fields, id_field, report, out)
                batch = []
        _decontaminate_batch(batch, index, fields, id_field, report, out)
    return report


def _row_problem(row: dict[str, Any], fields: Sequence[str]) -> str | None:
    if not any(name in row for name in fields):
        return f"none of {', '.join(map(repr, fields))} present (choose them with --fields)"
    for name in fields:
        text = row.get(name)
        if text is not None and not isinstance(text, str):
            return f"{name!r} is a {type(text).__name__}, not a string"
    return None


def _row_name(row: dict[str, Any], id_field: str | None, number: int) -> str:
    """The row's id as `dedup_jsonl` takes it by default, or `line N` when it has none."""
    if id_field is not None:
        value = row.get(id_field)
    elif "sample_id" not in row and "id" in row:
        value = row["id"]
    else:
        value = sample_id_of(row)
    return str(value) if value is not None else f"line {number}"


def _decontaminate_batch(
    batch: list[tuple[int, dict[str, Any]]],
    index: BenchmarkIndex,
    fields: Sequence[str],
    id_field: str | None,
    report: DecontamReport,
    out: Any,
) -> None:
    per_field: list[list[Hit | None]] = []
    for name in fields:
        present: list[int] = []
        texts: list[str] = []
        for i, (_, row) in enumerate(batch):
            text = row.get(name)
            if isinstance(text, str):
                present.append(i)
                texts.append(text)
        found = index.check(texts)
        column: list[Hit | None] = [None] * len(batch)
        for i, hit in zip(present, found, strict=True):
            column[i] = hit
        per_field.append(column)
    for i, (number, row) in enumerate(batch):
        hits = [(name, col[i]) for name, col in zip(fields, per_field, strict=True) if col[i]]
        report.record(_row_name(row, id_field, number), [(f, h) for f, h in hits if h is not None])
        first = hits[0][1] if hits else None
        row["contaminated"] = first is not None
        row["benchmark"] = first.benchmark if first else None
        row["ngram"] = first.ngram if first else None
        out.write(dumps_row(row))
