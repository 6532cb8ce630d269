"""Training throughput: our loop against transformers.Trainer, same model, data and batches.

    python bench/train.py           # 3 warm-up + 30 timed steps per side, two rounds
    python bench/train.py --quick   # 2 warm-up + 6 timed steps per side, one round (under a minute)

Two models, each trained by both loops from the same weights on the same batches:

1. **DeepSeek-V3** (`ratio`): our `tiny` model (MLA, 1 dense + 3 MoE layers, 8 routed experts,
   vocabulary 1,024), saved as a checkpoint (Hugging Face layout). Ours trains it as our
   `Transformer` (`trainer.train.build_model` + `train_loop`, what `r1f train` runs); the
   anchor loads the same directory as transformers' `DeepseekV3ForCausalLM` and trains it
   with `transformers.Trainer`.
2. **The dense student** (`student_ratio`): the Qwen2-style student of
   `configs/students/qwen2-toy.json`, saved once; ours trains it through the `HFCausalLM`
   adapter, the anchor with `Trainer`. The same module runs on both sides: what differs is
   the loop.

Equal work, and how it is checked:

- Same tokens: the batches are the toy corpus packed by `trainer.data` (rows of 256 tokens,
  8 rows a step, documents kept apart by a block-diagonal mask and positions restarting per
  document). The anchor gets the very same rows, in order (an iterable dataset, so no
  shuffling), with the same 4D mask, `position_ids` and targets (as `shift_labels`, so
  transformers' loss scores exactly our targets). The bench asserts that both sides' loss on
  the first batch agrees to 1e-4 relative, and prints both loss curves' largest difference.
- Same objective: our MTP loss (lambda) and sequence-wise balance loss are turned off
  (`mtp_lambda: 0`, `seq_aux_alpha: 0`), since transformers' DeepseekV3 trains neither; our
  loop still does its router-bias update after each step (work the anchor does not do).
- Same optimizer and schedule, by construction: the Trainer is handed the optimizer and
  schedule our loop builds (`trainer.optim.build_optimizer` / `build_scheduler`: AdamW, lr
  1e-3, betas 0.9/0.95, eps 1e-8, weight decay 0.1 on matrices, the for-loop
  implementation; linear warm-up then cosine to 10% of the peak) through its `optimizers=`
  argument, the documented way to give it one. Both clip the global gradient norm at 1.0.
- Same precision (fp32), same threads (`torch.set_num_threads`, 1 by default), logging every
  step on both sides, no checkpoints, no evaluation, no progress bar.

Timing: each side runs its warm-up steps, then its timed steps in one call; tokens/s =
non-padding input tokens of the timed steps / wall seconds of the timed steps (data loading
included on both sides). With `--rounds 2` (the full run) the sides alternate
ours, anchor, ours, anchor and each keeps its best round, so a burst of load from other jobs
on the shared machine hurts neither side more. CPU seconds of the timed steps are reported
too (`*_cpu_ratio`): on one thread they track wall time when the machine is quiet.

`fp8_loss_rel_err`: FP8 against FP32 through this same loop, as bench/fp8.py measures it
(`bench.fp8.training`: the widened `tiny`, the same seed and batches, the held-out loss):
300 steps in the full run, 20 with --quick (`fp8_steps` says which). bench/fp8.py adds the
run-to-run control and the curves (docs/fp8.md). The two 300-step runs take most of an hour
on this machine: `--fp8-from LOG` takes the figure from a bench/fp8.py run's output instead
(`fp8_source` names it), waiting for that run to finish if it is still going.

The last line is one JSON object: `ratio` = our tokens/s over Trainer's on DeepSeek-V3
(target >= 1.5), `student_ratio` = the same on the dense student (target >= 1.0).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench._common import emit_json, print_table, rounded

WORK = Path("work/bench/train")
STUDENT = Path("configs/students/qwen2-toy.json")
SEQ_LEN, ROWS = 256, 8
LR, WEIGHT_DECAY, BETAS, EPS, CLIP, MIN_LR = 1e-3, 0.1, (0.9, 0.95), 1e-8, 1.0, 0.1


@dataclass
class Timed:
    """One side's run: losses of every step, and the timed steps' tokens and seconds."""

    losses: list[float]
    tokens: int
    seconds: float
    cpu_seconds: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    @property
    def tokens_per_cpu_s(self) -> float:
        return self.tokens / self.cpu_seconds


# ----------------------------------------------------------------------------------------------
# Models and data


def prepare(work: Path, quick: bool) -> tuple[Any, Path, Path]:
    """The packed dataset, our DeepSeek-V3 checkpoint and the student's directory.

    The corpus is the toy pretraining corpus (a tenth of it for --quick) in a scratch store;
    the tokenizer is trained on it; the checkpoint is `tiny` from seed 0 with that tokenizer."""
    from flows.train import corpus_tokenizer
    from generators.tasks.corpus import CorpusConfig, corpus_table
    from store.lineage import Lineage
    from store.store import Store
    from trainer.data import DataSpec, PackedDataset, load_rows, tokenize_rows
    from trainer.init import init_checkpoint
    from trainer.model import tiny
    from trainer.tokenizer import R1Tokenizer

    store = Store(work / "store")
    families = CorpusConfig().families
    if quick:
        families = {name: max(1, n // 10) for name, n in families.items()}
    ref = corpus_table(
        store, CorpusConfig(table="train-bench", families=families), Lineage(writer="bench")
    )
    texts = store.read(ref.table, ref.version, ["prompt", "completion"])
    tok_dir = corpus_tokenizer(
        texts.get_column("prompt").to_list(),
        texts.get_column("completion").to_list(),
        1024,
        work / "tokenizer",
    )
    tokenizer = R1Tokenizer.from_dir(tok_dir)
    _, rows = load_rows(str(ref), store)
    docs = tokenize_rows(rows, tokenizer, DataSpec(loss_on="all", chat_share=0.2, seed=0))
    dataset = PackedDataset(docs, SEQ_LEN, seed=0, pad_id=tokenizer.pad_id)

    ours_dir = work / "deepseek-v3"
    shutil.rmtree(ours_dir, ignore_errors=True)
    init_checkpoint(tiny(vocab_size=1024), 0, ours_dir, tokenizer=tokenizer.tokenizer)

    student_dir = work / "student"
    shutil.rmtree(student_dir, ignore_errors=True)
    from transformers import AutoConfig, AutoModelForCausalLM

    settings = json.loads(STUDENT.read_text())
    torch.manual_seed(0)
    student = AutoModelForCausalLM.from_config(
        AutoConfig.for_model(settings.pop("model_type"), **settings), dtype=torch.float32
    )
    student.save_pretrained(str(student_dir))
    return dataset, ours_dir, student_dir


def batches(dataset: Any, n: int) -> list[Any]:
    """The first n batches of the stream both sides train on."""
    from trainer.data import BatchStream

    stream = BatchStream(dataset, ROWS)
    return [stream.next() for _ in range(n)]


# ----------------------------------------------------------------------------------------------
# Ours: trainer.train's loop


def run_ours(kind: str, model_dir: Path, dataset: Any, warmup: int, steps: int) -> Timed:
    from trainer.config import ModelConfig
    from trainer.data import BatchStream
    from trainer.metrics import MetricsLog
    from trainer.optim import build_optimizer, build_scheduler
    from trainer.train import LoopHooks, build_model, train_loop

    if kind == "deepseek_v3":
        cfg = ModelConfig(checkpoint=str(model_dir), mtp_lambda=0.0, seq_aux_alpha=0.0)
    else:
        cfg = ModelConfig(kind="hf", checkpoint=str(model_dir))
    model = build_model(cfg, 1024, seed=0)
    optimizer = build_optimizer(
        model.module, lr=LR, weight_decay=WEIGHT_DECAY, betas=BETAS, eps=EPS
    )
    total = warmup + steps
    scheduler = build_scheduler(
        optimizer, warmup_steps=warmup, total_steps=total, min_lr_ratio=MIN_LR
    )
    stream = BatchStream(dataset, ROWS)
    with tempfile.TemporaryDirectory(dir=WORK) as run_dir:
        log = MetricsLog(run_dir, tensorboard=False)
        common: dict[str, Any] = {
            "grad_accum": 1,
            "grad_clip": CLIP,
            "log_every": 1,
            "checkpoint_every": 0,
            "eval_every": 0,
            "hooks": LoopHooks(log=log),
        }
        first = train_loop(
            model, stream, optimizer, scheduler, start_step=0, total_steps=warmup, **common
        )
        began, cpu_began = time.perf_counter(), time.process_time()
        timed = train_loop(
            model, stream, optimizer, scheduler, start_step=warmup, total_steps=total, **common
        )
        seconds, cpu_seconds = time.perf_counter() - began, time.process_time() - cpu_began
        log.close()
    return Timed(
        [r.loss for r in first + timed], sum(r.tokens for r in timed), seconds, cpu_seconds
    )


# ----------------------------------------------------------------------------------------------
# The anchor: transformers.Trainer


def run_trainer(model_dir: Path, data: list[Any], warmup: int, steps: int) -> Timed:
    from transformers import (
        AutoModelForCausalLM,
        PrinterCallback,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from trainer.data import IGNORE_INDEX
    from trainer.model.model import document_positions

    class Rows(torch.utils.data.IterableDataset):
        """Our packed rows, in order, as transformers takes packed documents."""

        def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
            causal = torch.ones(SEQ_LEN, SEQ_LEN, dtype=torch.bool).tril()
            for batch in data:
                positions = document_positions(batch.document_ids)
                for r in range(batch.inputs.shape[0]):
                    docs = batch.document_ids[r]
                    yield {
                        "input_ids": batch.inputs[r],
                        "labels": batch.targets[r],
                        "shift_labels": batch.targets[r],  # scored as given, not shifted again
                        "position_ids": positions[r],
                        "attention_mask": ((docs[:, None] == docs[None, :]) & causal)[None],
                    }

    class Clock(TrainerCallback):
        """Wall and CPU time at the end of the warm-up and of the last step."""

        def __init__(self) -> None:
            self.marks: dict[int, tuple[float, float]] = {}

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step in (warmup, warmup + steps):
                self.marks[state.global_step] = (time.perf_counter(), time.process_time())

    from trainer.optim import build_optimizer, build_scheduler

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    optimizer = build_optimizer(model, lr=LR, weight_decay=WEIGHT_DECAY, betas=BETAS, eps=EPS)
    scheduler = build_scheduler(
        optimizer, warmup_steps=warmup, total_steps=warmup + steps, min_lr_ratio=MIN_LR
    )
    clock = Clock()
    with tempfile.TemporaryDirectory(dir=WORK) as out:
        args = TrainingArguments(
            output_dir=out,
            max_steps=warmup + steps,
            per_device_train_batch_size=ROWS,
            max_grad_norm=CLIP,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=True,
            dataloader_num_workers=0,
            remove_unused_columns=False,
            seed=0,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=Rows(),
            callbacks=[clock],
            optimizers=(optimizer, scheduler),
        )
        trainer.remove_callback(PrinterCallback)  # keeps its log in memory, as ours writes a file
        trainer.train()
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    (w0, c0), (w1, c1) = clock.marks[warmup], clock.marks[warmup + steps]
    tokens = sum(b.tokens for b in data[warmup : warmup + steps])
    assert all(int((b.targets != IGNORE_INDEX).sum()) > 0 for b in data)
    return Timed(losses, tokens, w1 - w0, c1 - c0)


def fp8_from(log: Path, wait_s: float = 3600.0) -> dict[str, Any]:
    """bench/fp8.py's figures from its output, whose last line is its JSON object. A run that
    is still going (the last line is not JSON yet) is waited for, up to `wait_s` seconds."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            lines = log.read_text().strip().splitlines()
        except OSError as err:
            raise SystemExit(f"--fp8-from {log}: cannot read it ({err})") from None
        try:
            figures = json.loads(lines[-1]) if lines else None
        except json.JSONDecodeError:
            figures = None
        if isinstance(figures, dict):
            if figures.get("bench") != "fp8":
                raise SystemExit(f"--fp8-from {log}: its last line is not bench/fp8.py's JSON")
            return figures
        if time.monotonic() > deadline:
            raise SystemExit(f"--fp8-from {log}: no JSON line after {wait_s:.0f} s of waiting")
        print(f"  waiting for {log} to end with bench/fp8.py's JSON line ...", flush=True)
        time.sleep(30)


