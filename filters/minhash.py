"""MinHash signatures and LSH banding, vectorised over batches of documents.

The pipeline, in the order it runs:

1. **Normalise and tokenise** (`tokenize`). The batch is joined into one
   string, lowercased (`str.lower`, so Unicode too) and encoded as UTF-8;
   ASCII bytes are classed by range comparisons, other characters by a
   table on their first two bytes. Tokens are runs of letters and digits (ASCII alphanumerics and the
   alphabetic scripts: Latin, Greek, Cyrillic, Arabic, Hebrew, Indic, Thai,
   Hangul, ...); every punctuation or symbol character (ASCII punctuation,
   U+2000-U+2FFF, CJK punctuation, fullwidth forms, emoji) is a token of its
   own when `symbols=True` and is dropped when `symbols=False`; every CJK
   ideograph and kana is a token of its own (those scripts do not separate
   words with spaces). Whitespace and control characters only separate.
   So "X = -2" and "x=-2" tokenise alike, "x = 2" does not (the minus sign
   is a token), and 'don't' is `don ' t`.
2. **Token hashes**: each token's first eight bytes are read as one
   little-endian word (two aligned loads per token for the whole batch at
   once, masked to the token's length); a longer token folds in each further
   eight bytes after a mix. The result goes through the splitmix64
   finaliser. No seed and fixed constants: a token hashes the same in every
   process and run.
3. **Shingle hashes**: `k` consecutive token hashes of one document folded
   into one value (a document with fewer than `k` tokens has one shingle of
   all its tokens; an empty document has none), mixed; the top 32 bits are
   the shingle's key.
4. **Permutations**: for each of `num_perm` seeded pairs (a odd, b), key x
   becomes `(a*x + b) mod 2^32`, in uint32 numpy arithmetic: one multiply
   and one add per value, where datasketch's `(a*x + b) mod (2^61 - 1)`
   needs 64-bit values and a modulo. The keys come out of a strong mixer,
   so the keys of distinct shingles behave as independent uniform draws and
   any fixed bijection keeps them so: each permutation's minima agree with
   probability J (up to 32-bit key collisions). What the family must also give is independence
   between permutations; measured on random sets, the estimate's variance
   is 0.96-1.06 times the independent-permutation value J(1-J)/num_perm,
   as for a 64-bit multiply-add-shift family (0.95-1.02), and
   tests/filters/test_minhash.py checks it on texts.
5. **Minimum per document**: `np.minimum.reduceat` over each document's
   shingles, for a block of permutations at a time over a batch of whole
   documents (the block stays in L2 cache). Batching documents is what
   makes numpy fast here: the per-call cost is paid once per batch, not
   once per document.

LSH: the signature is cut into `bands` bands of `rows` values; documents
whose band values agree in at least one band become candidates. The chance
for a pair of Jaccard similarity s is the S-curve `1 - (1 - s^rows)^bands`;
`LSHParams.describe` prints where it crosses one half. Buckets are found by
sorting each band's hashes (no per-document Python objects), and
`connected_components` turns candidate pairs into clusters.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

U64 = np.uint64
MAX_SIG = np.uint32(0xFFFFFFFF)  # the signature value of a document with no shingles

# Fixed hashing constants (any odd 64-bit values do): token and shingle hashes
# must not depend on the seed, so the same text hashes alike everywhere.
_TOKEN_BASE = 0xC2B2AE3D27D4EB4F  # polynomial base for a run of token hashes
_BAND_BASE = 0x165667B19E3779F9  # polynomial base for a band's signature values
_MASK64 = (1 << 64) - 1
# _TAIL_MASKS[k] keeps the low k bytes of a word.
_TAIL_MASKS = np.array([(1 << (8 * k)) - 1 for k in range(9)], dtype=U64)

# Character classes, looked up on a character's first two bytes.
SEP, WORD, SYMBOL, SINGLE = 0, 1, 2, 3

# Shingles per run of the permutation loop, and permuted values per block of
# permutations: a block of 256K uint32 (1 MB) stays in L2 cache (measured on
# 26K shingles: 0.45 ns per shingle and permutation, 0.65 with 40-shingle
# documents, where one permutation per numpy call took 0.93).
_RUN_SHINGLES = 131_072
_BLOCK_VALUES = 1 << 18
# Characters per tokenised batch: the batch's per-byte and per-token arrays
# stay in L2 cache, and numpy's per-call cost still spreads over ~30 typical
# documents (measured, 4 KB documents: 47 MB/s at 128K, 36 MB/s at 1M).
DEFAULT_BATCH_CHARS = 131_072


def _class_table() -> np.ndarray:
    """Class of a multi-byte character, indexed by `first_byte * 256 + second_byte`.

    ASCII needs no table: its classes are a few range comparisons.
    """
    table = np.full((256, 256), WORD, dtype=np.uint8)
    table[0xC2, 0x80:0xC0] = SYMBOL  # U+0080-U+00BF: Latin-1 punctuation and signs
    table[0xC2, 0xA0] = SEP  # U+00A0 no-break space
    table[0xC3, 0x97] = SYMBOL  # U+00D7 multiplication sign
    table[0xC3, 0xB7] = SYMBOL  # U+00F7 division sign
    table[0xE2, :] = SYMBOL  # U+2000-U+2FFF: punctuation, arrows, math operators
    table[0xE3:0xEA, :] = SINGLE  # U+3000-U+9FFF: kana and CJK ideographs
    table[0xE3, 0x80] = SYMBOL  # U+3000-U+303F: CJK punctuation
    table[0xEF, :] = SYMBOL  # U+F000-U+FFFF: mostly fullwidth forms
    table[0xF0:0xF5, :] = SINGLE  # 4-byte characters: rare ideographs
    table[0xF0, 0x9F] = SYMBOL  # U+1F000-U+1FFFF: emoji and pictographs
    return table.reshape(-1)


@lru_cache(maxsize=1)
def _classes() -> np.ndarray:
    table = _class_table()
    table.flags.writeable = False
    return table


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every output bit depends on every input bit."""
    x = x ^ (x >> U64(30))
    x *= U64(0xBF58476D1CE4E5B9)
    x ^= x >> U64(27)
    x *= U64(0x94D049BB133111EB)
    x ^= x >> U64(31)
    return x


