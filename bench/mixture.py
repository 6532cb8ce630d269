"""Benchmark: the filter-and-assemble run on 1,000,000 synthetic candidates, stage by stage.

    python bench/mixture.py             # 1,000,000 candidates: 750k reasoning + 250k non-reasoning
    python bench/mixture.py --quick     # 10,000 candidates, targets scaled down alike
    python bench/mixture.py --rows N    # any size; --keep keeps work/bench/mixture-PID

What runs, in one process (the `process` executor's workers are its children):

1. **generate**: synthetic candidates of realistic length (log-normal, mean
   about 6 KB, cut at 64 KB) streamed into two store tables, `rl-candidates`
   (reasoning) and `non-reasoning-candidates`, verdicts attached (the
   generator knows which answers are right), with planted problems:
   exact and near duplicates, benchmark leaks (a benchmark question as the
   prompt, or 20 of its words quoted in the reasoning), and bad samples
   (truncated, wrong verdict, malformed template, mixed language, loops).
2. the pipeline with `configs/filter-full.yaml` (600k + 200k targets, pass-rate
   window, k = 4 per prompt, 13-gram decontamination against a generated
   benchmark file, exact + MinHash dedup): `analyse`, `dedup`, `pass_rate`,
   `selection`, `mixture`, `write` (candidates and mixture side by side, each
   commit carrying the run's reports), then `card`: the mixture version's card
   rendered from the store, as `r1f filter run` does.

Each stage gets its wall time, CPU time (this process and its workers), the
peak RSS of this process (VmHWM, reset at each stage start through
`/proc/self/clear_refs`), the peak RSS of this process plus its workers
(sampled every 0.2 s), and the share of the machine other processes used.
Then the planted problems are looked up in the candidates table: recall per
kind, and every drop of an unplanted sample ("false drops").

Exit status 1 on a wrong answer: rows lost, a mixture of the wrong size or
with repeated ids, a planted bad sample or leak in the mixture. A missed
time or memory target shows as `NO` and `"targets_met": false`.

The MinHash stage alone against datasketch is `bench/minhash.py`; with
`--minhash-anchor` this bench runs its `--quick` form at the end and
carries its figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import psutil
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import (  # noqa: E402
    GB,
    StepOutcome,
    busy_cpu_seconds,
    emit_json,
    print_table,
    rounded,
    run_child,
    write_result,
)
from verifiers.language.latin import STOPWORDS  # noqa: E402

FULL_ROWS = 1_000_000
QUICK_ROWS = 10_000
REASONING_SHARE = 0.75
SEED = 20250128
BATCH_ROWS = 4096
MAX_CHARS = 64 * 1024
# Log-normal lengths: sigma as in bench/store.py; means chosen for about 6 KB overall.
SIGMA = 0.85
MEAN_CHARS = {"reasoning": 6_800, "non_reasoning": 3_600}
PARAGRAPH_WORDS = (60, 110)  # well under the readability rule's 2,000 characters
SAMPLES_PER_PROMPT = 4
CROWDED_PROMPTS = 0.03  # reasoning prompts with 6 samples, for the per-prompt cap of 4
# Planted shares of all candidates.
EXACT_DUPS = 0.02
NEAR_DUPS = 0.02
BAD = {
    "truncated": 0.015,
    "wrong_verdict": 0.02,  # reasoning only
    "malformed": 0.01,
    "mixed_language": 0.015,  # reasoning only: the non-reasoning track has no CoT
    "loop": 0.005,
}
LEAKS = {"leak_prompt": 0.0015, "leak_span": 0.0015}
BENCHMARK_ITEMS = 2_000
LEAK_SPAN_WORDS = 20
TARGETS = {"reasoning": 600_000, "non_reasoning": 200_000}
TARGET_S = 15 * 60
TARGET_RSS_GB = 8.0
CHILD_TIMEOUT_S = 3 * 3600
CHILD_RSS_CAP_GB = 16.0
HEARTBEAT_S = 60.0
REASONING_SOURCES = {"math": "rl-math", "code": "rl-code", "science": "rl-science"}
NON_REASONING_SOURCES = {
    "writing": "v3-writing",
    "factual_qa": "v3-factual",
    "self_cognition": "v3-self-cognition",
    "translation": "v3-translation",
}
# Caught = the candidates table gives the planted row a reason starting with one of these.
EXPECTED = {
    "exact_dup": ("dedup:exact",),
    "near_dup": ("dedup:",),
    "leak_prompt": ("decontam:",),
    "leak_span": ("decontam:",),
    "truncated": ("truncated:",),
    "wrong_verdict": ("verified:incorrect",),
    "malformed": ("format:",),
    "mixed_language": ("readability:mixed_language",),
    "loop": ("degenerate:", "repetition:"),
}
COMMON_WORDS = (
    "the of and to a in is that for it as with was on be by this are we so then "
    "which from at or an not but if can all its has one two when there their than "
    "each other into more these first number value result step check let now since "
    "because therefore thus hence gives equal total sum both case next wait again "
    "compute find note recall suppose consider means"
)
COMMON = COMMON_WORDS.split()
CJK = "因此我们可以得到这个结果所以答案是检查一下再计算每个数字的和等于然后"


# --- the corpus ----------------------------------------------------------------------


class Vocabulary:
    """Words as one byte blob: entry i is word i plus a space, entry i + V the same word ending a paragraph.

    English function words are the most frequent, pseudo-words of 4 to 11
    letters follow with Zipf frequencies (so two independent texts share
    almost no 5-word shingles), and CJK pairs sit at the end, drawn only for
    mixed-language samples.
    """

    def __init__(self, seed: int, size: int = 60_000) -> None:
        rng = np.random.default_rng([seed, 1])
        letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
        weights = np.linspace(2.0, 0.2, len(letters))
        # Other languages' function words would make a paragraph read as French or German.
        seen = set(COMMON).union(*STOPWORDS.values())
        words = list(COMMON)
        while len(words) < size:
            length = int(rng.integers(4, 12))
            word = "".join(rng.choice(letters, size=length, p=weights / weights.sum()))
            if word not in seen:
                seen.add(word)
                words.append(word)
        self.words = words
        cjk = [CJK[i] + CJK[(i * 7 + 3) % len(CJK)] for i in range(len(CJK))]
        self.size = len(words)
        entries = (
            [w + " " for w in words]
            + [w + ".\n\n" for w in words]
            + [c + " " for c in cjk]
            + [c + "。\n\n" for c in cjk]
        )
        encoded = [e.encode() for e in entries]
        self.lengths = np.array([len(e) for e in encoded], dtype=np.int64)
        self.offsets = np.cumsum(self.lengths) - self.lengths
        self.blob = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        self.cjk_first = 2 * self.size
        self.cjk_count = len(cjk)
        ranks = np.arange(1, self.size + 1, dtype=np.float64)
        p = 1.0 / ranks**1.05
        self.cdf = np.cumsum(p) / p.sum()
        self.bytes_per_word = float((p / p.sum()) @ self.lengths[: self.size])

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.searchsorted(self.cdf, rng.random(n)).astype(np.int64)

    def render(self, ids: np.ndarray, counts: np.ndarray) -> pa.StringArray:
        """One string per document: document d is words `ids[sum(counts[:d]):...]`."""
        lengths = self.lengths[ids]
        total = int(lengths.sum())
        out_start = np.cumsum(lengths) - lengths
        gather = np.repeat(self.offsets[ids] - out_start, lengths) + np.arange(total)
        data = self.blob[gather]
        ends = np.cumsum(lengths)
        doc_ends = np.cumsum(counts)
        offsets = np.zeros(len(counts) + 1, dtype=np.int32)
        has = doc_ends > 0
        offsets[1:][has] = ends[doc_ends[has] - 1]
        return pa.StringArray.from_buffers(
            len(counts), pa.py_buffer(offsets.tobytes()), pa.py_buffer(data.tobytes())
        )

    def phrase(self, rng: np.random.Generator, n: int) -> str:
        return " ".join(self.words[i] for i in self.draw(rng, n))


def paragraphs(ids: np.ndarray, counts: np.ndarray, rng: np.random.Generator, size: int) -> None:
    """End a paragraph every 60-110 words, in place (the `.\\n\\n` variant of the word)."""
    starts = np.cumsum(counts) - counts
    position = np.arange(len(ids)) - np.repeat(starts, counts)
    width = rng.integers(*PARAGRAPH_WORDS, size=len(counts))
    end = (position % np.repeat(width, counts)) == np.repeat(width, counts) - 1
    ids[end & (ids < size)] += size


def benchmark_items(vocab: Vocabulary, rng: np.random.Generator) -> list[str]:
    """A made-up evaluation set: word problems of pseudo-words, 40 to 70 words each."""
    items = []
    for k in range(BENCHMARK_ITEMS):
        body = vocab.phrase(rng, int(rng.integers(40, 70)))
        a, b = rng.integers(2, 999, size=2)
        items.append(f"Benchmark problem {k}: {body}. If {a} are added to {b}, how many remain?")
    return items


@dataclasses.dataclass
class Truth:
    """What the generator planted, per sample id."""

    ids: list[str] = dataclasses.field(default_factory=list)
    kinds: list[str] = dataclasses.field(default_factory=list)
    sources: list[str | None] = dataclasses.field(default_factory=list)
    rows: int = 0
    text_bytes: int = 0
    max_bytes: int = 0

    def add(self, sample_id: str, kind: str, source: str | None = None) -> None:
        self.ids.append(sample_id)
        self.kinds.append(kind)
        self.sources.append(source)

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(
            {"sample_id": self.ids, "kind": self.kinds, "source_id": self.sources},
            schema={"sample_id": pl.String, "kind": pl.String, "source_id": pl.String},
        )


def _hex_ids(prefix: str, start: int, n: int) -> list[str]:
    return [
        hashlib.blake2b(f"{prefix}{start + i}".encode(), digest_size=16).hexdigest()
        for i in range(n)
    ]


class Generator:
    """Batches of Sample rows for one track; planted problems recorded in `truth`."""

    def __init__(
        self,
        track: str,
        rows: int,
        vocab: Vocabulary,
        bench: list[str],
        truth: Truth,
        seed: int,
    ) -> None:
        self.track = track
        self.rows = rows
        self.vocab = vocab
        self.bench = bench
        self.truth = truth
        self.rng = np.random.default_rng([seed, 2, 0 if track == "reasoning" else 1])
        self.next_prompt = 0
        self.next_row = 0

    def batches(self) -> Iterator[pa.RecordBatch]:
        while self.next_row < self.rows:
            n = min(BATCH_ROWS, self.rows - self.next_row)
            yield self._batch(n)
            self.next_row += n

    def _batch(self, n: int) -> pa.RecordBatch:
        rng, vocab = self.rng, self.vocab
        reasoning = self.track == "reasoning"
        n_exact = round(n * EXACT_DUPS)
        n_near = round(n * NEAR_DUPS)
        fresh = n - n_exact - n_near
        # Prompts: runs of 4 samples (6 for a few reasoning prompts), 1 when non-reasoning.
        if reasoning:
            per = np.where(rng.random(fresh) < CROWDED_PROMPTS, 6, SAMPLES_PER_PROMPT)
            group = np.repeat(np.arange(fresh), per)[:fresh]
        else:
            group = np.arange(fresh)
        prompt_ids = (self.next_prompt + group).tolist()
        self.next_prompt += int(group[-1]) + 1 if fresh else 0
        kinds = np.full(fresh, "good", dtype=object)
        draw = rng.random(fresh)
        edge = 0.0
        scale = 1.0 / (1.0 - EXACT_DUPS - NEAR_DUPS)
        for kind, share in [*BAD.items(), *LEAKS.items()]:
            if not reasoning and kind in ("wrong_verdict", "mixed_language"):
                continue
            kinds[(draw >= edge) & (draw < edge + share * scale)] = kind
            edge += share * scale
        # Lengths in words, from log-normal character counts.
        mean = MEAN_CHARS[self.track]
        chars = rng.lognormal(np.log(mean) - SIGMA**2 / 2, SIGMA, size=fresh)
        chars = np.clip(chars, 200, MAX_CHARS - 600)
        counts = np.maximum((chars / vocab.bytes_per_word).astype(np.int64), 20)
        counts[kinds == "truncated"] //= 2
        loops = kinds == "loop"
        counts[loops] = np.maximum(counts[loops], 400)  # ten repeats of a 40-word paragraph
        ids = vocab.draw(rng, int(counts.sum()))
        starts = np.cumsum(counts) - counts
        for i in np.flatnonzero(kinds == "loop"):
            loop = ids[starts[i] : starts[i] + 40].copy()
            loop[-1] = loop[-1] % vocab.size + vocab.size  # each repeat ends a paragraph
            reps = counts[i] // 40
            ids[starts[i] : starts[i] + reps * 40] = np.tile(loop, reps)
        for i in np.flatnonzero(kinds == "mixed_language"):
            span = ids[starts[i] : starts[i] + counts[i]]
            mixed = rng.random(len(span)) < 0.3
            span[mixed] = vocab.cjk_first + rng.integers(0, vocab.cjk_count, int(mixed.sum()))
        paragraphs(ids, counts, rng, vocab.size)
        # Planted duplicates: copies of good fresh rows, exact or with 1 word in 100 replaced.
        good = np.flatnonzero(kinds == "good")
        sources = rng.choice(good, size=n_exact + n_near, replace=len(good) < n_exact + n_near)
        copy_ids = [ids[starts[s] : starts[s] + counts[s]].copy() for s in sources]
        for c in copy_ids[n_exact:]:
            edits = max(1, len(c) // 100)
            at = rng.integers(0, len(c), size=edits)
            c[at] = vocab.draw(rng, edits)
        all_ids = np.concatenate([ids, *copy_ids]) if copy_ids else ids
        all_counts = np.concatenate([counts, [len(c) for c in copy_ids]]).astype(np.int64)
        body = vocab.render(all_ids, all_counts)
        row_source = np.concatenate([np.arange(fresh), sources])
        kinds_all = np.concatenate(
            [kinds, np.array(["exact_dup"] * n_exact + ["near_dup"] * n_near, dtype=object)]
        )
        return self._rows(n, body, row_source, kinds_all, prompt_ids)

    def _rows(
        self,
        n: int,
        body: pa.StringArray,
        row_source: np.ndarray,
        kinds: np.ndarray,
        prompt_numbers: list[int],
    ) -> pa.RecordBatch:
        rng, vocab = self.rng, self.vocab
        reasoning = self.track == "reasoning"
        tag = "r" if reasoning else "n"
        sample_ids = _hex_ids(f"sample-{tag}-", self.next_row, n)
        domains = list(REASONING_SOURCES if reasoning else NON_REASONING_SOURCES)
        sources_of = REASONING_SOURCES if reasoning else NON_REASONING_SOURCES
        prompt_text: dict[int, str] = {}
        prompt_domain: dict[int, str] = {}
        answers_of: dict[int, str] = {}
        for p in dict.fromkeys(prompt_numbers):
            a, b = rng.integers(2, 999, size=2)
            words = vocab.phrase(rng, int(rng.integers(15, 40)))
            if reasoning:
                prompt_text[p] = f"Problem {p}: {words}. Given {a} and {b}, what is the total?"
            else:
                prompt_text[p] = f"Request {p}: write a short note about {words}."
            prompt_domain[p] = domains[int(rng.integers(0, len(domains)))]
            answers_of[p] = str(int(a + b))
        prompts, prompt_ids, domain_col, answers = [], [], [], []
        prefix, middle, suffix, finish, verdict = [], [], [], [], []
        for row in range(n):
            number = prompt_numbers[int(row_source[row])]
            kind = kinds[row]
            prompt = prompt_text[number]
            if kind == "leak_prompt":
                item = self.bench[int(rng.integers(0, len(self.bench)))]
                prompt = item.upper() if row % 2 else item
            prompts.append(prompt)
            prompt_ids.append(f"{tag}-prompt-{number}")
            domain_col.append(prompt_domain[number])
            answers.append(answers_of[number])
            head = "<think>\n" if reasoning else "<think></think><answer>"
            if kind == "leak_span":
                item_words = self.bench[int(rng.integers(0, len(self.bench)))].split()
                at = int(rng.integers(0, len(item_words) - LEAK_SPAN_WORDS))
                quote = " ".join(item_words[at : at + LEAK_SPAN_WORDS])
                head += f"The problem says: {quote}.\n\n"
            tail = "\n</think>\n<answer>" if reasoning else ""
            end = "</answer>"
            if kind == "truncated":
                tail, end = "", ""
            elif kind == "malformed":
                head = head.replace("<think>", "").replace("</think>", "")
                if reasoning:
                    tail = "\n<answer>"
            prefix.append(head)
            middle.append(tail)
            suffix.append(end)
            finish.append("length" if kind == "truncated" else "stop")
            verdict.append("incorrect" if kind == "wrong_verdict" else "correct")
            if kind != "good":
                source = sample_ids[int(row_source[row])] if kind.endswith("_dup") else None
                self.truth.add(sample_ids[row], str(kind), source)
        answer_text = [a if reasoning else "" for a in answers]
        completion = pc.binary_join_element_wise(
            pa.array(prefix),
            body,
            pa.array(middle),
            pa.array(answer_text),
            pa.array(suffix),
            "",
        )
        lengths = pc.binary_length(completion).to_numpy()
        self.truth.rows += n
        self.truth.text_bytes += int(lengths.sum())
        self.truth.max_bytes = max(self.truth.max_bytes, int(lengths.max()))
        verdicts = [
            [
                {"verifier": "math", "verdict": v, "reason": None, "version": "bench"},
                {"verifier": "format", "verdict": "correct", "reason": "ok", "version": "bench"},
            ]
            if reasoning
            else [{"verifier": "format", "verdict": "correct", "reason": "ok", "version": "bench"}]
            for v in verdict
        ]
        from store.record import SAMPLE_SCHEMA

        columns: dict[str, Any] = {
            "sample_id": pa.array(sample_ids),
            "prompt_id": pa.array(prompt_ids),
            "prompt": pa.array(prompts),
            "completion": completion,
            "reasoning": pa.nulls(n, pa.string()),
            "answer": pa.array(answers if reasoning else [None] * n, pa.string()),
            "gold": pa.array(answers if reasoning else [None] * n, pa.string()),
            "domain": pa.array(domain_col),
            "track": pa.array([self.track] * n),
            "source": pa.array([sources_of[d] for d in domain_col]),
            "language": pa.array(["en"] * n),
            "backend": pa.array(["bench"] * n),
            "model_id": pa.array(["bench-rl-checkpoint"] * n),
            "model_hash": pa.nulls(n, pa.string()),
            "sampling": pa.nulls(n, SAMPLE_SCHEMA.field("sampling").type),
            "seed": pa.array([SEED] * n, pa.int64()),
            "sample_index": pa.array([0] * n, pa.int32()),
            "finish_reason": pa.array(finish),
            "prompt_tokens": pa.array([len(p) // 4 for p in prompts], pa.int32()),
            "completion_tokens": pa.array(lengths // 4, pa.int32()),
            "verdicts": pa.array(verdicts, SAMPLE_SCHEMA.field("verdicts").type),
            "kept": pa.nulls(n, pa.bool_()),
            "filter_reason": pa.nulls(n, pa.string()),
            "flow_run_id": pa.nulls(n, pa.string()),
            "config_hash": pa.nulls(n, pa.string()),
            "content_hash": pa.array([""] * n),
        }
        return pa.RecordBatch.from_arrays(
            [columns[f.name] for f in SAMPLE_SCHEMA], schema=SAMPLE_SCHEMA
        )


# --- measuring stages ----------------------------------------------------------------


def _vm_hwm() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_hwm() -> bool:
    """Reset this process's peak RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


