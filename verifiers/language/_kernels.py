# ruff: noqa: SIM109 -- kernels compare plainly; numba compiles that to branches
"""Compiled loops for the two text rules that read every character: language consistency and n-gram repeats.

The rejection filters read every character of every candidate; at R1's
scale (a million samples of about 6 KB) the Python versions of these two
rules cost about 2-9 ms and 0.25 ms per sample. These numba kernels give the
same numbers in one pass:

- `consistency_kernel`: `consistency._word_by_word_consistency` over the
  code points of any text, with class and lower-case tables the caller
  fills as it meets new characters;
- `ngram_repeats_kernel`: `readability.ngram_repeats` over the code points
  of any text, with a token-class table the caller fills likewise.

Tests pin each kernel to its Python definition on fuzzed input. Words are
compared by a 64-bit FNV-1a hash of their lower-cased code points: a wrong
answer needs two different words of one text (or a word and a function
word) to share a hash, odds about 2**-64 per pair.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_MIX = np.uint64(0x9E3779B97F4A7C15)


# Code point classes for `ngram_repeats_kernel`, mirroring `readability._TOKEN`:
# a CJK character is a token of its own, other word characters run on.
TOKEN_UNKNOWN, TOKEN_SEPARATOR, TOKEN_WORD, TOKEN_SINGLE = 255, 0, 1, 2


@njit(cache=True, nogil=True)
def ngram_repeats_kernel(text: np.ndarray, classes: np.ndarray, n: int) -> tuple[int, int]:
    """`(n-grams, repeated n-grams)` of lower-cased text given as code points.

    `classes[cp]` is TOKEN_WORD, TOKEN_SINGLE or TOKEN_SEPARATOR; an
    unclassified code point returns (-1, -1) so the caller can classify it.
    """
    hashes = np.empty(len(text) + 1, np.uint64)
    count = 0
    h = _FNV_OFFSET
    inside = False
    for cp in text:
        c = classes[cp]
        if c == TOKEN_UNKNOWN:
            return -1, -1
        if c == TOKEN_WORD:
            h = (h ^ np.uint64(cp)) * _FNV_PRIME
            inside = True
            continue
        if inside:
            hashes[count] = h
            count += 1
            h = _FNV_OFFSET
            inside = False
        if c == TOKEN_SINGLE:
            hashes[count] = (_FNV_OFFSET ^ np.uint64(cp)) * _FNV_PRIME
            count += 1
    if inside:
        hashes[count] = h
        count += 1
    grams = count - n + 1
    if grams <= 0:
        return 0, 0
    keys = hashes[:grams].copy()
    for i in range(1, n):
        r = np.uint64(i % 63 + 1)
        for j in range(grams):
            part = hashes[i + j]
            rotated = (part << r) | (part >> (np.uint64(64) - r))
            keys[j] = (keys[j] * _MIX) ^ rotated
    return grams, grams - _distinct(keys)


@njit(cache=True, nogil=True)
def _home(h: np.uint64, mask: np.uint64) -> np.uint64:
    """The first slot an open-addressing table of size `mask + 1` tries for hash `h`."""
    return ((h * _MIX) >> np.uint64(32)) & mask


@njit(cache=True, nogil=True)
def _distinct(keys: np.ndarray) -> int:
    """How many distinct values `keys` holds: an open-addressing set, linear in its size.

    (numba's sort is a plain quicksort, quadratic on the many equal keys of a looping text.)
    """
    size = 1
    while size < 2 * len(keys):
        size *= 2
    mask = np.uint64(size - 1)
    slots = np.zeros(size, np.uint64)
    used = np.zeros(size, np.bool_)
    distinct = 0
    for key in keys:
        at = _home(key, mask)
        while used[at] and slots[at] != key:
            at = (at + np.uint64(1)) & mask
        if not used[at]:
            used[at] = True
            slots[at] = key
            distinct += 1
    return distinct


def lookup_table(meaning: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """An open-addressing table of lower-cased word -> small int for `consistency_kernel`.

    Slots hold the token's hash (0: empty) and its value; the table is at most a
    quarter full, so a lookup reads one or two slots.
    """
    size = 1
    while size < 4 * len(meaning):
        size *= 2
    keys = np.zeros(size, np.uint64)
    values = np.zeros(size, np.int8)
    mask = np.uint64(size - 1)
    for token, value in meaning.items():
        h = np.uint64(fnv1a(token))
        at = _home(h, mask)
        while keys[at] and keys[at] != h:
            at = (at + np.uint64(1)) & mask
        keys[at], values[at] = h, value
    return keys, values


# Code point classes for `consistency_kernel`; scripts from LATIN on are letters.
# SPACE is whitespace, PUNCT one of . ! ? ; : (a run of them followed by
# whitespace ends a sentence), BREAK a character that always ends one (a
# newline, or CJK full stop, ! ? ; :).
NOT_LETTER, NOTATION, MARK, SPACE, PUNCT, BREAK = 0, 1, 2, 3, 4, 5
LATIN, HAN, KANA, HANGUL, CYRILLIC, ARABIC, GREEK, OTHER = 6, 7, 8, 9, 10, 11, 12, 13
UNKNOWN = 255  # not classified yet: the caller classifies and calls again


def fnv1a(word: str) -> int:
    """The kernels' hash of an already lower-cased word (FNV-1a over its code points)."""
    h = int(_FNV_OFFSET)
    for ch in word:
        h = ((h ^ ord(ch)) * int(_FNV_PRIME)) & 0xFFFFFFFFFFFFFFFF
    return h


@njit(cache=True, nogil=True)
def _find(keys: np.ndarray, values: np.ndarray, h: np.uint64) -> int:
    """The value stored for hash `h` in a `lookup_table`, or -2 when absent."""
    mask = np.uint64(len(keys) - 1)
    at = _home(h, mask)
    while keys[at] != 0:
        if keys[at] == h:
            return int(values[at])
        at = (at + np.uint64(1)) & mask
    return -2


@njit(cache=True, nogil=True)
def _clear_winner(hits: np.ndarray) -> int:
    """`identify_latin_language` on hit counts: the index of a clear winner, else -1."""
    best = 0
    for j in range(1, len(hits)):
        if hits[j] > hits[best]:
            best = j
    second = 0
    for j in range(len(hits)):
        if j != best and hits[j] > second:
            second = hits[j]
    if hits[best] >= 2 and hits[best] > 2 * second:
        return best
    return -1


@njit(cache=True, nogil=True)
def consistency_kernel(
    text: np.ndarray,
    classes: np.ndarray,
    lower: np.ndarray,
    keys: np.ndarray,
    values: np.ndarray,
    target_scripts: np.ndarray,
    target_latin: int,
    languages: int,
) -> float:
    """`consistency._word_by_word_consistency` over code points; -1.0 on an unclassified one.

    `text` is the prose as code points. `classes` and `lower` map code points to their class and
    lower case; `keys`/`values` is a `lookup_table` of lower-cased words (a
    Latin language's index, or -1 for a math word); `target_scripts[c]` says
    whether class c is the target's; `target_latin` is the target's index
    among the Latin languages, or -1.
    """
    n = len(text)
    sentences = 1
    for cp in text:
        c = classes[cp]
        if c == PUNCT or c == BREAK:
            sentences += 1
    latin_words = np.zeros(sentences, np.int64)
    hits = np.zeros((sentences, languages), np.int64)
    total = 0
    on_target = 0
    sentence = 0
    script = 0  # the class of the word being read; 0: none
    start = 0
    length = 0
    h = _FNV_OFFSET
    i = 0
    while i <= n:
        cp = text[i] if i < n else np.uint32(32)
        c = classes[cp]
        if c == UNKNOWN:
            return -1.0
        if c == MARK and script != 0:  # a combining mark stays with its letter
            h = (h ^ np.uint64(lower[cp])) * _FNV_PRIME
            length += 1
            i += 1
            continue
        if script != 0 and (c != script or script == HAN or script == KANA):
            counted = True
            meaning = -2
            if script == LATIN or script == CYRILLIC or script == GREEK:
                before = classes[text[start - 1]] if start > 0 else NOT_LETTER
                if length < 2 or before == NOTATION or c == NOTATION:
                    counted = False
                else:
                    meaning = _find(keys, values, h)
                    if meaning == -1:  # a math word
                        counted = False
            if counted:
                total += 1
                if target_scripts[script]:
                    on_target += 1
                if script == LATIN:
                    latin_words[sentence] += 1
                    if meaning >= 0:
                        hits[sentence, meaning] += 1
            script = 0
        # Sentence ends, as `consistency._SENTENCE_END` cuts them. A cut that
        # the pattern would not make right next to one it makes (".\n") only
        # adds an empty sentence, which counts for nothing.
        if c == BREAK:
            sentence += 1
        elif c == PUNCT:
            after = classes[text[i + 1]] if i + 1 < n else SPACE
            if after == SPACE or after == BREAK:
                sentence += 1
        if c >= LATIN and script == 0:
            script = c
            start = i
            length = 0
            h = _FNV_OFFSET
        if script != 0:
            h = (h ^ np.uint64(lower[cp])) * _FNV_PRIME
            length += 1
        i += 1
    if total == 0:
        return 1.0
    if target_latin >= 0:
        whole = _clear_winner(hits.sum(axis=0))
        for s in range(sentences):
            language = _clear_winner(hits[s])
            if language < 0:
                language = whole
            if language >= 0 and language != target_latin:
                on_target -= latin_words[s]
    return on_target / total