@dataclass(frozen=True)
class Tokens:
    """The tokens of a batch of documents.

    `data` holds the batch's normalised (lowercased) UTF-8 bytes, documents
    separated by one NUL byte; token t spans `data[starts[t]:ends[t]]` and
    hashes to `hashes[t]`; document d owns tokens `offsets[d]:offsets[d+1]`.
    """

    data: np.ndarray  # (B,) uint8
    starts: np.ndarray  # (T,) int64
    ends: np.ndarray  # (T,) int64
    hashes: np.ndarray  # (T,) uint64
    offsets: np.ndarray  # (n + 1,) int64

    @property
    def counts(self) -> np.ndarray:
        """Tokens per document, (n,) int64."""
        return np.diff(self.offsets)

    def text(self, first: int, stop: int) -> str:
        """Tokens `first:stop` (batch-wide indices) joined by single spaces."""
        return " ".join(
            self.data[s:e].tobytes().decode("utf-8", "replace")
            for s, e in zip(self.starts[first:stop], self.ends[first:stop], strict=True)
        )


def _encode(texts: Sequence[str]) -> tuple[np.ndarray, int, np.ndarray]:
    """Lowercased UTF-8 of the batch, NUL-separated, its length, and each document's first byte.

    The bytes are followed by 16 to 23 NUL bytes, to a multiple of 8, so that
    8-byte loads past a token's end stay inside the array.
    """
    raw = "\x00".join(texts).lower().encode("utf-8", "surrogatepass")
    padded = np.frombuffer(raw + bytes(16 + (-len(raw)) % 8), dtype=np.uint8)
    separators = np.flatnonzero(padded[: len(raw)] == 0)
    if len(separators) != max(len(texts) - 1, 0):
        # A text holds NUL itself: encode one by one, NULs as spaces.
        raw = b"\x00".join(
            t.lower().encode("utf-8", "surrogatepass").replace(b"\x00", b" ") for t in texts
        )
        padded = np.frombuffer(raw + bytes(16 + (-len(raw)) % 8), dtype=np.uint8)
        separators = np.flatnonzero(padded[: len(raw)] == 0)
    starts = np.zeros(len(texts), dtype=np.int64)
    starts[1:] = separators + 1
    return padded, len(raw), starts


