"""`r1f recipe` end to end on a micro study (3-step bases, 2-step GRPO and SFT, 2 seeds, the
plain process pool): results.json has every key of issue 11 with its interval, results.md
and the plots are written, and every arm of both seeds finished. About 2 minutes on two
busy cores, so `slow`; tests/cli/test_recipe_cli.py holds the fast checks of its errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.results import BASE_KEYS, SEED_KEYS
from flows.study import finish_study
from tests.cli.helpers import REPO

CONFIGS = REPO / "configs"
MICRO_EVAL = "eval: {problems: 2, k: 2, max_tokens: 8}\n"
MICRO_CORPUS = (
    "corpus:\n  families: {toy-arithmetic: 100, toy-countdown: 100, toy-greeting: 5}\n"
    "  text_documents: 5\nloop: {steps: 3, checkpoint_every: 3, log_every: 1}\n"
)
MICRO_RL = (
    "prompt_set: {families: {toy-arithmetic: 10, toy-countdown: 10}}\n"
    "rollout: {prompts_per_step: 2, group_size: 4, max_tokens: 8, max_batch_rows: 16}\n"
)


def micro_study(d: Path) -> Path:
    (d / "base.yaml").write_text(
        f"extends: {CONFIGS}/pretrain-toy.yaml\n{MICRO_CORPUS}{MICRO_EVAL}"
    )
    (d / "student.yaml").write_text(
        f"extends: {CONFIGS}/pretrain-student-toy.yaml\n{MICRO_CORPUS}{MICRO_EVAL}"
    )
    for name in ("r1-zero", "r1-zero-language"):
        (d / f"{name}.yaml").write_text(
            f"extends: {CONFIGS}/{name}-toy.yaml\n{MICRO_RL}"
            f"loop: {{steps: 2, checkpoint_every: 2}}\n{MICRO_EVAL}"
        )
    (d / "student-rl.yaml").write_text(
        f"extends: {CONFIGS}/r1-zero-student-toy.yaml\n{MICRO_RL}loop: {{steps: 200}}\n{MICRO_EVAL}"
    )
    (d / "sft.yaml").write_text(
        f"extends: {CONFIGS}/distill-student-toy.yaml\n"
        f"loop: {{steps: 2, checkpoint_every: 2, log_every: 1}}\n{MICRO_EVAL}"
    )
    study = d / "study.yaml"
    study.write_text(
        f"extends: {CONFIGS}/r1-toy.yaml\n"
        "study:\n"
        "  engine: processes\n"
        f"  base_dir: {d / 'bases'}\n"
        "  base_config: base.yaml\n"
        "  student_base_config: student.yaml\n"
        "  r1_zero_config: r1-zero.yaml\n"
        "  language_config: r1-zero-language.yaml\n"
        "  student_sft_config: sft.yaml\n"
        "  student_rl_config: student-rl.yaml\n"
        "  rejection_prompts: {families: {toy-arithmetic: 3, toy-countdown: 3}}\n"
        f"{MICRO_EVAL}"
        "generate: {sampling: {n: 2, max_tokens: 8}}\n"
        # A 3-step teacher solves nothing: keep every sample, so the students have data.
        "filter:\n  rejection: {enabled: false}\n"
        "  selection: {pass_rate_window: null, per_prompt: null}\n"
    )
    return study


@pytest.mark.slow
def test_recipe_study_writes_results_with_intervals(tmp_path: Path) -> None:
    study = micro_study(tmp_path)
    out = tmp_path / "out"
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        PREFECT_HOME=str(tmp_path / "prefect"),
        HF_HUB_OFFLINE="1",
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "recipe",
            "--config",
            str(study),
            "--out",
            str(out),
            "--seeds",
            "2",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    for key in (*SEED_KEYS, *BASE_KEYS):
        group, name = key.split(".")
        entry = results[group][name]
        assert isinstance(entry["mean"], float)
        lo, hi = entry["ci95"]
        assert lo <= entry["mean"] <= hi
        if key in SEED_KEYS:
            assert len(entry["values"]) == 2
    assert results["r1_zero"]["accuracy_before"]["spread"].startswith("none")
    assert results["seconds"]["mean"] > 0
    assert results["seeds"] == [0, 1]
    assert results["meta"]["seeds_incomplete"] == []
    # The student's RL arm was stopped by the SFT arm's CPU-seconds, not by its step cap.
    for seed in (0, 1):
        assert results["detail"]["student_rl.steps"]["values"][seed] < 200
    page = (out / "results.md").read_text()
    assert "| R1-Zero | accuracy after |" in page and "## Verdicts" in page
    for plot in ("results.png", "grpo-curves.png"):
        assert (out / plot).stat().st_size > 0
    arms = json.loads((out / "arms.json").read_text())
    assert arms["failed"] == {} and len(arms["results"]) == 2 + 2 + 2 * 6

    # A study stopped before seed 1's last arm: finish_study summarises seed 0 alone and
    # says that seed 1 is left out.
    del arms["results"]["student_rl/s1"]
    (out / "arms.json").write_text(json.dumps(arms))
    partial = finish_study(out)
    assert partial["seeds"] == [0] and partial["meta"]["seeds_incomplete"] == [1]
    assert partial["r1_zero"]["accuracy_after"]["ci95"] is None  # one seed: no interval
    assert "Incomplete seeds (left out of every figure):** [1]" in (out / "results.md").read_text()
