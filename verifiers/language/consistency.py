"""Language consistency: the share of a chain of thought in the target language.

This is R1's language-consistency reward, "the proportion of target-language
words in the CoT", and the mixed-language rule of its rejection sampling.
Words are counted as `scripts.iter_words` defines them (a Han or kana
character counts as one word), after code and math are stripped, so formulas,
code and numbers neither help nor hurt. A word is in the target language when
its script is one the language is written in:

    en, fr, de, es: latin    zh: han    ja: han, kana    ko: hangul, han
    ru: cyrillic             ar: arabic el: greek

`zh` counts Han only, not all of CJK: kana in a Chinese chain of thought is
Japanese mixed in. Language tags such as `zh-CN` or `en_US` are reduced to
their first part.

For the Latin-script targets script alone cannot tell English from French, so
each sentence is also run through `latin.identify_latin_language`; a sentence
clearly in another of en/fr/de/es (or, failing a clear call for the sentence,
inside a text clearly in another of them) counts as off-target.

What is covered
- Chinese, Japanese, Korean, Russian, Arabic and Greek against any other
  script; English, French, German and Spanish against each other when a
  sentence carries enough function words to be sure (see `latin`).
- Unicode edge cases: full-width letters and punctuation, emoji, math
  alphanumerics, combining accents.

What is not covered
- Latin-script languages other than en/fr/de/es pass as the Latin target
  (Italian reasoning scores 1.0 for "en"); short sentences with under two
  function words are not identified and count as on-target.
- Languages sharing a script outside Latin (Russian vs Ukrainian, Chinese vs
  Japanese kanji-only text, Simplified vs Traditional Chinese).
- Transliteration (pinyin, romaji) and code identifiers written outside
  backticks count as Latin words; text between two dollar signs on one line
  ("$5 and $10") is taken for inline math and not counted.
- A Han character is not a word: a Chinese word averages about 1.5
  characters, so a Chinese text with English words in it scores slightly
  higher than a true word count would give, and the reverse for `en`.
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np

from verifiers.language import _kernels as _k
from verifiers.language.latin import LATIN_LANGUAGES, STOPWORDS, identify_latin_language
from verifiers.language.scripts import MATH_WORDS, char_script, iter_words, strip_non_prose

TARGET_SCRIPTS: dict[str, frozenset[str]] = {
    "en": frozenset({"latin"}),
    "fr": frozenset({"latin"}),
    "de": frozenset({"latin"}),
    "es": frozenset({"latin"}),
    "zh": frozenset({"han"}),
    "ja": frozenset({"han", "kana"}),
    "ko": frozenset({"hangul", "han"}),
    "ru": frozenset({"cyrillic"}),
    "ar": frozenset({"arabic"}),
    "el": frozenset({"greek"}),
}
SUPPORTED_LANGUAGES = tuple(TARGET_SCRIPTS)

MIXED_LANGUAGE = "mixed_language"

# Sentence ends: Western punctuation followed by a space or the end, CJK
# punctuation (ideographic full stop and the full-width ! ? ; :) anywhere, and
# line breaks. "3.5" and "e.g.x" are not cut.
_SENTENCE_END = re.compile(r"[.!?;:]+(?=\s|$)|[\u3002\uff01\uff1f\uff1b\uff1a\n]+")


def normalize_language(target: str) -> str:
    """`target`'s primary language subtag, checked against `SUPPORTED_LANGUAGES`."""
    code = re.split(r"[-_]", target.strip().lower(), maxsplit=1)[0]
    if code not in TARGET_SCRIPTS:
        raise ValueError(
            f"unsupported target language {target!r}: "
            f"use one of {', '.join(SUPPORTED_LANGUAGES)} (a tag like 'zh-CN' is fine)"
        )
    return code


def _latin_off_target_words(sentences: list[list[tuple[str, str]]], target: str) -> int:
    """Latin words in sentences identified as a Latin language other than `target`."""
    latin = [[w for script, w in words if script == "latin"] for words in sentences]
    whole = identify_latin_language(w for words in latin for w in words)
    off = 0
    for words in latin:
        language = identify_latin_language(words) or whole
        if language is not None and language != target:
            off += len(words)
    return off


def language_consistency(text: str, target: str) -> float:
    """Share in [0, 1] of `text`'s words that are in `target`; 1.0 when it has none.

    A text with no counted words (empty, or only math, code, digits or emoji)
    has nothing in another language, hence 1.0; this is also what an empty
    chain of thought (the non-reasoning track) scores.
    """
    code = normalize_language(target)
    prose = strip_non_prose(text)
    return _compiled_consistency(prose, code)


