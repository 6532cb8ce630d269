"""One check, gold first: parse the gold, extract and parse the answer, compare.

`check_fast` runs in the caller's process with the exact backend and a small
size budget: every step is bounded by the parser's guards and the budget, so
it needs no deadline. It returns None when only sympy can decide the pair.
`check_full` adds the sympy backend; it runs in a worker process under the
parent's deadline (see pool.py), since simplify and evalf are not bounded.
"""

from __future__ import annotations

from functools import lru_cache

from verifiers.math.compare import (
    Backend,
    Comparer,
    ExactBackend,
    NeedsSympy,
    SideError,
    SideTooComplex,
    SideUndefined,
)
from verifiers.math.countdown import check_countdown, countdown_gold
from verifiers.math.extract import CompletionTooLong, extract_answer
from verifiers.math.gold import not_math
from verifiers.math.normalize import compact, normalize
from verifiers.math.parse import MAX_ANSWER_CHARS, Node, ParseError, Seq, TooComplex, parse
from verifiers.math.verdict import (
    GOLD_UNPARSEABLE,
    HEDGED,
    MATCH_EXACT,
    MISMATCH,
    NO_ANSWER,
    TOO_COMPLEX,
    UNPARSEABLE,
    Verdict,
)

# The fast path's numbers stay small so that it stays fast; a pair that needs
# bigger ones goes to a worker, whose budget (~40,000 digits) is final.
FAST_BUDGET_BITS = 4096
# Node visits per fast check, about a few tenths of a second at most.
FAST_MAX_STEPS = 200_000
FULL_BUDGET_BITS = 1 << 17
# `extracted` is for reading; a runaway answer is cut here.
MAX_EXTRACTED_CHARS = 1000


@lru_cache(maxsize=8192)
def prepared(text: str) -> tuple[str, Node]:
    """(compact normalised text, tree) of an answer or gold; raises ParseError or TooComplex.

    Cached: in RL every gold is checked against a whole group of completions,
    and trees are immutable, so sharing them between threads is safe.
    """
    # Normalisation is linear in the text, but only after this cap.
    if len(text) > 2 * MAX_ANSWER_CHARS:
        raise TooComplex(f"answer of {len(text)} characters")
    normal = normalize(text)
    return compact(normal), parse(normal)


def check(gold: str, completion: str, backend: Backend) -> Verdict:
    spec = countdown_gold(gold)
    if spec is not None:
        return check_countdown(spec, completion)
    # A proof, a reference to other text or a sentence is no answer to match: unverifiable,
    # never `incorrect` (which would punish a good rollout or drop a good sample).
    kind = not_math(gold)
    if kind is not None:
        return Verdict("unverifiable", kind)
    try:
        gold_key, gold_node = prepared(gold)
    except TooComplex:
        return Verdict("unverifiable", TOO_COMPLEX)
    except ParseError:
        return Verdict("unverifiable", GOLD_UNPARSEABLE)
    try:
        found = extract_answer(completion)
    except CompletionTooLong:
        return Verdict("incorrect", TOO_COMPLEX)
    if found is None:
        return Verdict("incorrect", NO_ANSWER)
    extracted = found.answer[:MAX_EXTRACTED_CHARS]
    try:
        pred_key, pred_node = prepared(found.answer)
    except TooComplex:
        return Verdict("incorrect", TOO_COMPLEX, extracted)
    except ParseError:
        return Verdict("incorrect", UNPARSEABLE, extracted)
    comparer = Comparer(backend)
    try:
        if found.alternatives:
            if comparer.gold_is_multi(gold_node):
                # Several boxes against a list gold: together they are the list.
                boxed = _alternatives(found.alternatives)
                if boxed is None:
                    return Verdict("incorrect", UNPARSEABLE, extracted)
                pred_node = Seq("list", (*boxed, pred_node))
            elif not _all_same(comparer, pred_node, found.alternatives):
                return Verdict("incorrect", HEDGED, extracted)
        elif pred_key == gold_key:
            return Verdict("correct", MATCH_EXACT, extracted)
        reason = comparer.compare(gold_node, pred_node)
    except SideTooComplex as error:
        if error.side == "gold":
            return Verdict("unverifiable", TOO_COMPLEX, extracted)
        return Verdict("incorrect", TOO_COMPLEX, extracted)
    except SideUndefined as error:
        if error.side == "gold":
            return Verdict("unverifiable", GOLD_UNPARSEABLE, extracted)
        return Verdict("incorrect", MISMATCH, extracted)
    return Verdict("correct" if reason.startswith("match_") else "incorrect", reason, extracted)


def _alternatives(texts: tuple[str, ...]) -> list[Node] | None:
    try:
        return [prepared(text)[1] for text in texts]
    except (ParseError, TooComplex):
        return None


def _all_same(comparer: Comparer, final: Node, texts: tuple[str, ...]) -> bool:
    """Whether every earlier box holds the final answer again (a repeat, not a hedge)."""
    nodes = _alternatives(texts)
    if nodes is None:
        return False
    try:
        return all(comparer.equal(final, node) not in (MISMATCH, HEDGED) for node in nodes)
    except SideError:
        return False


def check_fast(gold: str, completion: str) -> Verdict | None:
    """The verdict when no sympy is needed, else None; bounded by guards, no deadline needed."""
    try:
        return check(
            gold,
            completion,
            ExactBackend(FAST_BUDGET_BITS, final=False, max_steps=FAST_MAX_STEPS),
        )
    except NeedsSympy:
        return None


def check_full(gold: str, completion: str) -> Verdict:
    """The verdict with sympy where needed; unbounded, so run it under a deadline."""
    from verifiers.math.symbolic import SympyBackend

    return check(gold, completion, SympyBackend(FULL_BUDGET_BITS))
