"""`r1f demo` runs the recipe through the flows on a small config and reports what it did."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from flows.demo import run_demo
from flows.recipe import RECIPE

ROOT = Path(__file__).resolve().parents[2]


def write_demo_config(tmp_path: Path) -> Path:
    """The demo's own config, every part of it shrunk to a few steps and a few prompts."""
    base = tmp_path / "base.yaml"  # a toy base small enough for a test: a few steps
    base.write_text(
        "stage: pretrain\n"
        "corpus: {families: {toy-arithmetic: 30, toy-facts: 10}, text_documents: 5}\n"
        "model: {preset: tiny}\n"
        "data: {seq_len: 128, chat_share: 0.5, loss_on: all}\n"
        "loop: {steps: 3, rows_per_micro_batch: 2, threads: 1, tensorboard: false, progress: false}\n"
        "eval: {families: [toy-arithmetic], problems: 2, k: 2, max_tokens: 8}\n"
    )
    student = tmp_path / "distill.yaml"
    student.write_text(
        "stage: distill\n"
        f"model: {{kind: hf, hf_config: {ROOT / 'configs/students/qwen2-toy.json'}}}\n"
        "data: {source: toy-mixture, seq_len: 512, chat_share: 1.0, loss_on: completion}\n"
        "loop: {steps: 2, rows_per_micro_batch: 2, threads: 1, tensorboard: false, progress: false}\n"
        "eval: {families: [toy-arithmetic], problems: 2, k: 2, max_tokens: 8}\n"
    )
    zero = tmp_path / "r1-zero.yaml"  # R1-Zero: two GRPO steps of two groups of two
    zero.write_text(
        f"extends: {ROOT / 'configs/r1-zero-toy.yaml'}\n"
        "prompt_set: {families: {toy-arithmetic: 8}}\n"
        "rollout: {prompts_per_step: 2, group_size: 2, max_tokens: 8, max_batch_rows: 4}\n"
        "loop: {steps: 2, checkpoint_every: 0}\n"
        "eval: {families: [toy-arithmetic], problems: 2, k: 2, max_tokens: 8}\n"
    )
    # The later stages: one or two steps each, every model scored on two problems.
    micro_eval = (
        "eval: {families: [toy-arithmetic], problems: 2, k: 2, max_tokens: 8, before: false}\n"
    )
    loop = "steps: 2, checkpoint_every: 0, tensorboard: false, progress: false"
    for name, parent in [("cold-start", "cold-start-toy"), ("rejection-sft", "rejection-sft-toy")]:
        (tmp_path / f"{name}.yaml").write_text(
            f"extends: {ROOT / 'configs' / parent}.yaml\n"
            "data: {seq_len: 256}\n"
            f"loop: {{{loop}, rows_per_micro_batch: 2}}\n" + micro_eval
        )
    rollout = "rollout: {prompts_per_step: 2, group_size: 2, max_tokens: 8, max_batch_rows: 4}\n"
    (tmp_path / "reasoning-rl.yaml").write_text(
        f"extends: {ROOT / 'configs/reasoning-rl-toy.yaml'}\n"
        "prompt_set: {families: {toy-arithmetic: 8, toy-countdown: 0}}\n"
        f"{rollout}loop: {{{loop}}}\n" + micro_eval
    )
    (tmp_path / "final-rl.yaml").write_text(
        f"extends: {ROOT / 'configs/final-rl-toy.yaml'}\n"
        "prompt_set: {families: {toy-arithmetic: 4, toy-countdown: 0, toy-greeting: 4, "
        "toy-facts: 4, toy-translation: 0, toy-self-cognition: 0}}\n"
        f"{rollout}loop: {{{loop}}}\n" + micro_eval
    )
    config = tmp_path / "demo.yaml"
    config.write_text(
        f"""
store: {{root: {tmp_path / "store"}}}
demo: {{out_dir: {tmp_path / "out"}}}
flows: {{executor: process, workers: 1}}
recipe:
  base_config: {base}
  base_dir: {tmp_path / "base"}
  r1_zero_config: {zero}
  cold_start_config: cold-start.yaml
  zero_prompts: {{sources: {{toy-arithmetic: 4}}, seed: 2}}
  zero_samples: 2
  reasoning_rl_config: reasoning-rl.yaml
  rejection_sft_config: rejection-sft.yaml
  final_rl_config: final-rl.yaml
  distill_config: {student}
  runs_dir: {tmp_path / "runs"}
  reference_per_source: 3
generate:
  table: toy-generated
  shard_prompts: 4
  prompts: {{sources: {{toy-arithmetic: 4, toy-greeting: 2}}, seed: 0}}
  sampling: {{temperature: 1.0, max_tokens: 8, n: 1, seed: 0}}
  backend: {{kind: local, local: {{model_dir: "@base", threads: 1}}}}
judge: {{table: toy-generated, workers: 1}}
filter:
  inputs: [{{table: toy-reference}}, {{table: toy-generated}}]
  outputs: {{candidates: toy-candidates, mixture: toy-mixture, card_dir: {tmp_path / "cards"}}}
  execution: {{executor: local}}
  mixture:
    tracks:
      reasoning: {{target: 12}}
      non_reasoning: {{target: 6}}
"""
    )
    return config


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_demo_runs_the_recipe_through_the_flows(tmp_path, capsys, caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    config = write_demo_config(tmp_path)
    assert run_demo(config) == 0
    # The flows' progress lines are Prefect log lines, the summary is printed.
    out = capsys.readouterr().out + caplog.text
    caplog.clear()
    assert "pretrain: training the toy base" in out
    for stage in RECIPE:
        assert stage.run is not None and f"== {stage.name}: " in out
    assert "not run" not in out and "left out" not in out
    # 8 sources x 3 worked solutions; 4 prompts x 2 samples from R1-Zero; the cold-start set.
    assert "curated data: 24 worked solutions (24 new) -> toy-reference" in out
    assert "generate toy-r1-zero-samples: 4 prompts in 1 shards, 0 already committed" in out
    assert "curated data: cold-start set toy-cold-start@0" in out
    # Each stage from the checkpoint R1 says, and rejection sampling from reasoning RL's.
    runs = tmp_path / "runs"
    assert "rl r1_zero:" in out
    assert f"train cold_start: {tmp_path / 'cold-start.yaml'} from {tmp_path / 'base'}" in out
    assert f"rl reasoning_rl: {tmp_path / 'reasoning-rl.yaml'} from {runs / 'cold-start'}" in out
    assert "generate toy-generated: 6 prompts in 2 shards, 0 already committed" in out
    assert "local:reasoning-rl@" in out
    assert f"train rejection_sft: {tmp_path / 'rejection-sft.yaml'} from {tmp_path / 'base'}" in out
    assert f"rl final_rl: {tmp_path / 'final-rl.yaml'} from {runs / 'rejection-sft'}" in out
    for run in ("r1-zero", "cold-start", "reasoning-rl", "rejection-sft", "final-rl"):
        assert (runs / run / "train_summary.json").is_file(), run
    assert "datasets.load_dataset:" in out and "manifest checked" in out
    assert "R1 (after final RL)" in out and "What each stage started from" in out
    assert (tmp_path / "out" / "release" / "README.md").is_file()
    student = next((tmp_path / "runs").glob("distill-toy-mixture-v*"))
    assert (student / "train_summary.json").is_file()

    # A second demo reuses the cached base, and the student of the same mixture version.
    assert run_demo(config) == 0
    again = capsys.readouterr().out + caplog.text
    assert "the toy base is cached" in again and "pretrain: training" not in again
