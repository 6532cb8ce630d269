# ruff: noqa: RUF001 -- the fuzz alphabet holds look-alike letters on purpose
"""The compiled text rules give exactly what their Python definitions give, on fuzzed text."""

from __future__ import annotations

import random

import pytest

from verifiers.language.consistency import (
    SUPPORTED_LANGUAGES,
    _compiled_consistency,
    _word_by_word_consistency,
    language_consistency,
)
from verifiers.language.latin import STOPWORDS
from verifiers.language.readability import _TOKEN, ngram_repeats
from verifiers.language.scripts import strip_non_prose

# Pieces that exercise every rule: stopwords of each Latin language (accented
# ones included), math words, single letters, words touching digits or "_",
# non-ASCII digits, combining marks, every script the rules know, sentence
# ends of both kinds, look-alike letters and characters no table has seen.
WORDS = [
    *sorted({w for words in STOPWORDS.values() for w in words}),
    "sin", "Log", "MAX", "x", "ab", "The", "AND", "Der", "value", "x2", "a_1", "3.5",
    "café", "Être", "FÜR", "naïve", "e\u0301te", "\u0301ab", "İl",
    "中文", "漢字", "かな", "カタカナ", "한국어", "русский", "Привет", "عربى", "ελληνικά", "α",
    "नमस्ते", "ℝ", "\u212aelvin", "ⁿ", "𝑥y", "²", "½", "Ⅻ", "٣",
]  # fmt: skip
SEPARATORS = [" ", " ", " ", ". ", ".\n", "\n\n", ", ", "。", "？", "!)", ";", ":x", "\t", "\xa0",
              "×", "\x00", "…", "", "$x$", "`c`", "\u2028"]  # fmt: skip


def fuzz_texts(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        words = rng.choices(WORDS, k=rng.randint(0, 60))
        texts.append("".join(w + rng.choice(SEPARATORS) for w in words))
    return texts


def test_compiled_consistency_equals_the_definition_in_every_script() -> None:
    for text in fuzz_texts(seed=1, count=1500):
        prose = strip_non_prose(text)
        for code in SUPPORTED_LANGUAGES:
            expected = _word_by_word_consistency(prose, code)
            assert _compiled_consistency(prose, code) == expected, (code, text)


def test_mostly_one_language_texts_agree_too() -> None:
    # Long texts of one language with a few words of another: the case the
    # per-sentence rule is for.
    rng = random.Random(2)
    for _ in range(300):
        main, other = rng.sample(list(STOPWORDS), 2)
        pool = [*sorted(STOPWORDS[main]), "value", "number", "check"]
        words = [
            rng.choice(sorted(STOPWORDS[other])) if rng.random() < 0.1 else rng.choice(pool)
            for _ in range(rng.randint(20, 200))
        ]
        text = "".join(w + rng.choice([" ", " ", ". ", "\n"]) for w in words)
        for code in (main, other, "zh"):
            assert language_consistency(text, code) == _word_by_word_consistency(
                strip_non_prose(text), code
            )


def test_characters_never_seen_before_are_learned() -> None:
    text = "ᚠᚢᚦ ᚨᚱᚲ and the word ꦗꦮ then Ꭰ Ꭱ"  # runic, javanese, cherokee
    assert _compiled_consistency(text, "en") == _word_by_word_consistency(text, "en")
    assert _compiled_consistency(text, "en") == _word_by_word_consistency(text, "en")


def reference_ngram_repeats(text: str, n: int) -> tuple[int, int]:
    tokens = _TOKEN.findall(text.lower())
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(grams), len(grams) - len(set(grams))


@pytest.mark.parametrize("n", [1, 2, 4, 7])
def test_compiled_ngram_repeats_equal_the_definition(n: int) -> None:
    rng = random.Random(n)
    pieces = ["a", "B", "ab", "Ab", "x_1", "42", " ", "\n", ".", "-", "__", "AB", "the cat", "é",
              "中", "文字", "İ", "ß", "Σσ", "²", "٣", "e\u0301", "ᚠ", "\ud800", "\u3000"]  # fmt: skip
    for _ in range(2000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 80)))
        assert ngram_repeats(text, n) == reference_ngram_repeats(text, n), text


def test_a_long_loop_counts_every_repeat() -> None:
    # Many equal n-grams: the case where a plain quicksort would go quadratic.
    text = "we check the sum again. " * 20_000
    grams, repeats = ngram_repeats(text, 4)
    assert grams == 5 * 20_000 - 3
    assert repeats == grams - 5  # five distinct 4-grams in a five-word cycle