def _word_by_word_consistency(prose: str, code: str) -> float:
    """The definition, word by word: every script, any text (2-9 ms per 6 KB)."""
    scripts = TARGET_SCRIPTS[code]
    sentences = [list(iter_words(part)) for part in _SENTENCE_END.split(prose)]
    total = sum(len(words) for words in sentences)
    if total == 0:
        return 1.0
    on_target = sum(script in scripts for words in sentences for script, _ in words)
    if code in LATIN_LANGUAGES:
        on_target -= _latin_off_target_words(sentences, code)
    return on_target / total


# The compiled path gives exactly `_word_by_word_consistency` (tests pin it
# on fuzzed text in every script) in one pass over the code points, about
# 0.03-0.07 ms per 6 KB instead of 2-9 ms. Tables say each code point's class
# (script, mark, notation, whitespace, sentence punctuation or none of
# these) and lower case. The tables start empty and learn the characters they
# meet, so a process pays `char_script` once per distinct character.
_LANGUAGE_INDEX = {lang: i for i, lang in enumerate(LATIN_LANGUAGES)}
_CLASS_OF_SCRIPT = {
    "latin": _k.LATIN,
    "han": _k.HAN,
    "kana": _k.KANA,
    "hangul": _k.HANGUL,
    "cyrillic": _k.CYRILLIC,
    "arabic": _k.ARABIC,
    "greek": _k.GREEK,
    "other": _k.OTHER,
}
_CLASSES = np.full(0x110000, _k.UNKNOWN, np.uint8)
_LOWER = np.arange(0x110000, dtype=np.uint32)


def _words_table() -> tuple[np.ndarray, np.ndarray]:
    """What lower-cased words mean to the kernel: a Latin language's index, or -1 for math."""
    meaning = dict.fromkeys(MATH_WORDS, -1)
    for lang, words in STOPWORDS.items():
        meaning.update(dict.fromkeys(words, _LANGUAGE_INDEX[lang]))
    return _k.lookup_table(meaning)


_WORD_KEYS, _WORD_VALUES = _words_table()
_TARGETS = {
    code: np.array(
        [c in {_CLASS_OF_SCRIPT[s] for s in scripts} for c in range(_k.OTHER + 1)], np.bool_
    )
    for code, scripts in TARGET_SCRIPTS.items()
}


def _learn(chars: set[str]) -> None:
    """Classify characters the tables have not seen yet."""
    for ch in chars:
        cp = ord(ch)
        if _CLASSES[cp] != _k.UNKNOWN:
            continue
        script = char_script(ch)
        if ch in "\n\u3002\uff01\uff1f\uff1b\uff1a":
            _CLASSES[cp] = _k.BREAK
        elif ch in ".!?;:":
            _CLASSES[cp] = _k.PUNCT
        elif ch.isspace():  # what `\\s` matches in a str pattern
            _CLASSES[cp] = _k.SPACE
        elif script == "mark":
            _CLASSES[cp] = _k.MARK
        elif script:
            _CLASSES[cp] = _CLASS_OF_SCRIPT[script]
        else:
            notation = ch == "_" or unicodedata.category(ch).startswith("N")
            _CLASSES[cp] = _k.NOTATION if notation else _k.NOT_LETTER
        lowered = ch.lower()
        _LOWER[cp] = ord(lowered) if len(lowered) == 1 else cp


_learn({chr(c) for c in range(128)})


def _compiled_consistency(prose: str, code: str) -> float:
    """`_word_by_word_consistency`, compiled."""
    text = np.frombuffer(prose.encode("utf-32-le", "surrogatepass"), np.uint32)
    args = (_CLASSES, _LOWER, _WORD_KEYS, _WORD_VALUES, _TARGETS[code])
    latin = _LANGUAGE_INDEX.get(code, -1)
    share = _k.consistency_kernel(text, *args, latin, len(LATIN_LANGUAGES))
    if share < 0:  # characters the tables have not seen: learn them, then count
        _learn(set(prose))
        share = _k.consistency_kernel(text, *args, latin, len(LATIN_LANGUAGES))
    return float(share)


def detect_mixed_language(text: str, target: str, threshold: float = 0.9) -> str | None:
    """`"mixed_language"` when `language_consistency(text, target) < threshold`, else None."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    return MIXED_LANGUAGE if language_consistency(text, target) < threshold else None
