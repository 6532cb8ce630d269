"""Golds that are not mathematical objects: a proof, a reference to earlier text, prose.

Datasets scraped from solutions carry golds like "See the proof above.", "The result follows
by induction on n.", "as shown in part (a)" or a whole explanatory sentence. None of them is
an answer a completion can match: read as a word answer they would make every completion
`incorrect`, which punishes good rollouts in RL and drops good samples in rejection sampling.
Such a gold makes the check `unverifiable`, with the reason saying which kind it is:

- `gold_proof`: proof language (proof, prove, QED, the end-of-proof marks, "by induction",
  "it follows", "therefore", lemma, theorem, "show that", ...);
- `gold_reference`: it points at other text ("see above", "shown earlier", "part (a)",
  "equation (3)", "the previous solution", ...);
- `gold_prose`: a sentence: at least 6 words outside math, or at least 3 words and a sentence
  end (`.`, `!`, `?`) after a word.

Words are counted outside `$...$`, `\\(...\\)`, `\\[...\\]` and LaTeX commands (their
arguments stay, so `\\text{see above}` is read), and the math function names the parser knows
(`sin`, `log`, ...) are not words. Short word answers stay answers: "no solution",
"infinitely many", "It is not possible", "Paris", "(B)".

Every pattern is a literal alternation or a bounded class run, linear in the text, and only
the first MAX_SCAN characters are read (a longer gold is over the parser's guards anyway).
"""

from __future__ import annotations

import re

from verifiers.math.parse import KNOWN_NAMES
from verifiers.math.verdict import GOLD_PROOF, GOLD_PROSE, GOLD_REFERENCE

MAX_SCAN = 4000
# A sentence: this many words outside math, or SENTENCE_WORDS and a full stop after a word.
PROSE_WORDS = 6
SENTENCE_WORDS = 3

# End-of-proof marks and LaTeX proof commands, matched on the raw text.
_PROOF_MARKS = re.compile(
    r"\\(?:qed|blacksquare|qedsymbol|qedhere|therefore)\b|[\u220e\u25a1\u2234]"
)
_PROOF_WORDS = re.compile(
    r"\b(?:proofs?|prove[sdn]?|proving|q\.?e\.?d|lemma|lemmas|theorem|theorems|corollary"
    r"|by\s+(?:induction|contradiction|symmetry|construction)"
    r"|(?:we\s+have|we've|has\s+been|have\s+been|is)\s+(?:shown|proved|proven|established)"
    r"|(?:show|shows|showing|verify|verifies)\s+that|it\s+follows|follows\s+(?:from|that)"
    r"|completes\s+the|as\s+(?:required|desired|claimed)|suppose|assume|without\s+loss"
    r"|hence|therefore|thus|wlog)\b",
    re.IGNORECASE,
)
_REFERENCE = re.compile(
    r"\b(?:see|cf)\b|\b(?:above|below|earlier|previously|aforementioned|preceding)\b"
    r"|\bprevious\s+(?:part|step|answer|problem|question|solution|result|section)\b"
    r"|\b(?:part|step|equation|eq|lemma|figure|fig|table|section|exercise|example)"
    r"\s*\.?\s*\(?\s*(?:[a-h]|[ivx]{1,4}|\d{1,3})\s*\)"
    r"|\b(?:equation|eq|figure|fig|table|section|exercise|example)\s*\.?\s*\d{1,3}\b"
    r"|\b(?:the|this|that)\s+(?:solution|explanation|argument|derivation|text|proof)\b",
    re.IGNORECASE,
)
# Inline and display math without a command inside (with one, the commands go below and
# the letters left are single symbols). Each run stops at the next `$` or backslash: linear.
_MATH_SPANS = re.compile(r"\$[^$]*\$|\\\([^\\]*\\\)|\\\[[^\\]*\\\]")
_COMMAND = re.compile(r"\\[A-Za-z]+")
_WORD = re.compile(r"[A-Za-z]{2,}(?:'[A-Za-z]+)?")
# A sentence end: a word, then . ! or ? and then white space or the end.
_SENTENCE_END = re.compile(r"[A-Za-z]{2,}[.!?](?:\s|$)")


def not_math(gold: str) -> str | None:
    """The reason code when `gold` is a proof, a reference or prose; None when it may be an
    answer (which the parser then reads, or refuses as `gold_unparseable`)."""
    text = gold[:MAX_SCAN]
    if _PROOF_MARKS.search(text):
        return GOLD_PROOF
    prose = _COMMAND.sub(" ", _MATH_SPANS.sub(" ", text))
    if _PROOF_WORDS.search(prose):
        return GOLD_PROOF
    if _REFERENCE.search(prose):
        return GOLD_REFERENCE
    words = [w for w in _WORD.findall(prose) if w.lower() not in KNOWN_NAMES]
    if len(words) >= PROSE_WORDS or (
        len(words) >= SENTENCE_WORDS and _SENTENCE_END.search(prose) is not None
    ):
        return GOLD_PROSE
    return None
