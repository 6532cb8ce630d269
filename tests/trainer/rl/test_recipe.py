"""trainer.recipe: each stage function refuses a config that is not its stage, naming the key,
and the SFT stages run the supervised loop on a table version."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from store.lineage import Lineage
from store.record import to_table, validate_sample
from store.store import Store, StoreConfig
from trainer.config import DataConfig, LoopConfig, ModelConfig, OptimConfig, TrainConfig
from trainer.init import init_checkpoint
from trainer.model import debug
from trainer.recipe import (
    StageError,
    check_final_rl,
    check_r1_zero,
    check_reasoning_rl,
    check_sft,
    cold_start,
)
from trainer.rl.config import GRPOConfig, RewardsConfig
from trainer.tokenizer import render_prompt, train_tokenizer


def _rl(stage: str, weights: dict[str, float]) -> GRPOConfig:
    return GRPOConfig(
        stage=stage,  # type: ignore[arg-type]
        model=ModelConfig(checkpoint="base"),
        rewards=RewardsConfig(weights=weights),
    )


def test_rl_stage_checks_name_the_key() -> None:
    check_r1_zero(_rl("r1_zero", {"accuracy": 1.0, "format": 1.0}))
    check_reasoning_rl(_rl("reasoning_rl", {"accuracy": 1.0, "format": 1.0, "language": 0.5}))
    check_final_rl(_rl("final_rl", {"accuracy": 1.0, "format": 1.0}))
    with pytest.raises(StageError, match=r"^stage: 'grpo'"):
        check_r1_zero(_rl("grpo", {"accuracy": 1.0, "format": 1.0}))
    with pytest.raises(StageError, match=r"^rewards.weights: R1-Zero"):
        check_r1_zero(_rl("r1_zero", {"accuracy": 1.0, "format": 1.0, "language": 0.1}))
    # A zero weight is no reward.
    with pytest.raises(StageError, match=r"^rewards.weights: reasoning_rl adds"):
        check_reasoning_rl(_rl("reasoning_rl", {"accuracy": 1.0, "language": 0.0}))
    with pytest.raises(StageError, match=r"^rewards.weights: reasoning_rl rewards"):
        check_reasoning_rl(_rl("reasoning_rl", {"accuracy": 1.0, "language": 1.0, "length": 1}))
    with pytest.raises(StageError, match=r"^rewards.weights: final_rl rewards accuracy"):
        check_final_rl(_rl("final_rl", {"format": 1.0}))


def _sft(stage: str, **data: object) -> TrainConfig:
    return TrainConfig(
        stage=stage,  # type: ignore[arg-type]
        model=ModelConfig(checkpoint="base"),
        data=DataConfig(**{"source": "cold@0", "chat_share": 1.0, **data}),  # type: ignore[arg-type]
    )


def test_sft_stage_checks_name_the_key() -> None:
    check_sft(_sft("cold_start"), "cold_start")
    check_sft(_sft("rejection_sft"), "rejection_sft")
    with pytest.raises(StageError, match=r"^stage: 'sft'"):
        check_sft(_sft("sft"), "cold_start")
    with pytest.raises(StageError, match=r"^data.source"):
        check_sft(_sft("cold_start", source=""), "cold_start")
    with pytest.raises(StageError, match=r"^data.loss_on"):
        check_sft(_sft("cold_start", loss_on="all"), "cold_start")
    with pytest.raises(StageError, match=r"^data.chat_share"):
        check_sft(_sft("cold_start", chat_share=0.5), "cold_start")
    no_parent = dataclasses.replace(_sft("cold_start"), model=ModelConfig())
    with pytest.raises(StageError, match=r"^model.checkpoint"):
        check_sft(no_parent, "cold_start")


def test_cold_start_fine_tunes_the_base_on_a_table_version(tmp_path: Path) -> None:
    rows = [
        validate_sample(
            {
                "prompt": f"Compute {a}+{b}.",
                "completion": f"<think>{a}+{b}={a + b}.</think><answer>{a + b}</answer>",
                "gold": str(a + b),
                "domain": "math",
                "track": "reasoning",
                "source": "test-sums",
                "language": "en",
            }
        )
        for a in range(6)
        for b in range(4)
    ]
    store = Store(tmp_path / "store")
    store.commit("cold", to_table(rows), lineage=Lineage(writer="test"), mode="overwrite")
    texts = [render_prompt(r["prompt"]) + r["completion"] for r in rows]
    base, _ = init_checkpoint(
        debug(max_seq_len=256),
        seed=0,
        out_dir=tmp_path / "base",
        tokenizer=train_tokenizer(texts * 2, vocab_size=300),
    )
    cfg = TrainConfig(
        stage="cold_start",
        store=StoreConfig(root=str(tmp_path / "store")),
        model=ModelConfig(checkpoint=str(base)),
        data=DataConfig(source="cold@0", seq_len=128, chat_share=1.0),
        optim=OptimConfig(lr=1e-3, warmup_steps=0),
        loop=LoopConfig(steps=2, rows_per_micro_batch=2, tensorboard=False, progress=False),
    )
    summary = cold_start(cfg, out_dir=tmp_path / "run", say=lambda _: None)
    assert summary.steps == 2 and summary.data.table == "cold"
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["r1f_stage"] == "cold_start"
    assert config["r1f_data"]["content_hash"] == store.content_hash("cold", 0)
