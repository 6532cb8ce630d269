"""`r1f demo` runs end to end on a small config and reports only what it did."""

from __future__ import annotations

from flows.demo import NOT_BUILT, run_demo


def test_demo_runs_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    base = tmp_path / "base.yaml"  # a toy base small enough for a test: a few steps
    base.write_text(
        "stage: pretrain\n"
        "corpus: {families: {toy-arithmetic: 30, toy-facts: 10}, text_documents: 5}\n"
        "model: {preset: tiny}\n"
        "data: {seq_len: 128, chat_share: 0.5, loss_on: all}\n"
        "loop: {steps: 3, rows_per_micro_batch: 2, threads: 1, tensorboard: false, progress: false}\n"
        "eval: {families: [toy-arithmetic], problems: 2, k: 2, max_tokens: 8}\n"
    )
    config = tmp_path / "demo.yaml"
    config.write_text(
        f"store:\n  root: {tmp_path / 'store'}\n"
        f"demo:\n  tasks_per_source: 4\n  planted_bad_rows: 3\n  humaneval_problems: 2\n"
        "  generate_prompts_per_source: 1\n  samples_per_prompt: 1\n  max_tokens: 8\n"
        f"  base_config: {base}\n  base_dir: {tmp_path / 'base'}\n"
        f"  out_dir: {tmp_path / 'out'}\n"
    )
    assert run_demo(config) == 0
    out = capsys.readouterr().out
    assert "pretraining the toy base" in out and "pretrained 3 steps on toy-pretrain@0" in out
    assert "held-out toy-arithmetic" in out
    # A second demo reuses the cached base instead of training it again.
    assert run_demo(config) == 0
    again = capsys.readouterr().out
    assert "pretraining the toy base" not in again and "pretrained 3 steps" in again
    assert "32 valid (32 new, 0 already present), 3 quarantined -> toy-reference@0" in out
    assert "32 valid (0 new, 32 already present)" in out  # the rerun adds nothing
    assert "sampled 8 completions for 8 prompts" in out
    assert "rerun: 1 of 1 shards already committed, 0 generated, 8 already present" in out
    assert "judged toy-generated@0: 8 samples, 8 with new verdicts -> toy-generated@1" in out
    assert "judged toy-reference@1: 64 samples, 64 with new verdicts -> toy-reference@2" in out
    assert "format  64 correct" in out and "math    32 correct" in out
    assert "judged toy-reference again: 0 changed, still toy-reference@2" in out
    assert "2/2 HumanEval canonical solutions pass, 2/2 mutants fail" in out
    assert "diff @0 -> @2: 32 -> 64 rows; added 32, removed 0, changed 32" in out
    assert "manifest check: all shard hashes match" in out
    assert "datasets.load_dataset: 64 rows" in out
    for stage, _issue in NOT_BUILT:
        assert stage in out
    assert (tmp_path / "out" / "release" / "README.md").is_file()
