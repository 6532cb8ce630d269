"""The verdict record and the reason codes every path of the math verifier returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

VerdictKind = Literal["correct", "incorrect", "unverifiable"]

# correct
MATCH_EXACT = "match_exact"  # equal as written (after normalisation) or as exact rationals
MATCH_NUMERIC = "match_numeric"  # equal within the tolerance the gold's precision allows
MATCH_SYMBOLIC = "match_symbolic"  # equal as expressions (identity proven or tested exactly)
MATCH_STRUCTURE = "match_structure"  # tuples, sets, intervals, matrices, equations
MATCH_COUNTDOWN = "match_countdown"  # a countdown expression that reaches the target
# incorrect
MISMATCH = "mismatch"
NO_ANSWER = "no_answer"  # nothing extractable: no <answer> block, \boxed{} or "answer is"
HEDGED = "hedged"  # several different answers offered for a single-valued gold
UNPARSEABLE = "unparseable"  # the completion's answer is not a math expression we read
TOO_COMPLEX = "too_complex"  # over the guards (incorrect for a completion, unverifiable for a gold)
BAD_NUMBERS = "bad_numbers"  # countdown: a number not given, or given fewer times than used
# unverifiable
GOLD_UNPARSEABLE = "gold_unparseable"
# the gold is not a mathematical object (verifiers/math/gold.py)
GOLD_PROOF = "gold_proof"  # a proof, or proof language
GOLD_REFERENCE = "gold_reference"  # a pointer to other text: "see above", "part (a)"
GOLD_PROSE = "gold_prose"  # a sentence of prose
TIMEOUT = "timeout"  # the worker ran past the deadline and was killed
WORKER_ERROR = "worker_error"  # the worker process died mid-check
INTERNAL_ERROR = "internal_error"  # a bug in the verifier raised; never a verdict on the answer
BAD_INPUT = "bad_input"  # a batch row without a usable gold or completion


@dataclass(frozen=True, slots=True)
class Verdict:
    """One check's outcome.

    `extracted` is the completion's answer as it was found (inside `\\boxed{}`,
    `<answer>` or after "the answer is"), before normalisation; None when there
    was none or the check never got that far.
    """

    verdict: VerdictKind
    reason: str
    extracted: str | None = None

    @property
    def correct(self) -> bool:
        return self.verdict == "correct"

    def as_dict(self) -> dict[str, str | None]:
        return {"verdict": self.verdict, "reason": self.reason, "extracted": self.extracted}
