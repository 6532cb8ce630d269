"""`r1f train grpo`: a bad config, a missing checkpoint or prompt table, an occupied --out are
one line on stderr naming the file and key, exit 2; `--resume` after a finished run is a
no-op that keeps the published model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from flows.cli import main
from trainer.init import init_checkpoint
from trainer.model import debug
from trainer.tokenizer import render_prompt, train_tokenizer


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("rollout:\n  group_sise: 4\n", "rollout.group_sise: unknown key"),
        ("rollout:\n  group_size: zero\n", "rollout.group_size: expected int"),
        ("rollout:\n  group_size: 0\n", "group_size must be >= 1"),
        ("loss:\n  aggregation: mean\n", "aggregation 'mean'"),
        ("rewards:\n  weights: {accuracy: 1.0, style: 1.0}\n", "unknown reward 'style'"),
        ("prompts:\n  source: toy@0\n", "model.checkpoint: no checkpoint at"),
        ("", "prompts.source: name the RL prompt table"),
    ],
)
def test_bad_config_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, expected: str
) -> None:
    config = tmp_path / "grpo.yaml"
    config.write_text(f"stage: r1_zero\nmodel:\n  checkpoint: {tmp_path / 'none'}\n{body}")
    err = _error(capsys, ["train", "grpo", "--config", str(config)])
    assert str(config) in err and expected in err, err


def test_stage_mismatch_and_occupied_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.set_num_threads(1)
    texts = [render_prompt(f"Compute {a}+1.") for a in range(10)]
    base, _ = init_checkpoint(
        debug(), 0, tmp_path / "base", tokenizer=train_tokenizer(texts, vocab_size=300)
    )
    config = tmp_path / "grpo.yaml"
    config.write_text(
        f"stage: r1_zero\nmodel: {{checkpoint: {base}}}\n"
        f"store: {{root: {tmp_path / 'store'}}}\n"
        "prompts: {source: toy@0}\nrewards: {weights: {accuracy: 1.0, language: 1.0}}\n"
    )
    out = tmp_path / "out"
    err = _error(capsys, ["train", "grpo", "--config", str(config), "--out", str(out)])
    assert "rewards.weights: R1-Zero rewards accuracy and format only" in err, err
    out.mkdir()
    (out / "something").write_text("x")
    err = _error(capsys, ["train", "grpo", "--config", str(config), "--out", str(out)])
    assert f"{out}: exists and is not empty" in err and "--resume" in err, err
