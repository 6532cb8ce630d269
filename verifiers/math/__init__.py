"""Math answer verification for rewards and rejection sampling: gold first, never hangs.

    from verifiers.math import verify, MathVerifier

    verify("7/3", "<think>...</think><answer>\\frac{7}{3}</answer>")
    # Verdict(verdict='correct', reason='match_exact', extracted='\\frac{7}{3}')

    with MathVerifier(workers=4, timeout=5.0) as verifier:
        verdicts = verifier.verify_many(pairs)

`verify(gold, completion)` returns a `Verdict`: `correct`, `incorrect` or
`unverifiable` (the gold cannot be read, or the check ran out of time), a short
reason code (verdict.py lists them) and the extracted answer. A completion
without an extractable answer is `incorrect`/`no_answer`; several different
answers to a single-valued gold are `incorrect`/`hedged`. A countdown gold (the
toy task's JSON) is checked by evaluating the answer (`verify_countdown`).

Where the work happens: the fast path (extraction, normalisation, exact
rational comparison, typed structures, rational-function identities) runs in
the caller, bounded by guards; anything that needs sympy runs in a worker
process under a hard deadline enforced by the parent (pool.py). README.md has
what is covered and what is not.
"""

from __future__ import annotations

import atexit
import threading

from verifiers.math.countdown import verify_countdown
from verifiers.math.pool import DEFAULT_TIMEOUT, MathVerifier
from verifiers.math.verdict import Verdict

# Stored with every verdict in the sample record; bump it when a verdict can change.
VERSION = "math-1.1"

__all__ = [
    "DEFAULT_TIMEOUT",
    "VERSION",
    "MathVerifier",
    "Verdict",
    "default_verifier",
    "verify",
    "verify_countdown",
]

_default: list[MathVerifier] = []
_default_lock = threading.Lock()


def default_verifier() -> MathVerifier:
    """The process-wide verifier behind `verify` (two workers, started on first need)."""
    with _default_lock:
        if not _default:
            verifier = MathVerifier(workers=2)
            atexit.register(verifier.close)
            _default.append(verifier)
        return _default[0]


def verify(gold: str, completion: str, *, timeout: float = DEFAULT_TIMEOUT) -> Verdict:
    """Check `completion`'s final answer against `gold`; safe from any thread.

    `timeout` is the hard deadline, in seconds, of the part of the check that
    needs sympy; the fast path needs none.
    """
    return default_verifier().verify(gold, completion, timeout=timeout)