# ----------------------------------------------------------------------------------------------


def compare(
    name: str, kind: str, model_dir: Path, dataset: Any, warmup: int, steps: int, rounds: int
) -> dict[str, Any]:
    """Alternate ours and the anchor `rounds` times; each side's best round counts."""
    data = batches(dataset, warmup + steps)
    ours: list[Timed] = []
    anchor: list[Timed] = []
    for r in range(rounds):
        ours.append(run_ours(kind, model_dir, dataset, warmup, steps))
        anchor.append(run_trainer(model_dir, data, warmup, steps))
        print(
            f"  {name} round {r + 1}: ours {ours[-1].tokens_per_s:,.0f} tokens/s, "
            f"Trainer {anchor[-1].tokens_per_s:,.0f} tokens/s (load {os.getloadavg()[0]:.1f})",
            flush=True,
        )
    a, b = ours[0], anchor[0]
    first_rel = abs(a.losses[0] - b.losses[0]) / b.losses[0]
    if first_rel > 1e-4:
        raise SystemExit(
            f"{name}: the first step's losses differ ({a.losses[0]:.6f} ours, {b.losses[0]:.6f} "
            "Trainer): the two sides are not training the same thing"
        )
    curve_gap = max(abs(x - y) / y for x, y in zip(a.losses, b.losses, strict=True))
    best_ours = max(ours, key=lambda t: t.tokens_per_s)
    best_anchor = max(anchor, key=lambda t: t.tokens_per_s)
    return {
        "ours_tokens_per_s": rounded(best_ours.tokens_per_s, 1),
        "anchor_tokens_per_s": rounded(best_anchor.tokens_per_s, 1),
        "ratio": rounded(best_ours.tokens_per_s / best_anchor.tokens_per_s, 3),
        "ours_tokens_per_cpu_s": rounded(best_ours.tokens_per_cpu_s, 1),
        "anchor_tokens_per_cpu_s": rounded(best_anchor.tokens_per_cpu_s, 1),
        "cpu_ratio": rounded(best_ours.tokens_per_cpu_s / best_anchor.tokens_per_cpu_s, 3),
        "rounds_ours_tokens_per_s": [rounded(t.tokens_per_s, 1) for t in ours],
        "rounds_anchor_tokens_per_s": [rounded(t.tokens_per_s, 1) for t in anchor],
        "timed_tokens": best_ours.tokens,
        "first_loss": [rounded(a.losses[0], 5), rounded(b.losses[0], 5)],
        "first_loss_rel_diff": float(f"{first_rel:.2e}"),
        "max_loss_rel_diff": float(f"{curve_gap:.2e}"),
        "final_loss": [rounded(a.losses[-1], 4), rounded(b.losses[-1], 4)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few steps, under a minute")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per side")
    parser.add_argument("--rounds", type=int, default=None, help="alternations of the two sides")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, both sides")
    parser.add_argument(
        "--fp8-from",
        metavar="LOG",
        help="take fp8_loss_rel_err from the output of `python bench/fp8.py` (its last line; "
        "waits for a run still going) instead of training the FP8 and FP32 runs again here",
    )
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    warmup, steps, rounds = (2, 6, 1) if opts.quick else (3, 30, 2)
    steps, rounds = opts.steps or steps, opts.rounds or rounds
    WORK.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    began = time.perf_counter()
    mode = "quick" if opts.quick else "full"
    dataset, ours_dir, student_dir = prepare(WORK / mode, opts.quick)
    stats = dataset.stats()
    print(
        f"data: {stats.documents} documents in {stats.rows} rows of {SEQ_LEN}; {ROWS} rows a "
        f"step, {warmup} warm-up + {steps} timed steps per side, {rounds} round(s), "
        f"{opts.threads} thread(s)",
        flush=True,
    )
    results = {
        "deepseek_v3": compare(
            "DeepSeek-V3 tiny", "deepseek_v3", ours_dir, dataset, warmup, steps, rounds
        ),
        "student": compare("Qwen2 student", "hf", student_dir, dataset, warmup, steps, rounds),
    }
    print()
    print_table(
        [
            "model",
            "ours tokens/s",
            "Trainer tokens/s",
            "ratio",
            "CPU ratio",
            "first loss (ours / Trainer)",
            "max loss diff",
        ],
        [
            (
                name,
                f"{r['ours_tokens_per_s']:,.0f}",
                f"{r['anchor_tokens_per_s']:,.0f}",
                f"{r['ratio']:.2f}",
                f"{r['cpu_ratio']:.2f}",
                f"{r['first_loss'][0]:.5f} / {r['first_loss'][1]:.5f}",
                f"{100 * r['max_loss_rel_diff']:.3f}%",
            )
            for name, r in results.items()
        ],
    )
    if opts.fp8_from:
        fp8 = fp8_from(Path(opts.fp8_from))
        fp8_steps = fp8["train_steps"]
        print(f"\nFP8 against FP32, {fp8_steps} steps: taken from {opts.fp8_from}")
    else:
        from bench.fp8 import training as fp8_training

        fp8_steps, fp8_rows = (20, 2) if opts.quick else (300, 4)
        print(f"\nFP8 against FP32, {fp8_steps} steps of {fp8_rows} x 256 (bench/fp8.py's run):")
        fp8 = fp8_training(
            fp8_steps, fp8_rows, 256, control=False, quick=opts.quick, work=WORK / "fp8" / mode
        )
    print(
        f"held-out loss FP32 {fp8['eval_loss']['fp32']:.4f}, FP8 {fp8['eval_loss']['fp8']:.4f}: "
        f"fp8_loss_rel_err {100 * fp8['fp8_loss_rel_err']:.3f}%"
    )
    import transformers

    emit_json(
        {
            "bench": "train",
            "ratio": results["deepseek_v3"]["ratio"],
            "student_ratio": results["student"]["ratio"],
            "fp8_loss_rel_err": float(f"{fp8['fp8_loss_rel_err']:.3e}"),
            "fp8_steps": fp8_steps,
            "fp8_source": opts.fp8_from or "this run",
            "fp8_eval_loss": {k: rounded(v, 4) for k, v in fp8["eval_loss"].items()},
            "deepseek_v3": results["deepseek_v3"],
            "student": results["student"],
            "seq_len": SEQ_LEN,
            "rows_per_step": ROWS,
            "warmup_steps": warmup,
            "timed_steps": steps,
            "rounds": rounds,
            "threads": opts.threads,
            "quick": opts.quick,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "load_average": [rounded(load_before[0], 2), rounded(os.getloadavg()[0], 2)],
            "seconds": rounded(time.perf_counter() - began, 1),
        }
    )


if __name__ == "__main__":
    main()
