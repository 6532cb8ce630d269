"""The pool: hard deadlines, killed workers, threads, the cache and the batch API."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from verifiers.math import MathVerifier, verify
from verifiers.math.verdict import Verdict

# Generous enough that an ordinary sympy check finishes in time on a loaded two-core
# machine; SLOW_ANSWER needs many times longer. Tests assert verdicts, not durations:
# the wall-clock figures (every check back within its deadline) are bench/verify_math.py's.
DEADLINE = 3.0
# A hang would stall the test, so a generous bound still catches one.
HANG = 60.0
# A pair only a worker decides (the fast path cannot evaluate roots of 2).
SYMPY_PAIR = ("\\sqrt{2}", "\\boxed{\\frac{2}{\\sqrt{2}}}")
# Exact but slow: each binomial takes a worker about half a second.
SLOW_ANSWER = "\\boxed{" + "+".join(f"\\binom{{130000}}{{{65000 + k}}}" for k in range(40)) + "}"


@pytest.fixture
def verifier() -> Iterator[MathVerifier]:
    with MathVerifier(workers=2, timeout=DEADLINE, cache_size=0) as v:
        yield v


def timed(verifier: MathVerifier, gold: str, completion: str) -> tuple[Verdict, float]:
    started = time.monotonic()
    verdict = verifier.verify(gold, completion)
    return verdict, time.monotonic() - started


@pytest.mark.parametrize(
    ("gold", "completion", "verdict"),
    [
        ("2003^{2002^{2001}}", "\\boxed{5}", "unverifiable"),
        ("5", "\\boxed{2003^{2002^{2001}}}", "incorrect"),
        ("\\dfrac{5^{5^{5^{5^5}}-4}-5}{16}", "\\boxed{1}", "unverifiable"),
        ("1", "\\boxed{\\dfrac{5^{5^{5^{5^5}}-4}-5}{16}}", "incorrect"),
    ],
)
def test_named_pathological_inputs_return_within_the_deadline(
    verifier: MathVerifier, gold: str, completion: str, verdict: str
) -> None:
    result, seconds = timed(verifier, gold, completion)
    assert (result.verdict, result.reason) == (verdict, "too_complex")
    assert seconds < HANG


def test_a_check_past_its_deadline_is_killed(verifier: MathVerifier) -> None:
    verifier.verify(*SYMPY_PAIR)
    before = set(verifier.worker_pids())
    result, seconds = timed(verifier, "1", SLOW_ANSWER)
    assert (result.verdict, result.reason) == ("unverifiable", "timeout")
    assert seconds < HANG
    assert verifier.stats.timeouts == 1
    # The stuck worker is gone and the pool keeps serving.
    assert verifier.verify(*SYMPY_PAIR).correct
    assert set(verifier.worker_pids()) != before


def test_pool_survives_a_killed_worker(verifier: MathVerifier) -> None:
    assert verifier.verify(*SYMPY_PAIR).correct
    for pid in verifier.worker_pids():
        os.kill(pid, signal.SIGKILL)
    assert verifier.verify(*SYMPY_PAIR).correct
    assert verifier.verify("\\pi", "\\boxed{\\frac{\\pi}{1}}").correct


def test_a_worker_dying_twice_on_a_pair_is_reported(verifier: MathVerifier) -> None:
    # A worker that dies mid-check is replaced and the pair retried once; a
    # second death on the same pair gives worker_error.
    verifier.verify(*SYMPY_PAIR)
    (first,) = verifier.worker_pids()

    def kill_twice() -> None:
        time.sleep(0.3)
        os.kill(first, signal.SIGKILL)
        # Wait for the replacement to take the pair, then kill it too.
        for _ in range(200):
            fresh = [pid for pid in verifier.worker_pids() if pid != first]
            if fresh:
                time.sleep(0.1)
                os.kill(fresh[0], signal.SIGKILL)
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_twice)
    killer.start()
    result = verifier.verify("1", SLOW_ANSWER)
    killer.join()
    assert (result.verdict, result.reason) == ("unverifiable", "worker_error")
    assert verifier.verify(*SYMPY_PAIR).correct


def test_batch_keeps_order_and_resubmits_after_a_timeout(verifier: MathVerifier) -> None:
    pairs = [
        SYMPY_PAIR,
        ("1", SLOW_ANSWER),
        ("\\pi", "\\boxed{\\pi + 0}"),
        ("7/3", "\\boxed{\\frac{14}{6}}"),
        ("e", "\\boxed{\\exp(1)}"),
    ]
    finished: list[int] = []
    started = time.monotonic()
    verdicts = verifier.verify_many(pairs, progress=finished.append)
    assert time.monotonic() - started < HANG
    assert [v.reason for v in verdicts] == [
        "match_symbolic",
        "timeout",
        "match_symbolic",
        "match_exact",
        "match_symbolic",
    ]
    assert sum(finished) == len(pairs)


def test_verify_from_four_threads() -> None:
    cases = [
        (("7/3", "<answer>14/6</answer>"), "correct"),
        (SYMPY_PAIR, "correct"),
        (("\\pi", "\\boxed{3}"), "incorrect"),
        (("(1, 2)", "\\boxed{(2, 1)}"), "incorrect"),
    ]
    errors: list[str] = []

    def work(offset: int) -> None:
        for k in range(6):
            (gold, completion), expected = cases[(offset + k) % len(cases)]
            got = verify(gold, completion, timeout=5.0).verdict
            if got != expected:
                errors.append(f"{gold} {completion}: {got}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_cache_hits_and_timeouts_are_not_cached() -> None:
    with MathVerifier(workers=1, timeout=DEADLINE, cache_size=100) as verifier:
        verifier.verify("7/3", "\\boxed{14/6}")
        verifier.verify("7/3", "\\boxed{14/6}")
        assert verifier.stats.cached == 1
        verifier.verify("1", SLOW_ANSWER)
        verifier.verify("1", SLOW_ANSWER)
        assert verifier.stats.timeouts == 2


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="workers"):
        MathVerifier(workers=0)
    with pytest.raises(ValueError, match="timeout"):
        MathVerifier(timeout=0)
    closed = MathVerifier()
    closed.close()
    with pytest.raises(RuntimeError, match="closed"):
        closed.verify("1", "\\boxed{1}")
