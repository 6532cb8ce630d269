"""Language and readability verifiers: R1's language-consistency reward and the
readability rules of its rejection sampling (mixed languages, overlong
paragraphs, code blocks inside the reasoning)."""

from verifiers.language.consistency import (
    MIXED_LANGUAGE,
    SUPPORTED_LANGUAGES,
    detect_mixed_language,
    language_consistency,
    normalize_language,
)
from verifiers.language.latin import LATIN_LANGUAGES, identify_latin_language
from verifiers.language.readability import (
    CODE_IN_REASONING,
    OVERLONG_PARAGRAPH,
    code_block_in_reasoning,
    longest_paragraph_chars,
    ngram_repeats,
    overlong_paragraphs,
    readability_issues,
    repetition_score,
)
from verifiers.language.scripts import SCRIPTS, script_counts, script_shares, strip_non_prose

VERSION = "1.0"

__all__ = [
    "CODE_IN_REASONING",
    "LATIN_LANGUAGES",
    "MIXED_LANGUAGE",
    "OVERLONG_PARAGRAPH",
    "SCRIPTS",
    "SUPPORTED_LANGUAGES",
    "VERSION",
    "code_block_in_reasoning",
    "detect_mixed_language",
    "identify_latin_language",
    "language_consistency",
    "longest_paragraph_chars",
    "ngram_repeats",
    "normalize_language",
    "overlong_paragraphs",
    "readability_issues",
    "repetition_score",
    "script_counts",
    "script_shares",
    "strip_non_prose",
]