def tokenize(texts: Sequence[str], *, symbols: bool = True) -> Tokens:
    """Normalise and tokenise a batch of documents (see the module docstring)."""
    padded, size, doc_starts = _encode(texts)
    # One byte past the end: a NUL, so the last token always has a boundary after it.
    data = padded[: size + 1]
    word = ((data >= ord("0")) & (data <= ord("9"))) | (data >= ord("a")) & (data <= ord("z"))
    # ASCII punctuation and symbols: a token each, or separators.
    ascii_symbol = (data > ord(" ")) & (data < 0x7F) & ~word
    single = ascii_symbol if symbols else np.zeros(size + 1, dtype=bool)
    continuation = None
    if size and data.max() >= 0x80:
        word |= data >= 0x80
        continuation = (data & 0xC0) == 0x80
        word, single = _classify_multibyte(data, word, single, symbols)
    begins = word.copy()
    begins[1:] &= ~word[:-1]  # first byte of a run of word characters
    boundary = begins | ~word  # a token ends at the next boundary after its start
    begins |= single
    if continuation is not None:
        boundary &= ~continuation
    marks = np.flatnonzero(boundary)
    at = np.flatnonzero(begins[marks])
    starts = marks[at]
    ends = marks[at + 1]
    hashes = _token_hashes(padded, starts, ends)
    offsets = np.empty(len(texts) + 1, dtype=np.int64)
    offsets[:-1] = np.searchsorted(starts, doc_starts)
    offsets[-1] = len(starts)
    return Tokens(padded[:size], starts, ends, hashes, offsets)