@dataclasses.dataclass
class StageFigures:
    name: str
    rows: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    main_peak_gb: float = 0.0
    tree_peak_gb: float = 0.0
    others: float = 0.0


class Meter:
    """A pipeline `Progress` that measures each stage: wall, CPU, peak RSS, machine load.

    Workers of the process pool are children of the forkserver, not of this
    process, so `RUSAGE_CHILDREN` never sees them: a sampler thread reads the
    CPU time and RSS of the whole process tree every 0.2 s instead.
    """

    def __init__(self) -> None:
        self.me = psutil.Process()
        self.stages: list[StageFigures] = []
        self.current: StageFigures | None = None
        self.lock = threading.Lock()
        self.tree_peak = 0
        self.cpu_seen: dict[int, float] = {}
        self.hwm_reset = _reset_hwm()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        self.started = self.busy0 = self.cpu0 = 0.0

    def _tree(self) -> list[psutil.Process]:
        try:
            return [self.me, *self.me.children(recursive=True)]
        except psutil.Error:
            return [self.me]

    def _sample(self) -> None:
        beat = time.perf_counter()
        while not self.stop.wait(0.2):
            if time.perf_counter() - beat >= HEARTBEAT_S:
                beat = time.perf_counter()
                self._heartbeat()
            rss = 0
            with self.lock:
                for proc in self._tree():
                    try:
                        rss += proc.memory_info().rss
                        times = proc.cpu_times()
                        self.cpu_seen[proc.pid] = times.user + times.system
                    except psutil.Error:
                        continue
                self.tree_peak = max(self.tree_peak, rss)

    def _heartbeat(self) -> None:
        stage = self.current
        if stage is None:
            return
        with self.lock:
            peak = self.tree_peak / GB
        main = self.me.memory_info().rss / GB
        print(
            f"    [{time.strftime('%H:%M:%S')}] {stage.name}: {stage.rows:,} rows, "
            f"{time.perf_counter() - self.started:.0f} s, main {main:.2f} GB, "
            f"tree peak {peak:.2f} GB",
            flush=True,
        )

    def _cpu_total(self) -> float:
        with self.lock:
            for proc in self._tree():
                try:
                    times = proc.cpu_times()
                    self.cpu_seen[proc.pid] = times.user + times.system
                except psutil.Error:
                    continue
            return sum(self.cpu_seen.values())

    def _close(self) -> None:
        stage = self.current
        if stage is None:
            return
        wall = time.perf_counter() - self.started
        cpu = self._cpu_total() - self.cpu0
        others = max(0.0, busy_cpu_seconds() - self.busy0 - cpu)
        stage.wall_s = wall
        stage.cpu_s = cpu
        stage.main_peak_gb = _vm_hwm() / GB
        with self.lock:
            stage.tree_peak_gb = max(self.tree_peak, self.me.memory_info().rss) / GB
        stage.others = others / (wall * (os.cpu_count() or 1)) if wall > 0 else 0.0
        self.stages.append(stage)
        self.current = None

    def stage(self, name: str, total: int | None) -> None:
        self._close()
        self.hwm_reset = _reset_hwm() and self.hwm_reset
        with self.lock:
            self.tree_peak = 0
        self.current = StageFigures(name)
        self.busy0 = busy_cpu_seconds()
        self.cpu0 = self._cpu_total()
        self.started = time.perf_counter()
        print(f"  [{time.strftime('%H:%M:%S')}] {name} ...", flush=True)

    def advance(self, rows: int) -> None:
        if self.current is not None:
            self.current.rows += rows

    def finish(self) -> None:
        self._close()
        self.stop.set()
        self.thread.join()


