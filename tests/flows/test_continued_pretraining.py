"""`train_stage` with a corpus and a checkpoint: continued pretraining keeps the checkpoint's
tokenizer (a new one would renumber the vocabulary under trained embeddings), and the corpus's
arithmetic drills are in the table it trains on."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from flows.train import StageConfig, train_stage
from generators.tasks.corpus import DRILL_SOURCE, CorpusConfig, build_corpus
from store.store import Store, StoreConfig
from trainer.config import DataConfig, EvalConfig, LoopConfig, ModelConfig, OptimConfig
from trainer.init import init_checkpoint
from trainer.model import debug
from trainer.tokenizer import render_prompt, train_tokenizer


def test_continued_pretraining_keeps_the_checkpoint_tokenizer(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    corpus = CorpusConfig(
        table="drill-mix",
        families={"toy-arithmetic": 20},
        text_documents=2,
        drill_documents=10,
        drill_facts=4,
    )
    rows = build_corpus(corpus)
    drills = [r for r in rows if r["source"] == DRILL_SOURCE]
    assert len(drills) == 10 and all(len(r["completion"].split("\n")) == 4 for r in drills)
    texts = [render_prompt(r["prompt"]) + r["completion"] for r in rows]
    base, _ = init_checkpoint(
        debug(max_seq_len=256), 0, tmp_path / "base", tokenizer=train_tokenizer(texts, 300)
    )
    cfg = StageConfig(
        stage="pretrain",
        store=StoreConfig(root=str(tmp_path / "store")),
        model=ModelConfig(checkpoint=str(base)),
        data=DataConfig(seq_len=128, chat_share=0.2, loss_on="all"),
        optim=OptimConfig(lr=1e-3, warmup_steps=0),
        loop=LoopConfig(steps=1, rows_per_micro_batch=2, tensorboard=False, progress=False),
        eval=EvalConfig(problems=0),
        corpus=corpus,
    )
    out = tmp_path / "run"
    summary = train_stage(cfg, out_dir=out, say=lambda _: None)
    assert summary.data.table == "drill-mix"
    assert not (out / "tokenizer").exists()  # no tokenizer trained for this run
    assert (out / "tokenizer.json").read_text() == (base / "tokenizer.json").read_text()
    assert json.loads((out / "config.json").read_text())["r1f_parent"]["path"] == str(base)
    assert Store(tmp_path / "store").exists("drill-mix")
