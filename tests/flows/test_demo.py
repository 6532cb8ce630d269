"""`r1f demo` runs end to end on a small config and reports only what it did."""

from __future__ import annotations

from flows.demo import NOT_BUILT, run_demo


def test_demo_runs_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    config = tmp_path / "demo.yaml"
    config.write_text(
        f"store:\n  root: {tmp_path / 'store'}\n"
        f"demo:\n  tasks_per_source: 4\n  planted_bad_rows: 3\n  humaneval_problems: 2\n"
        "  generate_prompts_per_source: 1\n  samples_per_prompt: 1\n  max_tokens: 8\n"
        f"  out_dir: {tmp_path / 'out'}\n"
    )
    assert run_demo(config) == 0
    out = capsys.readouterr().out
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