# --- checks --------------------------------------------------------------------------


def recall_table(candidates: pl.DataFrame, truth: pl.DataFrame) -> dict[str, dict[str, Any]]:
    """Per planted kind: planted, caught (the expected reason, on the row or its pair)."""
    reasons = candidates.select("sample_id", "filter_reason")
    joined = truth.join(reasons, on="sample_id", how="left").join(
        reasons.rename({"sample_id": "source_id", "filter_reason": "source_reason"}),
        on="source_id",
        how="left",
    )
    out: dict[str, dict[str, Any]] = {}
    for kind, prefixes in EXPECTED.items():
        rows = joined.filter(pl.col("kind") == kind)
        own = pl.any_horizontal(
            [pl.col("filter_reason").fill_null("").str.starts_with(p) for p in prefixes]
        )
        pair = pl.any_horizontal(
            [pl.col("source_reason").fill_null("").str.starts_with(p) for p in prefixes]
        )
        caught = rows.filter(own | pair if kind.endswith("_dup") else own)
        misses = rows.filter(~(own | pair) if kind.endswith("_dup") else ~own)
        other = Counter(misses.get_column("filter_reason").fill_null("kept").to_list())
        out[kind] = {
            "planted": rows.height,
            "caught": caught.height,
            "recall": rounded(caught.height / rows.height, 4) if rows.height else None,
            "missed_as": dict(other.most_common(3)),
        }
    return out


