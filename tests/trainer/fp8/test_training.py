"""FP8 against FP32 on the same run and seed through the project's training loop
(`run_training` with the config's `fp8:` section, what `r1f train` runs), short: bench/fp8.py
runs the 300-step version on the toy corpus (docs/fp8.md); this one trains on a synthetic
language.

The language (as in tests/trainer/model/test_learning.py): each of 32 symbols has two
successors chosen once at random, and a document walks from a random start taking either with
probability 1/2, written as text and tokenized by a small BPE trained on it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from store.lineage import Lineage
from store.record import to_table, validate_sample
from store.store import Store, StoreConfig
from trainer.config import DataConfig, LoopConfig, ModelConfig, OptimConfig, TrainConfig
from trainer.fp8 import Float8Recipe
from trainer.metrics import read_metrics
from trainer.tokenizer import save_tokenizer, train_tokenizer
from trainer.train import run_training

SYMBOLS = "abcdefghijklmnopqrstuvwxyz012345"
STEPS, TAIL = 60, 10


def walk_rows(n: int, length: int) -> list[dict[str, str]]:
    gen = torch.Generator().manual_seed(0)
    successors = [torch.randperm(len(SYMBOLS), generator=gen)[:2].tolist() for _ in SYMBOLS]
    rows = []
    for i in range(n):
        at = int(torch.randint(0, len(SYMBOLS), (1,), generator=gen))
        text = []
        for _ in range(length):
            text.append(SYMBOLS[at])
            at = successors[at][int(torch.randint(0, 2, (1,), generator=gen))]
        rows.append({"prompt": f"walk {i}", "completion": "".join(text)})
    return rows


def config(root: Path, *, fp8: bool) -> TrainConfig:
    return TrainConfig(
        stage="pretrain",
        seed=0,
        store=StoreConfig(root=str(root / "store")),
        model=ModelConfig(
            preset="tiny", args_file=str(root / "model.yaml"), tokenizer=str(root / "tokenizer")
        ),
        data=DataConfig(source="walks@0", seq_len=64, chat_share=0.0, loss_on="all"),
        optim=OptimConfig(lr=3e-3, warmup_steps=5, weight_decay=0.0, grad_clip=1.0),
        loop=LoopConfig(
            steps=STEPS,
            rows_per_micro_batch=4,
            log_every=1,
            checkpoint_every=0,
            threads=1,
            tensorboard=False,
            progress=False,
        ),
        fp8=Float8Recipe.named("deepseek_v3") if fp8 else None,
    )


@pytest.mark.slow
def test_fp8_run_follows_the_fp32_run(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    rows = [
        validate_sample(
            {**r, "domain": "general", "track": "non_reasoning", "source": "walks"}
            | {"sample_index": 0}
        )
        for r in walk_rows(400, 60)
    ]
    Store(tmp_path / "store").commit("walks", to_table(rows), lineage=Lineage(writer="tests"))
    tokenizer = train_tokenizer([r["completion"] for r in rows], vocab_size=300)
    save_tokenizer(tokenizer, tmp_path / "tokenizer", model_max_length=64)
    # `tiny` with every linear layer at least 128 wide, so 128x128 weight blocks are whole.
    widened = {"dim": 128, "inter_dim": 384, "q_lora_rank": 128, "kv_lora_rank": 128}
    widened |= {"moe_inter_dim": 128, "n_layers": 2, "vocab_size": 300, "max_seq_len": 64}
    (tmp_path / "model.yaml").write_text(yaml.safe_dump({"preset": "tiny", **widened}))

    losses = {}
    for name in ("fp32", "fp8"):
        out = tmp_path / name
        run_training(config(tmp_path, fp8=name == "fp8"), out_dir=out, say=lambda _line: None)
        losses[name] = [r["loss"] for r in read_metrics(out, kind="train")]
    fp32, fp8 = losses["fp32"], losses["fp8"]
    assert len(fp32) == len(fp8) == STEPS
    # Both learn (from about ln 300 = 5.7), on the very same batches.
    assert fp32[-1] < 0.5 * fp32[0] and fp8[-1] < 0.5 * fp8[0]
    # Not the same numbers: the GEMMs really ran in FP8 ...
    assert fp8 != fp32
    # ... but the same curve: the last steps' mean loss within 3%. At 60 steps the curve is
    # still falling and two FP32 runs from different initial weights differ by about as much
    # (measured: FP8 1.5%, FP32 with model.init_seed 1 1.2%); the 300-step bench on the toy
    # corpus is the one held to the V3 paper's 0.25% (docs/fp8.md).
    tail32, tail8 = sum(fp32[-TAIL:]) / TAIL, sum(fp8[-TAIL:]) / TAIL
    assert abs(tail8 - tail32) / tail32 < 0.03, (tail8, tail32)
