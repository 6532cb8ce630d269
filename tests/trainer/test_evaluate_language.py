"""trainer.evaluate's mixed-language rate of held-out chains of thought (the project's
detector, verifiers.language), beside the existing keys of the report."""

from __future__ import annotations

import pytest

from trainer.evaluate import EvalProblem, evaluate, mixes_languages

MIXED = "3+4=7. 所以 7*2=14. 因此 答案是 14</think><answer>14</answer>"
CLEAN = "3+4=7. so 7*2=14.</think><answer>14</answer>"


def test_mixes_languages_reads_the_chain_of_thought() -> None:
    assert mixes_languages("<think>" + MIXED, "en")
    assert not mixes_languages("<think>" + CLEAN, "en")
    # Chinese after the chain of thought is not the chain of thought's language.
    assert not mixes_languages("<think>" + CLEAN + " 答案是十四 因此", "en")
    # A language the detector does not know is not counted as mixed (as in GRPO's metric).
    assert not mixes_languages("<think>" + MIXED, "xx")


def test_evaluate_reports_the_mixed_rate_of_samples_and_greedy() -> None:
    problems = [
        EvalProblem("What is (3+4)*2?", "14", "fam"),
        EvalProblem("What is (3+4)*2 again?", "14", "fam"),
    ]

    def sample(prompts, temperature, n, max_tokens, seed):  # type: ignore[no-untyped-def]
        if temperature == 0:
            return [[MIXED], [CLEAN]]
        return [[MIXED, CLEAN, CLEAN, CLEAN], [MIXED, MIXED, CLEAN, CLEAN]]

    report = evaluate(sample, problems, k=4)
    score = report.families["fam"]
    assert score.mixed_language_sampled == pytest.approx(3 / 8)
    assert score.mixed_language_greedy == pytest.approx(1 / 2)
    assert score.greedy == 1.0 and score.format_sampled == 1.0  # the old keys are unchanged
    assert report.summary()["fam/mixed_language_sampled"] == pytest.approx(3 / 8)
    assert report.to_dict()["families"]["fam"]["mixed_language_sampled"] == pytest.approx(3 / 8)
