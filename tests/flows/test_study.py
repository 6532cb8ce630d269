"""flows.study's pure parts: the scheduler (order, bound, failures) with a fake pool, and
results.json's figures from hand-made arm results."""

from __future__ import annotations

from typing import Any

import pytest

from flows.study import Job, Outcome, accuracy, schedule, seed_figures, summarize


class Done:
    """A finished fake future."""

    def __init__(self, value: dict[str, Any] | None = None, error: str | None = None) -> None:
        self.value, self.error = value, error

    def result(self) -> dict[str, Any]:
        if self.error is not None:
            raise RuntimeError(self.error)
        assert self.value is not None
        return self.value


Started = list[tuple[str, dict[str, Any], int]]


def run(
    jobs: list[Job], workers: int, fail: frozenset[str] = frozenset()
) -> tuple[Outcome, Started]:
    started: Started = []
    running: list[Done] = []

    def submit(job: Job, inputs: dict[str, Any]) -> Done:
        started.append((job.name, inputs, len(running) + 1))
        future = Done(error="boom") if job.name in fail else Done({"from": job.name})
        running.append(future)
        return future

    def wait_first(futures: list[Done]) -> Done:
        first = futures[0]  # the oldest finishes first
        running.remove(first)
        return first

    outcome = schedule(jobs, submit, wait_first, lambda f: f.result(), workers, lambda _: None)
    return outcome, started


def test_dependencies_order_and_the_bound() -> None:
    jobs = [
        Job("b", "k", {}, ("a",)),
        Job("a", "k", {}),
        Job("c", "k", {}),
        Job("d", "k", {}, ("b", "c")),
    ]
    outcome, started = run(jobs, workers=2)
    names = [name for name, _, _ in started]
    assert names.index("a") < names.index("b") < names.index("d")
    assert names.index("c") < names.index("d")
    assert max(at_once for _, _, at_once in started) <= 2
    d_inputs = next(inputs for name, inputs, _ in started if name == "d")
    assert d_inputs == {"b": {"from": "b"}, "c": {"from": "c"}}
    assert set(outcome.results) == {"a", "b", "c", "d"} and not outcome.failed


def test_a_failure_skips_its_dependents_only() -> None:
    jobs = [
        Job("a", "k", {}),
        Job("b", "k", {}, ("a",)),
        Job("c", "k", {}, ("b",)),
        Job("x", "k", {}),
    ]
    outcome, _ = run(jobs, workers=1, fail=frozenset({"a"}))
    assert outcome.failed == {"a": "RuntimeError: boom"}
    assert outcome.skipped == {"b": "a", "c": "b"}
    assert set(outcome.results) == {"x"}


def test_bad_plans_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown"):
        run([Job("a", "k", {}, ("nope",))], workers=1)
    with pytest.raises(ValueError, match="unique"):
        run([Job("a", "k", {}), Job("a", "k", {})], workers=1)
    with pytest.raises(ValueError, match="wait on each other"):
        run([Job("a", "k", {}, ("b",)), Job("b", "k", {}, ("a",))], workers=1)


def _report(arith: float, countdown: float, fmt: float = 1.0, mixed: float = 0.0) -> dict:
    def fam(greedy: float) -> dict[str, float]:
        return {
            "greedy": greedy,
            "pass_at_k": min(1.0, 2 * greedy),
            "format_sampled": fmt,
            "mixed_language_sampled": mixed,
        }

    return {"k": 8, "families": {"toy-arithmetic": fam(arith), "toy-countdown": fam(countdown)}}


def _arms(seed: int, shift: float) -> dict[str, dict[str, Any]]:
    def arm(report: dict, cpu: float = 10.0, steps: int = 5) -> dict[str, Any]:
        return {"eval": report, "cpu_seconds": cpu, "steps": steps}

    return {
        f"r1_zero/s{seed}": arm(_report(0.30 + shift, 0.10, fmt=0.98, mixed=0.04)),
        f"language/s{seed}": arm(_report(0.28 + shift, 0.10, mixed=0.01)),
        f"sft_filtered/s{seed}": arm(_report(0.20, 0.0), cpu=20.0, steps=60),
        f"sft_unfiltered/s{seed}": arm(_report(0.10, 0.0), cpu=19.0, steps=60),
        f"student_rl/s{seed}": arm(_report(0.04, 0.0), cpu=21.0, steps=12),
        f"rejection/s{seed}": {"teacher_correct_share": 0.2, "mixture_rows": 300, "cpu_seconds": 5},
    }


def test_seed_figures_by_hand() -> None:
    arms = _arms(0, 0.0)
    got = seed_figures(arms, 0)
    assert got is not None
    assert got["r1_zero.accuracy_after"] == pytest.approx(0.20)  # (0.30 + 0.10) / 2
    assert got["r1_zero.format_rate_after"] == pytest.approx(0.98)
    assert got["language.mixed_rate_without"] == pytest.approx(0.04)
    assert got["language.mixed_rate_with"] == pytest.approx(0.01)
    assert got["language.accuracy_with"] == pytest.approx(0.19)
    assert got["distillation.student_distilled"] == got["filtering.student_filtered"] == 0.10
    assert got["distillation.student_rl"] == pytest.approx(0.02)
    assert got["filtering.student_unfiltered"] == pytest.approx(0.05)
    del arms["student_rl/s0"]
    assert seed_figures(arms, 0) is None
    assert accuracy(_report(0.5, 0.25)) == pytest.approx(0.375)


def test_summarize_averages_complete_seeds_only() -> None:
    arms: dict[str, dict[str, Any]] = {
        "eval_base": {"eval": _report(0.06, 0.06, fmt=0.1, mixed=0.1)},
        "eval_student_base": {"eval": _report(0.06, 0.0)},
    }
    arms.update(_arms(0, 0.0))
    arms.update(_arms(1, 0.02))
    partial = _arms(2, 0.04)
    del partial["language/s2"]
    arms.update(partial)
    results = summarize(
        Outcome(results=arms, failed={"language/s2": "RuntimeError: x"}), [0, 1, 2], 100.0, {}
    )
    assert results["seeds"] == [0, 1]
    assert results["meta"]["seeds_incomplete"] == [2]
    after = results["r1_zero"]["accuracy_after"]
    assert after["values"] == pytest.approx([0.20, 0.21])
    assert results["r1_zero"]["accuracy_before"]["mean"] == pytest.approx(0.06)
    assert results["distillation"]["student_before"]["mean"] == pytest.approx(0.03)
    assert results["detail"]["student_rl.steps"]["values"] == [12, 12]
    assert results["meta"]["base"]["toy-arithmetic"]["pass@8"] == pytest.approx(0.12)