def false_drops(candidates: pl.DataFrame, truth: pl.DataFrame) -> dict[str, int]:
    """Drops of samples nothing was planted in (and that no planted copy points at)."""
    planted = set(truth.get_column("sample_id")) | set(truth.get_column("source_id").drop_nulls())
    ordinary = candidates.filter(~pl.col("sample_id").is_in(list(planted)))
    reasons = ordinary.filter(pl.col("kept").not_()).get_column("filter_reason").to_list()
    # Sampling decisions are not errors: the mixture is smaller than its pool by design.
    return dict(
        Counter(r for r in reasons if not r.startswith(("mixture:", "selection:", "pass_rate:")))
    )


# --- main ----------------------------------------------------------------------------


def _minhash_anchor(quick: bool) -> dict[str, Any] | None:
    script = ROOT / "bench" / "minhash.py"
    if not script.is_file():
        return None
    argv = [sys.executable, str(script), *(["--quick"] if quick else [])]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": f"bench/minhash.py exited {done.returncode}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def generate(work: Path, rows: int, result: Path) -> None:
    """The `generate` step, run in a child: both input tables, the benchmark file, the truth."""
    from flows.config import load_run_config
    from store.lineage import Lineage
    from store.store import Store

    started = time.perf_counter()
    cfg = load_run_config(ROOT / "configs" / "filter-full.yaml")
    vocab = Vocabulary(SEED)
    items = benchmark_items(vocab, np.random.default_rng([SEED, 9]))
    (work / "bench-eval.jsonl").write_text(
        "".join(json.dumps({"question": t}) + "\n" for t in items)
    )
    store = Store(work / "store")
    truth = Truth()
    reasoning_rows = round(rows * REASONING_SHARE)
    tables = cfg.filter.inputs
    for table, track, n in (
        (tables[0].table, "reasoning", reasoning_rows),
        (tables[1].table, "non_reasoning", rows - reasoning_rows),
    ):
        gen = Generator(track, n, vocab, items, truth, SEED)
        store.commit(table, gen.batches(), lineage=Lineage(writer="bench/mixture.py"))
    truth.frame().write_parquet(work / "truth.parquet")
    write_result(
        result,
        {
            "seconds": time.perf_counter() - started,
            "cpu_s": time.process_time(),
            "rows": truth.rows,
            "text_bytes": truth.text_bytes,
            "max_bytes": truth.max_bytes,
        },
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS:,} candidates")
    parser.add_argument("--rows", type=int, help="candidates in all (overrides --quick)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--minhash-anchor", action="store_true", help="also run bench/minhash.py (--quick form)"
    )
    parser.add_argument(
        "--data",
        help="keep the generated inputs in DIR and reuse them when DIR already holds "
        "this many rows (the pipeline's output tables there are replaced)",
    )
    parser.add_argument("--generate-into", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    rows = args.rows or (QUICK_ROWS if args.quick else FULL_ROWS)
    if args.generate_into:
        generate(Path(args.generate_into), rows, Path(args.out))
        return 0
    scale = rows / FULL_ROWS
    if args.data:
        work = Path(args.data).resolve()
        made_before = work / "generate.json"
        reuse = made_before.is_file() and json.loads(made_before.read_text()).get("rows") == rows
    else:
        work = ROOT / "work" / "bench" / f"mixture-{os.getpid()}"
        reuse = False
    if not reuse:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(
        f"bench/mixture: {rows:,} candidates ({REASONING_SHARE:.0%} reasoning), "
        f"targets scaled by {scale:g}, {args.workers} workers, work dir {work}",
        flush=True,
    )
    # The data is generated in a child, so its memory (allocator pools kept
    # after a 6 GB commit) does not count against the pipeline's stages.
    if reuse:
        print(f"  reusing the inputs generated earlier in {work}", flush=True)
        made = StepOutcome("generate", ok=True, result=json.loads(made_before.read_text()))
        made.process_s = made.result["seconds"]
        made.sampled_peak_rss_gb = made.result["peak_rss_gb"]
    else:
        print(f"  [{time.strftime('%H:%M:%S')}] generate (child process) ...", flush=True)
        made = run_child(
            "generate",
            [
                sys.executable,
                __file__,
                "--rows",
                str(rows),
                "--generate-into",
                str(work),
                "--out",
                str(work / "generate.json"),
            ],
            work / "generate.json",
            timeout_s=CHILD_TIMEOUT_S,
            rss_cap_gb=CHILD_RSS_CAP_GB,
        )
    if not made.ok:
        print(f"generate failed: {made.error}", flush=True)
        return 1
    generate_s = made.process_s
    text_bytes, max_bytes = made.result["text_bytes"], made.result["max_bytes"]
    truth_frame = pl.read_parquet(work / "truth.parquet")

    from data_cards.from_store import write_card_for_version
    from filters.mixture import TrackSpec
    from filters.pipeline import run_filter_pipeline
    from flows.config import load_run_config
    from store.lineage import Lineage
    from store.store import Store

    cfg = load_run_config(ROOT / "configs" / "filter-full.yaml")
    store = Store(work / "store")
    for output in (cfg.filter.outputs.candidates, cfg.filter.outputs.mixture):
        shutil.rmtree(work / "store" / output, ignore_errors=True)  # a reused dir's last run
    lineage = Lineage(writer="bench/mixture.py")
    bench_file = work / "bench-eval.jsonl"
    meter = Meter()
    f = cfg.filter
    targets = {k: max(1, round(v * scale)) for k, v in TARGETS.items()}
    run_cfg = dataclasses.replace(
        f,
        outputs=dataclasses.replace(f.outputs, card_dir=str(work / "cards")),
        execution=dataclasses.replace(f.execution, workers=args.workers),
        decontam=dataclasses.replace(f.decontam, benchmarks=[str(bench_file)]),
        mixture=dataclasses.replace(
            f.mixture, tracks={k: TrackSpec(v) for k, v in targets.items()}
        ),
    )
    pipeline_started = time.perf_counter()
    report = run_filter_pipeline(store, run_cfg, lineage, seed=cfg.seed, progress=meter)
    meter.stage("card", None)
    mixture = report.mixture
    version = int(mixture.version or 0)
    card_dir = Path(run_cfg.outputs.card_dir) / f"{mixture.table}-v{version}"
    write_card_for_version(store, mixture.table, version, card_dir)
    pipeline_s = time.perf_counter() - pipeline_started
    meter.finish()
    total_s = time.perf_counter() - started
    stages = [
        StageFigures(
            "generate (child)",
            rows=rows,
            wall_s=made.process_s,
            cpu_s=made.result["cpu_s"],
            main_peak_gb=made.result["peak_rss_gb"],
            tree_peak_gb=made.sampled_peak_rss_gb,
            others=made.others_cpu_share,
        ),
        *meter.stages,
    ]

    candidates = store.read(
        run_cfg.outputs.candidates, columns=["sample_id", "kept", "filter_reason"]
    )
    mixture_ids = store.read(run_cfg.outputs.mixture, columns=["sample_id"]).get_column("sample_id")
    recall = recall_table(candidates, truth_frame)
    wrong = false_drops(candidates, truth_frame)
    base_ids = mixture_ids.str.replace(r"~\d+$", "")
    bad_kinds = [k for k in EXPECTED if not k.endswith("_dup")]
    planted_in_mix = truth_frame.filter(
        pl.col("kind").is_in(bad_kinds) & pl.col("sample_id").is_in(base_ids.unique().to_list())
    ).height
    checks = {
        "rows_kept_in_candidates": candidates.height == rows,
        "mixture_size_as_reported": len(mixture_ids) == report.mixture_rows,
        "mixture_ids_unique": mixture_ids.n_unique() == len(mixture_ids),
        "no_planted_bad_or_leak_in_mixture": planted_in_mix == 0,
    }

    print()
    print_table(
        ["stage", "rows", "wall s", "cpu s", "main peak GB", "tree peak GB", "others"],
        [
            (
                s.name,
                s.rows,
                s.wall_s,
                s.cpu_s,
                s.main_peak_gb,
                s.tree_peak_gb,
                f"{s.others:.0%}",
            )
            for s in stages
        ],
    )
    print()
    print_table(
        ["step", "rows in", "kept", "dropped", "step s", "MB/s of text"],
        [
            (
                s.step,
                s.rows_in,
                s.kept,
                sum(s.dropped.values()),
                s.seconds,
                text_bytes / 1e6 / s.seconds if s.seconds else None,
            )
            for s in report.steps
        ],
    )
    print()
    print_table(
        ["planted", "rows", "caught", "recall", "missed as"],
        [
            (k, v["planted"], v["caught"], v["recall"], json.dumps(v["missed_as"]) or "-")
            for k, v in recall.items()
        ],
    )
    # The targets are the pipeline's: the generate child is the bench's own setup.
    peak_main = max(s.main_peak_gb for s in meter.stages)
    peak_tree = max(s.tree_peak_gb for s in meter.stages)
    mix = report.mixture_report
    print()
    print(
        f"text: {text_bytes / GB:.2f} GB, mean {text_bytes / rows / 1024:.2f} KB, "
        f"max {max_bytes / 1024:.1f} KB; generate {generate_s:.0f} s; "
        f"pipeline {pipeline_s:.0f} s; total {total_s:.0f} s"
    )
    print(
        f"mixture: {', '.join(f'{t.track} {t.achieved:,}/{t.target:,}' for t in mix.tracks)}; "
        f"false drops of unplanted samples: {wrong or 'none'}; checks: "
        + ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in checks.items())
    )
    if not meter.hwm_reset:
        print("note: /proc/self/clear_refs not writable; main peaks are cumulative")
    anchor = _minhash_anchor(args.quick) if args.minhash_anchor else None
    time_met = pipeline_s <= TARGET_S
    rss_met = peak_tree <= TARGET_RSS_GB
    figures: dict[str, Any] = {
        "bench": "mixture",
        "rows": rows,
        "text_gb": rounded(text_bytes / GB),
        "mean_kb": rounded(text_bytes / rows / 1024),
        "generate_s": rounded(generate_s, 1),
        "pipeline_s": rounded(pipeline_s, 1),
        "total_s": rounded(total_s, 1),
        "peak_rss_gb": rounded(peak_tree),
        "peak_rss_main_gb": rounded(peak_main),
        "generate_peak_rss_gb": rounded(made.sampled_peak_rss_gb),
        "target_s": TARGET_S,
        "target_rss_gb": TARGET_RSS_GB,
        "time_met": time_met,
        "rss_met": rss_met,
        "targets_met": time_met and rss_met and not mix.short,
        "stages": {
            s.name: {
                "wall_s": rounded(s.wall_s, 1),
                "cpu_s": rounded(s.cpu_s, 1),
                "main_peak_gb": rounded(s.main_peak_gb),
                "tree_peak_gb": rounded(s.tree_peak_gb),
                "others": rounded(s.others, 2),
            }
            for s in stages
        },
        # Time inside each step summed over batches (StepStats.seconds): with two
        # workers on two free cores that is CPU time; on a loaded machine, more.
        "step_s": {s.step: rounded(s.seconds, 1) for s in report.steps},
        "mixture": {t.track: {"target": t.target, "achieved": t.achieved} for t in mix.tracks},
        "recall": {k: v["recall"] for k, v in recall.items()},
        "false_drops": wrong,
        "checks": checks,
        "minhash_anchor": anchor,
    }
    if not args.keep and not args.data:
        shutil.rmtree(work, ignore_errors=True)
    emit_json(figures)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
