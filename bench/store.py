"""Store benchmark: commit, read back, change, diff, hash and release a large table of long texts.

    python bench/store.py            # 800k rows, ~6 KB mean text (about 4.8 GB)
    python bench/store.py --quick    # 20k rows, under a minute

The data is synthetic but shaped like the factory's output: CoT completions
wrapped in <think>/<answer> tags, log-normal lengths (mean ~6 KB, capped at
64 KB), words from a Zipf-distributed vocabulary with numbers, formulas and
a little non-ASCII, and a realistic mix of domains, tracks and sources. It is
generated deterministically from the row index and streamed in Arrow batches,
so no step ever holds the table in memory unless the code under test does.

Each measured step runs in its own child process (this file with `--step`),
so its peak RSS is its own. The anchor is a bare `pyarrow.parquet` write and
read of the same batches with the same compression (zstd level 3) and row
group size, without versioning, deduplication or content hashing; the ratio
ours/anchor is the store's overhead.

Targets (the foundation issue): every step under 2 minutes and under 6 GB
peak RSS on the 2-core, 24 GiB development machine. A missed target shows in
the table and the JSON (`targets_met`); a wrong answer (a read that returns
other text than was written, a diff that miscounts the planted change, a
release that does not verify, a step that crashes) also exits with status 1.
Results and findings: docs/bench-store.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's directory comes first on sys.path and this very
# file (bench/store.py) would shadow the `store` package: put the repo root there.
_BENCH_DIR = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH_DIR]
sys.path.insert(0, str(_BENCH_DIR.parent))

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from functools import cached_property  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from bench._common import (  # noqa: E402
    GB,
    StepOutcome,
    Stopwatch,
    emit_json,
    print_table,
    rounded,
    run_child,
    write_result,
)
from store.record import SAMPLE_SCHEMA, SAMPLING_TYPE, VERDICT_TYPE  # noqa: E402

FULL_ROWS = 800_000
QUICK_ROWS = 20_000
BATCH_ROWS = 4096  # the store's row-group size; the anchor writes the same
TABLE = "bench-samples"
TARGET_S = 120.0
TARGET_RSS_GB = 6.0
# The watchdog's limits: far above the targets, there only to keep a runaway
# step from taking the shared machine down.
STEP_TIMEOUT_S = 1800.0
RSS_CAP_GB = 16.0
# Above this share of the machine taken by other processes, a step's wall time is suspect.
CONTENDED_SHARE = 0.15

# ---------------------------------------------------------------------------
# Synthetic data
# ---------------------------------------------------------------------------

MEAN_TEXT_BYTES = 6000
MAX_TEXT_BYTES = 64 * 1024
MIN_TEXT_BYTES = 200
_SIGMA = 0.85  # log-normal spread: p99 ~ 30 KB, a few hundred rows reach the cap
# Pick mu so that the uncapped mean is MEAN_TEXT_BYTES (mean = exp(mu + sigma^2 / 2)).
_MU = math.log(MEAN_TEXT_BYTES) - _SIGMA**2 / 2
# Large enough that rows sliced from it rarely share text within one Parquet page
# (which would flatter zstd), small enough to build in a few seconds.
POOL_BYTES = 48 * 1024 * 1024

DOMAINS = ("math", "code", "science", "general")
DOMAIN_WEIGHTS = (0.40, 0.25, 0.20, 0.15)
# Sources per domain; a row's source is one of its domain's, uniformly.
SOURCES = {
    "math": ("openr1-math", "toy-math", "aime-style"),
    "code": ("codeforces-cot", "toy-code"),
    "science": ("sciq-cot",),
    "general": ("general-chat", "writing-prompts"),
}
VERIFIERS = {
    "math": "math_verify",
    "code": "code_tests",
    "science": "mcq_match",
    "general": "llm_judge",
}
REASONING_SHARE = 0.75
CHANGE_SHARE = 0.01  # the v1 commit: 1% of rows re-judged, 1% deleted, 1% new
SAMPLES_PER_PROMPT = 4
# How a reasoning-track completion is wrapped around its CoT and final answer.
_OPEN, _MID, _CLOSE = b"<think>\n", b"</think>\n<answer>", b"</answer>"

_COMMON_TEXT = """
the of to and a in is that we it for this as with be on so by are at or not
let me check wait then now if can but number value sum case each first second
next since which must also step answer equal equation term solve find given
total result therefore thus because from have has one two three four five ten
hundred times divide multiply add subtract square root prime factor even odd
integer function loop array list return index test input output string count
condition true false maybe actually hmm right compute approach idea consider
means gives get need try again verify correct wrong mistake recheck assume
suppose let's here there only all some every other same different larger smaller
positive negative zero both either neither more less than between after before
while until when where how what why formula expression simplify expand graph
point line angle triangle circle area volume probability expected ratio rate
speed distance time energy force mass charge cell gene protein reaction acid
base molecule atom code variable bug edge the the the of of to to and and a a
is is we we so so
"""
_COMMON_WORDS = _COMMON_TEXT.split()
_MATH_TEXT = """
= + - * / ( ) x y z n k m x^2 y^2 n^2 2x 3y \\frac{1}{2} \\sqrt{2} \\pi a_n
f(x) g(x) dp[i] i+1 n-1 mod ≤ ≥ ≠ π √ → ∑ \u00d7 ÷ ∞ 因此 所以 我们 答案
"""
_MATH_TOKENS = _MATH_TEXT.split()
# The stock phrases R1-style reasoning keeps coming back to.
_PHRASES = [
    "Wait, let me double-check that.",
    "So the answer is",
    "Let me think about this again.",
    "Hmm, that doesn't seem right.",
    "First, I need to figure out",
    "Let's verify:",
    "Alternatively, maybe",
    "Okay, so",
    "That means",
    "which gives us",
    "Now, substituting back,",
    "Let me re-read the problem.",
    "On the other hand,",
    "I think the correct approach is",
    "plugging in the values,",
    "But wait, what about",
    "Let me try a small example.",
    "So far so good.",
    "This simplifies to",
    "Putting it all together,",
    "I should consider the case where",
    "To be careful,",
    "Let me recompute:",
    "Yes, that works.",
    "No, that's not it.",
    "In other words,",
]


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a fast, well-spread hash of uint64 values (wraps on purpose)."""
    x = x.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _hash(idx: np.ndarray, stream: int) -> np.ndarray:
    """Independent per-row random streams: hash(index, stream), stateless, any order."""
    salt = np.uint64((stream * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)
    return _mix64(idx.astype(np.uint64) ^ salt)


def _uniform(idx: np.ndarray, stream: int) -> np.ndarray:
    """Uniform floats in (0, 1], one per row."""
    return ((_hash(idx, stream) >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53


def _pick(names: tuple[str, ...], codes: np.ndarray) -> pa.Array:
    """A string column from small integer codes, without a Python loop."""
    indices = pa.array(codes.astype(np.int32))
    return pa.DictionaryArray.from_arrays(indices, pa.array(names)).cast(pa.string())


def _const(value: Any, n: int, typ: pa.DataType | None = None) -> pa.Array:
    return pa.repeat(pa.scalar(value, typ or pa.string()), n)


def _text_where(mask: np.ndarray, text: str) -> pa.Array:
    """`text` where mask is true, null elsewhere."""
    return pc.if_else(pa.array(mask), pa.scalar(text), pa.scalar(None, pa.string()))


def _weighted(u: np.ndarray, weights: tuple[float, ...]) -> np.ndarray:
    return np.searchsorted(np.cumsum(weights), u * sum(weights), side="left").clip(
        0, len(weights) - 1
    )


@dataclass(frozen=True)
class TextPool:
    """A few tens of MB of CoT-like text; rows are windows cut from it at token boundaries.

    Slicing windows out of one pre-built pool keeps generation to a memcpy per
    row, so that it does not dominate what is measured.
    """

    data: bytes
    starts: np.ndarray  # byte offsets where a token begins: every cut lands on one

    @staticmethod
    def build(seed: int, size: int = POOL_BYTES) -> TextPool:
        rng = np.random.default_rng(seed)
        pseudo = _pseudo_words(rng, 20_000)
        numbers = [str(v) for v in rng.integers(0, 10_000, 2_000)]
        classes = (_COMMON_WORDS, _PHRASES, _MATH_TOKENS + numbers, pseudo)
        class_weights = (0.58, 0.08, 0.13, 0.21)
        seps = (" ", ", ", ". ", ".\n\n", "\n", ": ")
        sep_weights = np.array([0.84, 0.06, 0.065, 0.02, 0.01, 0.005])
        words: list[str] = []
        probs: list[np.ndarray] = []
        for members, weight in zip(classes, class_weights, strict=True):
            # Zipf within each class: a few words carry most of the mass, like real text.
            z = 1.0 / (np.arange(len(members)) + 2.7) ** 1.05
            probs.append(weight * z / z.sum())
            words.extend(members)
        # A unit is a word and the separator after it: unit id = word id * len(seps) + sep id.
        units = [(w + s).encode() for w in words for s in seps]
        word_cdf = np.cumsum(np.concatenate(probs))
        sep_cdf = np.cumsum(sep_weights)
        unit_len = np.array([len(u) for u in units], dtype=np.int64)
        unit_off = np.concatenate([[0], np.cumsum(unit_len)[:-1]])
        flat = np.frombuffer(b"".join(units), dtype=np.uint8)
        chunks: list[np.ndarray] = []
        starts: list[np.ndarray] = []
        written = 0
        while written < size:
            # Gather ~1M units at a time: byte i of the chunk comes from flat[src[i]].
            word = np.searchsorted(word_cdf, rng.random(1 << 20) * word_cdf[-1]).clip(
                0, len(words) - 1
            )
            sep = np.searchsorted(sep_cdf, rng.random(1 << 20) * sep_cdf[-1]).clip(0, len(seps) - 1)
            ids = word * len(seps) + sep
            lens = unit_len[ids]
            ends = np.cumsum(lens)
            src = np.repeat(unit_off[ids] - (ends - lens), lens) + np.arange(ends[-1])
            chunks.append(flat[src])
            starts.append(written + ends - lens)
            written += int(ends[-1])
        data = np.concatenate(chunks).tobytes()
        data.decode("utf-8")  # every cut is at a unit start, so every window is valid UTF-8
        return TextPool(data, np.concatenate(starts))

    def save(self, directory: Path) -> None:
        (directory / "pool.bin").write_bytes(self.data)
        np.save(directory / "pool-starts.npy", self.starts.astype(np.int32))  # the pool is < 2 GB

    @staticmethod
    def load(directory: Path) -> TextPool:
        return TextPool(
            (directory / "pool.bin").read_bytes(), np.load(directory / "pool-starts.npy")
        )

    def windows(
        self, idx: np.ndarray, stream: int, lengths: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Start and end offsets of one window per row, each at most `lengths` bytes long."""
        room = int(np.searchsorted(self.starts, len(self.data) - MAX_TEXT_BYTES - 1))
        first = (_hash(idx, stream) % np.uint64(room)).astype(np.int64)
        begin = self.starts[first]
        # The last unit start not past begin + length: the window ends just before it.
        stop = np.searchsorted(self.starts, begin + lengths, side="right") - 1
        end = self.starts[np.maximum(stop, first + 1)]
        return begin, end


def _pseudo_words(rng: np.random.Generator, n: int) -> list[str]:
    """Pronounceable made-up words, so the long tail of the vocabulary is not one repeated token."""
    onsets = [*"bcdfghjklmnprstvwz", "ch", "sh", "th", "st", "pr", "tr", "gr", "pl"]
    vowels = ["a", "e", "i", "o", "u", "ea", "ou", "io"]
    codas = ["", "", "", "n", "r", "s", "t", "l", "nd", "st", "ng", "x"]
    syllables = [o + v + c for o in onsets for v in vowels for c in codas]
    drawn = rng.integers(0, len(syllables), size=(2 * n, 3))
    count = rng.choice(3, size=2 * n, p=[0.3, 0.45, 0.25]) + 1
    words = dict.fromkeys(
        "".join(syllables[s] for s in row[:k]) for row, k in zip(drawn, count, strict=True)
    )
    return sorted(list(words)[:n], key=lambda w: (len(w), w))


def _string_array(pieces: list[Any], lengths: list[int]) -> pa.Array:
    """A StringArray straight from its buffers: one join, no per-row Python str objects."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    data = b"".join(pieces)
    return pa.StringArray.from_buffers(len(lengths), pa.py_buffer(offsets), pa.py_buffer(data))


def sample_ids(idx: np.ndarray) -> list[str]:
    """Unique 128-bit hex ids, a pure function of the row index."""
    hi, lo = _hash(idx, 1).tolist(), _hash(idx, 2).tolist()
    return [f"{a:016x}{b:016x}" for a, b in zip(hi, lo, strict=True)]


def make_batch(pool: TextPool, idx: np.ndarray, variant: int = 0) -> pa.RecordBatch:
    """Rows `idx` in SAMPLE_SCHEMA; `variant=1` is the same rows re-judged (verdict flipped)."""
    n = len(idx)
    prompt_no = idx // SAMPLES_PER_PROMPT
    domain = _weighted(_uniform(prompt_no, 3), DOMAIN_WEIGHTS)
    reasoning = _uniform(prompt_no, 4) < REASONING_SHARE
    source_names = tuple(s for d in DOMAINS for s in SOURCES[d])
    source_base = np.cumsum([0, *(len(SOURCES[d]) for d in DOMAINS)])[:-1]
    source_count = np.array([len(SOURCES[d]) for d in DOMAINS])
    source = source_base[domain] + (
        _hash(prompt_no, 5) % source_count[domain].astype(np.uint64)
    ).astype(np.int64)

    # Text lengths: log-normal via Box-Muller, capped at 64 KB for the whole completion.
    z = np.sqrt(-2.0 * np.log(_uniform(idx, 6))) * np.cos(2.0 * np.pi * _uniform(idx, 7))
    total = np.clip(np.exp(_MU + _SIGMA * z), MIN_TEXT_BYTES, MAX_TEXT_BYTES).astype(np.int64)
    answer_no = (_hash(prompt_no, 8) % np.uint64(100_000)).tolist()
    answers = [
        f"{a}" if d != 2 else "ABCD"[a % 4] for a, d in zip(answer_no, domain.tolist(), strict=True)
    ]
    wrap = np.where(reasoning, len(_OPEN) + len(_MID) + len(_CLOSE), 0)
    answer_len = np.array([len(a) for a in answers])
    begin, end = pool.windows(idx, 9, total - wrap - answer_len * reasoning)
    p_begin, p_end = pool.windows(
        prompt_no, 10, 120 + (_hash(prompt_no, 11) % np.uint64(200)).astype(np.int64)
    )

    view = memoryview(pool.data)
    pieces: list[Any] = []
    lengths: list[int] = []
    for b, e, r, a in zip(begin.tolist(), end.tolist(), reasoning.tolist(), answers, strict=True):
        if r:
            ab = a.encode()
            pieces += (_OPEN, view[b:e], _MID, ab, _CLOSE)
            lengths.append(e - b + len(_OPEN) + len(_MID) + len(_CLOSE) + len(ab))
        else:
            pieces.append(view[b:e])
            lengths.append(e - b)
    completion = _string_array(pieces, lengths)
    p_pieces = [view[b:e] for b, e in zip(p_begin.tolist(), p_end.tolist(), strict=True)]
    prompt = _string_array(p_pieces, (p_end - p_begin).tolist())
    answer = pa.array(
        [a if r else None for a, r in zip(answers, reasoning.tolist(), strict=True)], pa.string()
    )

    # Verdicts: 70% correct, 25% incorrect, 5% unverifiable; the variant re-judges.
    verdict = _weighted(_uniform(idx, 12), (0.70, 0.25, 0.05))
    if variant:
        verdict = np.where(verdict == 0, 1, 0)
    verdict_names = ("correct", "incorrect", "unverifiable")
    verifier_names = tuple(VERIFIERS[d] for d in DOMAINS)
    verdict_struct = pa.StructArray.from_arrays(
        [
            _pick(verifier_names, domain),
            _pick(verdict_names, verdict),
            _text_where(verdict == 1, "answer mismatch"),
            _const(f"{1 + variant}", n),
        ],
        fields=list(VERDICT_TYPE),
    )
    verdicts = pa.ListArray.from_arrays(
        pa.array(np.arange(n + 1, dtype=np.int32)),
        verdict_struct,
        type=SAMPLE_SCHEMA.field("verdicts").type,
    )
    kept = pa.array(verdict == 0, mask=verdict == 2)
    finish_length = (total >= MAX_TEXT_BYTES) | (_uniform(idx, 13) < 0.02)

    columns: dict[str, pa.Array] = {
        "sample_id": pa.array(sample_ids(idx), pa.string()),
        "prompt_id": pa.array(sample_ids(prompt_no + np.uint64(1 << 40)), pa.string()),
        "prompt": prompt,
        "completion": completion,
        "reasoning": _const(None, n),  # not parsed out: the text lives once, in completion
        "answer": answer,
        "gold": answer,
        "domain": _pick(DOMAINS, domain),
        "track": _pick(("reasoning", "non_reasoning"), (~reasoning).astype(np.int32)),
        "source": _pick(source_names, source),
        "language": _pick(("en", "zh"), (_uniform(prompt_no, 14) < 0.05).astype(np.int32)),
        "backend": _const("vllm", n),
        "model_id": _const("deepseek-r1-distill-qwen-7b", n),
        "model_hash": _const("5f1c3a9e0b7d2e4f8a6c1b3d5e7f9a0b", n),
        "sampling": pa.StructArray.from_arrays(
            [
                _const(0.6, n, pa.float64()),
                _const(0.95, n, pa.float64()),
                _const(None, n, pa.int32()),
                _const(32768, n, pa.int32()),
            ],
            fields=list(SAMPLING_TYPE),
        ),
        "seed": pa.array(idx.astype(np.int64)),
        "sample_index": pa.array((idx % SAMPLES_PER_PROMPT).astype(np.int32)),
        "finish_reason": _pick(("stop", "length"), finish_length.astype(np.int32)),
        "prompt_tokens": pa.array(((p_end - p_begin) // 4).astype(np.int32)),
        "completion_tokens": pa.array((np.asarray(lengths) // 4).astype(np.int32)),
        "verdicts": verdicts,
        "kept": kept,
        "filter_reason": _text_where(verdict == 1, "incorrect"),
        "flow_run_id": _const("bench-flow-run", n),
        "config_hash": _const("0123456789abcdef0123456789abcdef", n),
        "content_hash": _const("", n),  # a placeholder: the store recomputes it on every write
    }
    return pa.RecordBatch.from_arrays(
        [columns[f] for f in SAMPLE_SCHEMA.names], schema=SAMPLE_SCHEMA
    )


def row_batches(
    pool: TextPool, rows: int, batch_rows: int = BATCH_ROWS
) -> Iterator[pa.RecordBatch]:
    for start in range(0, rows, batch_rows):
        yield make_batch(pool, np.arange(start, min(start + batch_rows, rows), dtype=np.uint64))


@dataclass(frozen=True)
class Plan:
    """The v1 change planted on top of v0; the diff must find exactly this."""

    changed: np.ndarray  # indices re-judged (same sample_id, new content)
    deleted: np.ndarray
    added: np.ndarray  # new indices past the end of v0

    @staticmethod
    def for_rows(rows: int) -> Plan:
        idx = np.arange(rows, dtype=np.uint64)
        # Spread over the whole table, as a re-verification pass would be.
        bucket = _hash(idx, 15) % np.uint64(round(1 / CHANGE_SHARE))
        added = np.arange(rows, rows + round(rows * CHANGE_SHARE), dtype=np.uint64)
        return Plan(changed=idx[bucket == 0], deleted=idx[bucket == 1], added=added)


# ---------------------------------------------------------------------------
# Steps (each runs in its own child process)
# ---------------------------------------------------------------------------


@dataclass
class Ctx:
    work: Path
    rows: int
    seed: int

    @cached_property
    def pool(self) -> TextPool:
        # Built once by the parent (same text in every step), loaded only by the
        # steps that generate rows, so that the others' peak RSS is their own work.
        return TextPool.load(self.work)

    @property
    def anchor_path(self) -> Path:
        return self.work / "anchor" / "anchor.parquet"

    @property
    def store_root(self) -> Path:
        return self.work / "store"


def _lineage(message: str) -> Any:
    from store.lineage import Lineage

    return Lineage(writer="bench/store.py", message=message)


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def step_generate(ctx: Ctx) -> dict[str, Any]:
    """Generation alone, so its share of the commit and anchor-write times is known."""
    lengths: list[np.ndarray] = []
    with Stopwatch() as sw:
        for batch in row_batches(ctx.pool, ctx.rows):
            offsets = np.frombuffer(batch.column("completion").buffers()[1], dtype=np.int32)
            lengths.append(np.diff(offsets[: batch.num_rows + 1]))
    text = np.concatenate(lengths)
    return {
        "seconds": sw.seconds,
        "cpu_s": sw.cpu_seconds,
        "rows": ctx.rows,
        "text_bytes": int(text.sum()),
        "text_mean_bytes": float(text.mean()),
        "text_p50_bytes": float(np.percentile(text, 50)),
        "text_p99_bytes": float(np.percentile(text, 99)),
        "text_max_bytes": int(text.max()),
        "rows_at_cap": int((text >= MAX_TEXT_BYTES - 64).sum()),
    }


def step_anchor_write(ctx: Ctx) -> dict[str, Any]:
    ctx.anchor_path.parent.mkdir(parents=True, exist_ok=True)
    writer = pq.ParquetWriter(
        ctx.anchor_path, SAMPLE_SCHEMA, compression="zstd", compression_level=3
    )
    with Stopwatch() as sw, writer:
        for batch in row_batches(ctx.pool, ctx.rows):
            writer.write_batch(batch, row_group_size=BATCH_ROWS)
    return {
        "seconds": sw.seconds,
        "cpu_s": sw.cpu_seconds,
        "rows": ctx.rows,
        "disk_bytes": ctx.anchor_path.stat().st_size,
    }


def _touch(batch: pa.RecordBatch) -> tuple[int, int]:
    """Read every text byte: total length, and how many completions close their <think>."""
    completion = batch.column("completion")
    closed = pc.sum(pc.match_substring(completion, "</think>")).as_py() or 0
    return int(pc.sum(pc.binary_length(completion)).as_py() or 0), int(closed)


def step_anchor_read(ctx: Ctx) -> dict[str, Any]:
    rows = text = closed = 0
    with Stopwatch() as sw:
        for batch in pq.ParquetFile(ctx.anchor_path).iter_batches(batch_size=BATCH_ROWS):
            t, c = _touch(batch)
            rows, text, closed = rows + batch.num_rows, text + t, closed + c
    return {
        "seconds": sw.seconds,
        "cpu_s": sw.cpu_seconds,
        "rows": rows,
        "text_bytes": text,
        "think_closed": closed,
    }


def step_anchor_read_column(ctx: Ctx) -> dict[str, Any]:
    rows = text = 0
    with Stopwatch() as sw:
        pf = pq.ParquetFile(ctx.anchor_path)
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=["completion"]):
            rows += batch.num_rows
            text += int(pc.sum(pc.binary_length(batch.column(0))).as_py() or 0)
    return {"seconds": sw.seconds, "cpu_s": sw.cpu_seconds, "rows": rows, "text_bytes": text}


def _store(ctx: Ctx) -> Any:
    from store.store import Store

    return Store(ctx.store_root)


def step_commit(ctx: Ctx) -> dict[str, Any]:
    store = _store(ctx)
    with Stopwatch() as sw:
        res = store.commit(
            TABLE, row_batches(ctx.pool, ctx.rows), lineage=_lineage("v0"), mode="append"
        )
    info = store.info(TABLE, res.version)
    assert res.rows_written == ctx.rows and res.rows_skipped == 0, res
    return {
        "seconds": sw.seconds,
        "cpu_s": sw.cpu_seconds,
        "rows": res.rows_written,
        "version": res.version,
        "files": info.files,
        "disk_bytes": info.bytes,
    }


def step_read(ctx: Ctx) -> dict[str, Any]:
    store = _store(ctx)
    rows = text = closed = 0
    with Stopwatch() as sw:
        for batch in store.iter_batches(TABLE, 0):
            t, c = _touch(batch)
            rows, text, closed = rows + batch.num_rows, text + t, closed + c
    assert rows == ctx.rows, (rows, ctx.rows)
    return {
        "seconds": sw.seconds,
        "cpu_s": sw.cpu_seconds,
        "rows": rows,
        "text_bytes": text,
        "think_closed": closed,
    }


def step_read_polars(ctx: Ctx) -> dict[str, Any]:
    import polars as pl

    store = _store(ctx)
    with Stopwatch() as sw:
        # len_bytes is UInt32 and so is its sum: 4.8 GB of text would wrap around.
        out = (
            store.scan(TABLE, 0)
            .select(
                pl.len().alias("rows"),
                pl.col("completion").str.len_bytes().cast(pl.UInt64).sum().alias("text"),
            )
            .collect(engine="streaming")
        )
    rows, text = out.row(0)
    assert rows == ctx.rows, (rows, ctx.rows)
    return {
        "seconds": sw.seconds,
        "cpu_s": sw.cpu_seconds,
        "rows": int(rows),
        "text_bytes": int(text),
    }


def step_upsert(ctx: Ctx) -> dict[str, Any]:
    plan = Plan.for_rows(ctx.rows)
    store = _store(ctx)
    # The input is built before the clock starts: what is measured is the store's merge.
    changed = [make_batch(ctx.pool, chunk, variant=1) for chunk in _chunks(plan.changed)]
    added = [make_batch(ctx.pool, chunk) for chunk in _chunks(plan.added)]
    with Stopwatch() as sw:
        res = store.upsert(TABLE, changed + added, lineage=_lineage("v1: re-judged and new rows"))
    expected = len(plan.changed) + len(plan.added)
    assert res.rows_written == expected, (res, expected)
    return {
        "seconds": sw.seconds,
        "cpu_s": sw.cpu_seconds,
        "rows": expected,
        "version": res.version,
        **_table_size(store, res.version),
    }


def step_delete(ctx: Ctx) -> dict[str, Any]:
    plan = Plan.for_rows(ctx.rows)
    store = _store(ctx)
    keys = sample_ids(plan.deleted)
    with Stopwatch() as sw:
        res = store.delete(TABLE, keys, lineage=_lineage("v2: dropped rows"))
    assert res.rows_written == len(keys), (res, len(keys))
    return {
        "seconds": sw.seconds,
        "cpu_s": sw.cpu_seconds,
        "rows": len(keys),
        "version": res.version,
        **_table_size(store, res.version),
    }


def _table_size(store: Any, version: int) -> dict[str, Any]:
    info = store.info(TABLE, version)
    return {"files": info.files, "disk_bytes": info.bytes, "table_rows": info.rows}


def _chunks(idx: np.ndarray) -> Iterator[np.ndarray]:
    for start in range(0, len(idx), BATCH_ROWS):
        yield idx[start : start + BATCH_ROWS]


def step_diff(ctx: Ctx) -> dict[str, Any]:
    from store.diff import diff_versions

    plan = Plan.for_rows(ctx.rows)
    store = _store(ctx)
    latest = store.latest_version(TABLE)
    with Stopwatch() as sw:
        d = diff_versions(store, TABLE, 0, latest)
    found = {"added": d.added, "removed": d.removed, "changed": d.changed, "unchanged": d.unchanged}
    planted = {
        "added": len(plan.added),
        "removed": len(plan.deleted),
        "changed": len(plan.changed),
        "unchanged": ctx.rows - len(plan.deleted) - len(plan.changed),
    }
    # A diff that miscounts fails the benchmark: the numbers are only worth it if it is right.
    if found != planted:
        raise AssertionError(f"diff v0..v{latest} found {found}, planted {planted}")
    return {
        "seconds": sw.seconds,
        "cpu_s": sw.cpu_seconds,
        "rows": d.old_rows + d.new_rows,
        "version": latest,
        **found,
    }


def step_content_hash(ctx: Ctx) -> dict[str, Any]:
    store = _store(ctx)
    latest = store.latest_version(TABLE)
    with Stopwatch() as sw:
        digest = store.content_hash(TABLE, latest)
    return {
        "seconds": sw.seconds,
        "cpu_s": sw.cpu_seconds,
        "rows": store.info(TABLE, latest).rows,
        "content_hash": digest,
    }


def step_release(ctx: Ctx) -> dict[str, Any]:
    from store.release import export_release, verify_release

    store = _store(ctx)
    latest = store.latest_version(TABLE)
    target = ctx.work / "release"
    shutil.rmtree(target, ignore_errors=True)
    with Stopwatch() as export:
        rel = export_release(store, TABLE, latest, target)
    with Stopwatch() as verify:
        problems = verify_release(target)
    if problems:
        raise AssertionError(f"the release does not verify: {problems[:5]}")
    return {
        "seconds": export.seconds + verify.seconds,
        "cpu_s": export.cpu_seconds + verify.cpu_seconds,
        "export_s": export.seconds,
        "verify_s": verify.seconds,
        "rows": rel.manifest["rows"],
        "shards": len(rel.manifest["shards"]),
        "disk_bytes": _dir_bytes(target),
    }


StepFn = Callable[[Ctx], dict[str, Any]]


@dataclass(frozen=True)
class Step:
    name: str
    label: str
    fn: StepFn
    targeted: bool  # the store's own steps carry the 2-minute / 6 GB target
    anchor: str | None = None  # the step it is compared with


# In run order: each store step follows its anchor, so the page cache treats both alike.
STEPS: tuple[Step, ...] = (
    Step("generate", "generate rows (no I/O)", step_generate, targeted=False),
    Step("anchor_write", "anchor: pyarrow write", step_anchor_write, targeted=False),
    Step("commit", "commit v0 (Store.commit)", step_commit, targeted=True, anchor="anchor_write"),
    Step("anchor_read", "anchor: pyarrow read", step_anchor_read, targeted=False),
    Step("read", "read v0 (iter_batches)", step_read, targeted=True, anchor="anchor_read"),
    Step(
        "anchor_read_column", "anchor: pyarrow read 1 col", step_anchor_read_column, targeted=False
    ),
    Step(
        "read_polars",
        "read v0 (polars streaming)",
        step_read_polars,
        targeted=True,
        anchor="anchor_read_column",
    ),
    Step("upsert", "upsert 1% changed + 1% new", step_upsert, targeted=True),
    Step("delete", "delete 1%", step_delete, targeted=True),
    Step("diff", "diff v0..latest", step_diff, targeted=True),
    Step("content_hash", "content_hash latest", step_content_hash, targeted=True),
    Step("release", "export + verify release", step_release, targeted=True),
)
_BY_NAME = {s.name: s for s in STEPS}


def run_step_in_child(args: argparse.Namespace) -> None:
    """Entry point of a child: run one step and write its figures for the parent."""
    ctx = Ctx(work=Path(args.work), rows=args.rows, seed=args.seed)
    result = _BY_NAME[args.step].fn(ctx)
    write_result(Path(args.out), result)


# ---------------------------------------------------------------------------
# The parent: run every step, print the table and the JSON line
# ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_ROWS:,} rows instead of {FULL_ROWS:,}"
    )
    parser.add_argument("--rows", type=int, help="number of rows in v0 (overrides --quick)")
    parser.add_argument("--seed", type=int, default=20250121)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--step", choices=sorted(_BY_NAME), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        run_step_in_child(args)
        return 0

    rows = args.rows or (QUICK_ROWS if args.quick else FULL_ROWS)
    repo = _BENCH_DIR.parent
    work = repo / "work" / "bench" / f"store-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    needed = rows * MEAN_TEXT_BYTES * 2  # several compressed copies of the table at once
    free = shutil.disk_usage(work).free
    if free < needed:
        print(
            f"bench/store.py: {free / GB:.1f} GB free under {work}, about {needed / GB:.1f} GB needed"
        )
        return 2
    print(f"bench/store.py: {rows:,} rows, work directory {work}", flush=True)
    TextPool.build(args.seed).save(work)

    outcomes: dict[str, StepOutcome] = {}
    try:
        for step in STEPS:
            print(f"-- {step.name}", flush=True)
            out = work / f"{step.name}.json"
            cmd = [
                sys.executable,
                str(Path(__file__).resolve()),
                f"--step={step.name}",
                f"--work={work}",
                f"--rows={rows}",
                f"--seed={args.seed}",
                f"--out={out}",
            ]
            outcome = run_child(
                step.name, cmd, out, timeout_s=STEP_TIMEOUT_S, rss_cap_gb=RSS_CAP_GB
            )
            outcomes[step.name] = outcome
            if not outcome.ok:
                print(f"   {step.name} FAILED: {outcome.error}", flush=True)
                if step.name in ("commit", "anchor_write", "generate"):
                    break  # everything after needs the table
            else:
                print(f"   {step.name}: {json.dumps(outcome.result)}", flush=True)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    check_reads(outcomes)
    figures = report(rows, outcomes)
    # A wrong answer (a step that failed or a diff that miscounts) fails the run;
    # a missed speed or memory target is reported in the table and the JSON only.
    return 1 if figures["failed"] else 0


def check_reads(outcomes: dict[str, StepOutcome]) -> None:
    """Every read must return exactly the text that was generated, byte for byte in length."""
    gen = outcomes.get("generate")
    if not gen or not gen.ok:
        return
    expected = gen.result["text_bytes"]
    for name in ("anchor_read", "read", "anchor_read_column", "read_polars"):
        o = outcomes.get(name)
        if o and o.ok and o.result["text_bytes"] != expected:
            o.ok = False
            o.error = f"read {o.result['text_bytes']:,} text bytes, generated {expected:,}"


def report(rows: int, outcomes: dict[str, StepOutcome]) -> dict[str, Any]:
    """Print the table and the JSON line; return the figures."""
    gen = outcomes.get("generate")
    gen_s = gen.result["seconds"] if gen and gen.ok else None
    table: list[list[Any]] = []
    figures: dict[str, Any] = {"bench": "store", "rows": rows}
    if gen and gen.ok:
        r = gen.result
        figures.update(
            text_bytes=r["text_bytes"],
            text_gb=rounded(r["text_bytes"] / GB),
            text_mean_kb=rounded(r["text_mean_bytes"] / 1024, 2),
            text_p50_kb=rounded(r["text_p50_bytes"] / 1024, 2),
            text_p99_kb=rounded(r["text_p99_bytes"] / 1024, 2),
            text_max_kb=rounded(r["text_max_bytes"] / 1024, 2),
            text_rows_at_cap=r["rows_at_cap"],
            generate_s=rounded(r["seconds"], 2),
        )
    met_all = True
    failed: list[str] = []
    for step in STEPS:
        o = outcomes.get(step.name)
        if o is None or not o.ok:
            met_all = False
            failed.append(f"{step.name}: {'not run' if o is None else o.error}")
            status = "FAILED" if o else "not run"
            table.append([step.label, None, None, None, None, None, status, None, None, None])
            continue
        r = o.result
        seconds, cpu, rss = r["seconds"], r["cpu_s"], r["peak_rss_gb"]
        met = seconds < TARGET_S and rss < TARGET_RSS_GB if step.targeted else None
        if met is False:
            met_all = False
        anchor = outcomes.get(step.anchor) if step.anchor else None
        anchor_s = anchor.result["seconds"] if anchor and anchor.ok else None
        anchor_cpu = anchor.result["cpu_s"] if anchor and anchor.ok else None
        ratio = seconds / anchor_s if anchor_s else None
        target = f"<{TARGET_S:.0f}s <{TARGET_RSS_GB:.0f}GB" if step.targeted else ""
        met_cell: Any = met if met is not None else ""
        others = f"{o.others_cpu_share:.0%}"
        row = [step.label, r["rows"], seconds, cpu, rss, target, met_cell, anchor_s, ratio, others]
        table.append(row)
        figures[f"{step.name}_s"] = rounded(seconds, 2)
        figures[f"{step.name}_cpu_s"] = rounded(cpu, 2)
        figures[f"{step.name}_peak_rss_gb"] = rounded(rss)
        figures[f"{step.name}_others_cpu_share"] = rounded(o.others_cpu_share, 2)
        if ratio is not None and anchor_cpu:
            figures[f"{step.name}_vs_anchor"] = rounded(ratio, 2)
            figures[f"{step.name}_cpu_vs_anchor"] = rounded(cpu / anchor_cpu, 2)
        if "disk_bytes" in r:
            figures[f"{step.name}_disk_gb"] = rounded(r["disk_bytes"] / GB)
        for extra in ("files", "shards", "table_rows"):
            if extra in r:
                figures[f"{step.name}_{extra}"] = r[extra]
        for extra in ("export_s", "verify_s"):
            if extra in r:
                figures[extra] = rounded(r[extra], 2)
        if "content_hash" in r:
            figures["content_hash"] = r["content_hash"]
        if step.name in ("commit", "anchor_write") and gen_s is not None:
            # Generation runs inside both; without it the ratio is the store's own cost.
            figures[f"{step.name}_net_s"] = rounded(seconds - gen_s, 2)
        if step.name == "diff":
            figures.update(
                {f"diff_{k}": r[k] for k in ("added", "removed", "changed", "unchanged")}
            )
    if "commit_net_s" in figures and "anchor_write_net_s" in figures:
        figures["commit_net_vs_anchor"] = rounded(
            figures["commit_net_s"] / figures["anchor_write_net_s"], 2
        )
    commit = outcomes.get("commit")
    if gen and gen.ok and commit and commit.ok:
        # Text bytes over the table's bytes on disk (every column, all compressed).
        figures["compression_ratio"] = rounded(
            gen.result["text_bytes"] / commit.result["disk_bytes"], 2
        )
    figures["targets"] = {"step_s": TARGET_S, "peak_rss_gb": TARGET_RSS_GB}
    figures["failed"] = failed
    figures["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, {_mem_gb():.0f} GiB RAM"
    figures["targets_met"] = met_all

    print()
    headers = [
        "step",
        "rows",
        "wall s",
        "cpu s",
        "peak RSS GB",
        "target",
        "met?",
        "anchor s",
        "ratio",
        "others",
    ]
    print_table(headers, table)
    if gen and gen.ok:
        print(
            f"\ntext: {figures['text_gb']:.2f} GB, mean {figures['text_mean_kb']:.2f} KB, "
            f"p99 {figures['text_p99_kb']:.1f} KB, max {figures['text_max_kb']:.1f} KB "
            f"({figures['text_rows_at_cap']} rows at the 64 KB cap); generation alone {gen_s:.1f} s"
        )
    print(
        "(GB = 2^30 bytes; rows: rows written or read by the step, both versions for the diff; "
        "ratio: wall s / anchor s; others: CPU share other processes took while the step ran)"
    )
    if "commit_net_vs_anchor" in figures:
        print(
            f"commit without generation: {figures['commit_net_s']:.1f} s vs anchor "
            f"{figures['anchor_write_net_s']:.1f} s (x{figures['commit_net_vs_anchor']:.2f})"
        )
    busy = [n for n, o in outcomes.items() if o.others_cpu_share > CONTENDED_SHARE]
    figures["contended_steps"] = busy
    if busy:
        print(
            f"note: other processes used over {CONTENDED_SHARE:.0%} of the CPUs during "
            f"{', '.join(busy)}: their wall times are inflated; cpu s is the steadier figure"
        )
    if failed:
        print("failed: " + "; ".join(failed))
    print(f"targets met: {'yes' if met_all else 'NO'}")
    emit_json(figures)
    return figures


def _mem_gb() -> float:
    import psutil

    return psutil.virtual_memory().total / GB


if __name__ == "__main__":
    sys.exit(main())