def _classify_multibyte(
    data: np.ndarray, word: np.ndarray, single: np.ndarray, symbols: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Apply the class table to the multi-byte characters of the batch."""
    leads = np.flatnonzero(data >= 0xC0)
    classes = _classes()[(data[leads].astype(np.int64) << 8) | data[leads + 1]]
    length = 2 + (data[leads] >= 0xE0) + (data[leads] >= 0xF0)
    not_word = leads[classes != WORD]
    not_word_length = length[classes != WORD]
    for extra in range(4):
        inside = not_word[not_word_length > extra] + extra
        word[inside] = False
    if symbols:
        single[leads[(classes == SYMBOL) | (classes == SINGLE)]] = True
    else:
        single[leads[classes == SINGLE]] = True
    return word, single


def _token_hashes(padded: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Hash each token's bytes, eight at a time (tokens are mostly shorter than that).

    The first round reads every token's first eight bytes; tokens longer than
    that take one more round per eight bytes, over the tokens still going.
    """
    aligned = padded.view("<u8")
    lengths = ends - starts
    acc = _load8(aligned, starts, lengths)
    longer = np.flatnonzero(lengths > 8)
    offset = 8
    while len(longer):
        chunk = _load8(aligned, starts[longer] + offset, lengths[longer] - offset)
        acc[longer] = mix64(acc[longer]) ^ chunk
        offset += 8
        longer = longer[lengths[longer] > offset]
    return mix64(acc)


def _load8(aligned: np.ndarray, pos: np.ndarray, left: np.ndarray) -> np.ndarray:
    """Bytes pos..pos+7 as little-endian uint64, cut to the `left` bytes that remain.

    Read from the two aligned words around `pos`: two gathers for the whole
    batch instead of one small copy per token. Every shift stays below 64:
    shifting by the full width is undefined in C.
    """
    quot = pos >> 3
    shift = ((pos & 7) << 3).view(U64)
    low = aligned[quot] >> shift
    high = aligned[1:][quot]
    high <<= U64(1)
    high <<= U64(63) - shift
    low |= high
    low &= _TAIL_MASKS[np.minimum(left, 8)]
    return low


def gram_counts(tokens: Tokens, n: int, *, short: bool) -> np.ndarray:
    """Grams of `n` tokens per document, (docs,) int64 (see `gram_hashes`)."""
    counts = tokens.counts
    grams = np.maximum(counts - n + 1, 0)
    if short:
        grams[(counts > 0) & (counts < n)] = 1
    return grams


def gram_hashes(tokens: Tokens, n: int, *, short: bool) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every run of `n` consecutive tokens inside one document.

    Returns (hashes (G,) uint64, first token (G,) int64), grouped by
    document in order; `gram_counts` says how many each document has. With
    `short=True` a document of 1 to n-1 tokens has one gram of all its
    tokens; otherwise it has none.
    """
    counts = tokens.counts
    total_tokens = len(tokens.hashes)
    base = U64(_TOKEN_BASE)
    # Fold n consecutive token hashes at every position of the batch at once
    # (contiguous slices, no gathers), then keep the windows inside a document.
    width = total_tokens - n + 1
    if width > 0:
        folded = tokens.hashes[:width].copy()
        for j in range(1, n):
            folded *= base
            folded += tokens.hashes[j : j + width]
    else:
        folded = np.zeros(0, dtype=U64)
    full = np.flatnonzero(counts >= n)
    # Each document of >= n tokens starts a window at its first count - n + 1 tokens.
    starts_at = tokens.offsets[full]
    stops_at = tokens.offsets[full + 1] - n + 1
    marks = np.zeros(max(width, 0) + 1, dtype=np.int64)
    np.add.at(marks, starts_at, 1)
    np.add.at(marks, stops_at, -1)
    keep = np.cumsum(marks[:-1]) > 0
    first = np.flatnonzero(keep)
    hashes = folded[first]
    if short:
        few = np.flatnonzero((counts > 0) & (counts < n))
        if len(few):
            first, hashes = _with_short(tokens, few, first, hashes)
    return mix64(hashes), first


def _with_short(
    tokens: Tokens, few: np.ndarray, first: np.ndarray, hashes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Add one gram of all tokens for each document in `few`, keeping document order."""
    base = U64(_TOKEN_BASE)
    lo, hi = tokens.offsets[few], tokens.offsets[few + 1]
    acc = np.zeros(len(few), dtype=U64)
    for j in range(int((hi - lo).max())):
        inside = lo + j < hi
        step = tokens.hashes[np.minimum(lo + j, hi - 1)]
        acc = np.where(inside, acc * base + step, acc)
    merged_first = np.concatenate([first, lo])
    order = np.argsort(merged_first, kind="stable")
    return merged_first[order], np.concatenate([hashes, acc])[order]


@dataclass(frozen=True)
class MinHasher:
    """MinHash signatures of word shingles: `signatures(texts)` -> (n, num_perm) uint32.

    `seed` draws the permutations; two hashers with the same `num_perm` and
    `seed` give the same signatures in any process. The fraction of equal
    positions in two signatures estimates the Jaccard similarity of the two
    documents' shingle sets (standard error sqrt(J (1 - J) / num_perm)).
    """

    num_perm: int = 128
    shingle: int = 5
    seed: int = 1
    batch_chars: int = DEFAULT_BATCH_CHARS

    def __post_init__(self) -> None:
        if self.num_perm < 1:
            raise ValueError(f"num_perm must be >= 1, got {self.num_perm}")
        if self.shingle < 1:
            raise ValueError(f"shingle must be >= 1, got {self.shingle}")

    def permutations(self) -> tuple[np.ndarray, np.ndarray]:
        """The (a, b) pairs of the permutations, each (num_perm,) uint32; a is odd."""
        rng = np.random.default_rng(self.seed)
        a = rng.integers(0, 1 << 31, self.num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
        b = rng.integers(0, 1 << 32, self.num_perm, dtype=np.uint64).astype(np.uint32)
        return a, b

    def signatures(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), num_perm) uint32; a document with no tokens gets all 0xFFFFFFFF."""
        out = np.empty((len(texts), self.num_perm), dtype=np.uint32)
        a, b = self.permutations()
        for lo, hi in batch_ranges(texts, self.batch_chars):
            out[lo:hi] = self._batch(texts[lo:hi], a, b)
        return out

    def _batch(self, texts: Sequence[str], a: np.ndarray, b: np.ndarray) -> np.ndarray:
        tokens = tokenize(texts, symbols=True)
        shingles, _ = gram_hashes(tokens, self.shingle, short=True)
        x = (shingles >> U64(32)).astype(np.uint32)
        counts = gram_counts(tokens, self.shingle, short=True)
        offsets = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        sig_t = np.full((self.num_perm, len(texts)), MAX_SIG, dtype=np.uint32)  # (P, n)
        for d0, d1 in _runs(offsets, _RUN_SHINGLES):
            s0, s1 = offsets[d0], offsets[d1]
            if s0 == s1:
                continue
            run = x[s0:s1]
            nonempty = counts[d0:d1] > 0
            docs = d0 + np.flatnonzero(nonempty)
            at = offsets[docs] - s0
            # A few permutations at a time as one (k, shingles) block: fewer numpy
            # calls than one permutation at a time, and the block stays in cache.
            step = int(np.clip(_BLOCK_VALUES // len(run), 1, self.num_perm))
            block = np.empty((step, len(run)), dtype=np.uint32)  # (k, S)
            for p0 in range(0, self.num_perm, step):
                p1 = min(p0 + step, self.num_perm)
                values = block[: p1 - p0]
                np.multiply(a[p0:p1, None], run[None, :], out=values)
                values += b[p0:p1, None]
                if nonempty.all():
                    np.minimum.reduceat(values, at, axis=1, out=sig_t[p0:p1, d0:d1])
                else:
                    sig_t[p0:p1, docs] = np.minimum.reduceat(values, at, axis=1)
        return sig_t.T


def batch_ranges(texts: Sequence[str], batch_chars: int) -> Iterator[tuple[int, int]]:
    """Consecutive [lo, hi) ranges of about `batch_chars` characters each."""
    lo = size = 0
    for i, text in enumerate(texts):
        size += len(text) + 1
        if size >= batch_chars:
            yield lo, i + 1
            lo, size = i + 1, 0
    if lo < len(texts):
        yield lo, len(texts)


def _runs(offsets: np.ndarray, limit: int) -> Iterator[tuple[int, int]]:
    """Split documents into [d0, d1) runs of at most `limit` shingles (or one bigger document)."""
    n = len(offsets) - 1
    d0 = 0
    while d0 < n:
        d1 = int(np.searchsorted(offsets, offsets[d0] + limit, side="right")) - 1
        d1 = min(max(d1, d0 + 1), n)
        yield d0, d1
        d0 = d1


def estimate_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
    """Fraction of equal signature positions: (P,) pairs give a float, (m, P) pairs give (m,)."""
    equal = np.asarray(a) == np.asarray(b)
    if equal.ndim == 1:
        return float(equal.mean())
    return np.asarray(equal.mean(axis=1))


# --- LSH ---------------------------------------------------------------------------


def s_curve(s: float | np.ndarray, bands: int, rows: int) -> float | np.ndarray:
    """Chance that a pair of Jaccard similarity s shares at least one band."""
    return 1.0 - (1.0 - np.power(s, rows)) ** bands


def s_curve_threshold(bands: int, rows: int) -> float:
    """The similarity at which the S-curve crosses 1/2: (1 - 2^(-1/bands))^(1/rows)."""
    return float((1.0 - 0.5 ** (1.0 / bands)) ** (1.0 / rows))


def approx_threshold(bands: int, rows: int) -> float:
    """The textbook approximation of the S-curve's steepest point, (1/bands)^(1/rows)."""
    return float((1.0 / bands) ** (1.0 / rows))


def choose_bands(
    threshold: float,
    num_perm: int,
    *,
    fp_weight: float = 0.5,
    fn_weight: float = 0.5,
) -> tuple[int, int]:
    """(bands, rows), bands * rows <= num_perm, minimising the weighted error area.

    The false-positive area is the S-curve's integral below `threshold`, the
    false-negative area the integral of its complement above it; the pair
    with the smallest `fp_weight * FP + fn_weight * FN` wins (ties: fewer
    bands). When candidates are verified afterwards, false positives only cost
    a comparison, so a small `fp_weight` buys recall.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if num_perm < 1:
        raise ValueError(f"num_perm must be >= 1, got {num_perm}")
    below = np.linspace(0.0, threshold, 512)
    above = np.linspace(threshold, 1.0, 512)
    best = (math.inf, 1, 1)
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp = float(np.trapezoid(s_curve(below, bands, rows), below))
            fn = float(np.trapezoid(1.0 - s_curve(above, bands, rows), above))
            error = fp_weight * fp + fn_weight * fn
            if error < best[0] - 1e-12:
                best = (error, bands, rows)
    return best[1], best[2]


@dataclass(frozen=True)
class LSHParams:
    """How a signature is cut into bands."""

    bands: int
    rows: int

    def __post_init__(self) -> None:
        if self.bands < 1 or self.rows < 1:
            raise ValueError(f"bands and rows must be >= 1, got {self.bands} x {self.rows}")

    @property
    def threshold(self) -> float:
        """Where the S-curve crosses 1/2."""
        return s_curve_threshold(self.bands, self.rows)

    def describe(self) -> str:
        return (
            f"LSH {self.bands} bands x {self.rows} rows: candidate chance 50% at "
            f"J={self.threshold:.3f} (S-curve), (1/b)^(1/r)={approx_threshold(self.bands, self.rows):.3f}; "
            f"J=0.5 -> {float(s_curve(0.5, self.bands, self.rows)):.3f}, "
            f"J=0.9 -> {float(s_curve(0.9, self.bands, self.rows)):.3f}"
        )


def band_hashes(signatures: np.ndarray, params: LSHParams) -> np.ndarray:
    """One 64-bit hash per band: (n, num_perm) -> (n, bands) uint64."""
    n, num_perm = signatures.shape
    width = params.bands * params.rows
    if width > num_perm:
        raise ValueError(
            f"{params.bands} bands x {params.rows} rows = {width} exceeds num_perm={num_perm}"
        )
    cube = signatures[:, :width].reshape(n, params.bands, params.rows)  # (n, b, r)
    acc = np.zeros((n, params.bands), dtype=U64)
    base = U64(_BAND_BASE)
    for row in range(params.rows):
        acc = acc * base + cube[:, :, row]
    return mix64(acc)


def bucket_pairs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (member, first member) of every bucket of equal keys, for each column.

    `keys` is (n,) or (n, bands); within a bucket the first member is the
    one with the smallest row index, so each bucket of size g yields g - 1
    pairs (a star), not g (g - 1) / 2. Returns (u, v) int64 with u > v.
    """
    if keys.ndim == 1:
        keys = keys[:, None]
    us, vs = [], []
    for column in range(keys.shape[1]):
        order = np.argsort(keys[:, column], kind="stable")
        ordered = keys[order, column]
        same = np.empty(len(order), dtype=bool)
        same[:1] = False
        same[1:] = ordered[1:] == ordered[:-1]
        if not same.any():
            continue
        group_first = np.maximum.accumulate(np.where(same, 0, np.arange(len(order))))
        members = np.flatnonzero(same)
        us.append(order[members])
        vs.append(order[group_first[members]])
    if not us:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    u, v = np.concatenate(us), np.concatenate(vs)
    packed = np.unique(u * (len(keys) + 1) + v)
    return packed // (len(keys) + 1), packed % (len(keys) + 1)


def connected_components(n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Label each of n nodes with the smallest node of its component, given edges (u, v).

    Vectorised hook-and-compress: each round hooks every edge's larger root
    under its smaller one, then halves paths until every node points at a
    root; rounds repeat until no edge joins two roots.
    """
    label = np.arange(n, dtype=np.int64)
    u, v = np.asarray(u, dtype=np.int64), np.asarray(v, dtype=np.int64)
    while len(u):
        lu, lv = label[u], label[v]
        open_ = lu != lv
        if not open_.any():
            break
        u, v, lu, lv = u[open_], v[open_], lu[open_], lv[open_]
        np.minimum.at(label, np.maximum(lu, lv), np.minimum(lu, lv))
        while True:
            jumped = label[label]
            if np.array_equal(jumped, label):
                break
            label = jumped
    return label
