"""The training loop for pretraining, SFT and distillation, and the run around it.

    summary = run_training(cfg, tokenizer_dir=..., eval_problems=problems, resume=True)

A run is: model building -> optional transforms -> loop.

- `build_model(cfg.model, vocab_size, seed)` gives a `TrainableModel` (trainer.adapters):
  our DeepSeek-V3 from a preset or a checkpoint, or a transformers causal LM.
- `transforms` are callables `nn.Module -> nn.Module` applied to `model.module` before the
  optimizer is built: FP8 (`lambda m: convert_to_fp8(m, recipe)`, swapping nn.Linear in
  place) and data-parallel wrappers plug in here without touching the loop. A config's
  `fp8:` section becomes the first transform (`config_transforms`), so the FP8 swap happens
  before any wrapper the caller passes.
- `train_step` is one optimizer step: forward and backward over the micro-batches (losses
  normalised by the whole step's token counts, so accumulation is exact), global-norm
  clipping, AdamW, the schedule, then the router-bias update from the step's summed expert
  load. `train_loop` repeats it, logging, checkpointing and evaluating on schedule.

Every piece (optimizer, schedule, checkpoints, metrics, the step) is a separate function so
the GRPO loop reuses them.

What it promises: a run killed at any moment and resumed with `resume=True` continues from
its latest complete checkpoint and writes the same losses, bit for bit on the CPU in fp32,
as the run that was never interrupted (tests/trainer/test_resume.py kills a real process).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from store.config import config_hash, config_to_dict
from trainer.adapters import DeepSeekV3Model, HFCausalLM, TrainableModel, step_expert_load
from trainer.config import EvalConfig, ModelConfig, TrainConfig
from trainer.data import (
    Batch,
    BatchStream,
    DataSource,
    DataSpec,
    PackedDataset,
    TokenizedRows,
    open_rows,
)
from trainer.evaluate import EvalProblem, EvalReport, evaluate, hf_sampler_for, sampler_for
from trainer.metrics import MetricsLog, Progress, plot_losses
from trainer.optim import build_optimizer, build_scheduler
from trainer.placement import SavedState, place
from trainer.tokenizer import R1Tokenizer
from trainer.train_state import (
    CHECKPOINTS,
    latest_checkpoint,
    load_training_state,
    remove_partials,
    save_training_checkpoint,
)

if TYPE_CHECKING:
    from store.store import Store

Transform = Callable[[nn.Module], nn.Module]
SUMMARY_FILE = "train_summary.json"
# The training rows, copied once into a memory-mapped file (trainer.data.open_rows).
DATA_CACHE = "data"
LOSS_PLOT = "loss.png"
# Files a training checkpoint holds besides the model; not copied into the published model.
# (A GRPO checkpoint adds its KL reference's weights once they differ from the parent's.)
_STATE_FILES = {
    "optimizer.safetensors",
    "rng.safetensors",
    "trainer_state.json",
    "reference.safetensors",
}


class TrainError(ValueError):
    """A run that cannot start, with what to do about it."""


# ----------------------------------------------------------------------------------------------
# Model building


def build_model(cfg: ModelConfig, vocab_size: int, seed: int) -> TrainableModel:
    """The model a run trains, seeded (by `cfg.init_seed` when set, else `seed`): the same
    config and seed give the same weights."""
    torch.manual_seed(seed if cfg.init_seed is None else cfg.init_seed)
    if cfg.kind == "hf":
        return HFCausalLM(_build_hf(cfg, vocab_size))
    from trainer.checkpoint import load_checkpoint
    from trainer.init import model_args
    from trainer.model import MoE, Transformer

    if cfg.checkpoint is not None:
        model, _ = load_checkpoint(cfg.checkpoint)
        if cfg.seq_aux_alpha is not None:
            for module in model.modules():
                if isinstance(module, MoE):
                    module.seq_aux_alpha = cfg.seq_aux_alpha
    else:
        args = model_args(cfg.preset, cfg.args_file)
        if vocab_size > args.vocab_size:
            args = args.replace(vocab_size=vocab_size)
        if cfg.seq_aux_alpha is not None:
            args = args.replace(seq_aux_alpha=cfg.seq_aux_alpha)
        model = Transformer(args)
    return DeepSeekV3Model(
        model, mtp_lambda=cfg.mtp_lambda, bias_update_speed=cfg.bias_update_speed
    )


def _build_hf(cfg: ModelConfig, vocab_size: int) -> nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    if cfg.checkpoint is not None:
        return AutoModelForCausalLM.from_pretrained(cfg.checkpoint, dtype=torch.float32)
    assert cfg.hf_config is not None
    settings = json.loads(Path(cfg.hf_config).read_text())
    config = AutoConfig.for_model(settings.pop("model_type"), **settings)
    if vocab_size > config.vocab_size:
        config.vocab_size = vocab_size
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def config_transforms(cfg: TrainConfig) -> list[Transform]:
    """The transforms the config itself asks for, applied before the caller's: the FP8 swap
    (`fp8:` section). It converts `nn.Linear` layers in place, so it must come before a
    wrapper (DDP, FSDP) hides them."""
    if cfg.fp8 is None:
        return []
    from trainer.fp8 import convert_to_fp8

    recipe = cfg.fp8

    def to_fp8(module: nn.Module) -> nn.Module:
        try:
            return convert_to_fp8(module, recipe)
        except ValueError as err:  # e.g. keep_high_precision naming no layer
            raise TrainError(f"fp8: {err}") from None

    return [to_fp8]


def load_weights(model: TrainableModel, checkpoint: Path) -> None:
    """Put a checkpoint's weights into the already-built model (resume)."""
    if isinstance(model, DeepSeekV3Model):
        from trainer.checkpoint import load_checkpoint

        loaded, _ = load_checkpoint(checkpoint)
        model.base.load_state_dict(loaded.state_dict())
    else:
        from transformers import AutoModelForCausalLM

        loaded_hf = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float32)
        model.base.load_state_dict(loaded_hf.state_dict())


# ----------------------------------------------------------------------------------------------
# One optimizer step


@dataclass(frozen=True)
class StepResult:
    step: int  # optimizer steps done after this one
    loss: float  # main next-token loss per scored token
    mtp_loss: float | None  # MTP loss per scored position, averaged over depths
    aux_loss: float
    lr: float
    grad_norm: float
    tokens: int  # input positions holding a document token (padding left out)
    scored: int
    seconds: float
    max_violation: float | None  # the worst router's MaxVio over the step
    violations: dict[str, float] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "violations" and v is not None}
        out["tokens_per_s"] = self.tokens / self.seconds if self.seconds > 0 else 0.0
        return {"kind": "train", **out}


def train_step(
    model: TrainableModel,
    micro_batches: Sequence[Batch],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    *,
    step: int,
    grad_clip: float,
) -> StepResult:
    """Forward/backward over the micro-batches, clip, AdamW, schedule, router-bias update.

    Distributed (trainer.parallel.training), `micro_batches` are this rank's share of the
    step's; the counts and the logged sums are the whole step's on every rank."""
    started = time.perf_counter()
    local: dict[str, float] = {}
    for batch in micro_batches:
        for key, n in model.count_targets(batch).items():
            local[key] = local.get(key, 0) + n
    counts = {key: int(n) for key, n in model.sum_over_ranks(local).items()}
    lr = float(optimizer.param_groups[0]["lr"])
    optimizer.zero_grad(set_to_none=True)
    parts = model.forward_backward(micro_batches, counts)
    grad_norm = model.clip_grad_norm(grad_clip)
    optimizer.step()
    scheduler.step()
    load = step_expert_load(parts)
    violations = model.after_step(load)
    sums: dict[str, float] = {"tokens": sum(b.tokens for b in micro_batches)}
    for part in parts:
        for key, value in part.sums.items():
            sums[key] = sums.get(key, 0.0) + value
    sums = model.sum_over_ranks(sums)
    depths = sorted(k for k in counts if k.startswith("mtp"))
    mtp = [sums[k] / max(counts[k], 1) for k in depths if k in sums]
    return StepResult(
        step=step + 1,
        loss=sums["lm"] / max(counts["lm"], 1),
        mtp_loss=sum(mtp) / len(mtp) if mtp else None,
        aux_loss=sums.get("aux", 0.0) / len(micro_batches),
        lr=lr,
        grad_norm=grad_norm,
        tokens=int(sums["tokens"]),
        scored=counts["lm"],
        seconds=time.perf_counter() - started,
        # From the routers' step load (summed over ranks, every pipeline stage's routers).
        max_violation=max(violations.values(), default=None),
        violations=violations,
    )


# ----------------------------------------------------------------------------------------------
# The loop


@dataclass
class LoopHooks:
    """What the loop calls besides the step; each may be None."""

    checkpoint: Callable[[int], None] | None = None  # (steps done)
    evaluate: Callable[[int], None] | None = None  # (steps done); logs its own record
    log: MetricsLog | None = None
    progress: Progress | None = None


def train_loop(
    model: TrainableModel,
    stream: BatchStream,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    *,
    start_step: int,
    total_steps: int,
    grad_accum: int,
    grad_clip: float,
    log_every: int,
    checkpoint_every: int,
    eval_every: int,
    hooks: LoopHooks,
    device: torch.device | str = "cpu",
) -> list[StepResult]:
    """Steps start_step+1 .. total_steps; returns their results. Checkpoints every
    `checkpoint_every` steps and at the end; evaluates every `eval_every` steps (0: never
    here; the run evaluates before and after)."""
    model.module.train()
    results = []
    for step in range(start_step, total_steps):
        micro = [stream.next().to(device) for _ in range(grad_accum)]
        result = train_step(model, micro, optimizer, scheduler, step=step, grad_clip=grad_clip)
        results.append(result)
        done = result.step
        if hooks.log is not None and (done % log_every == 0 or done == total_steps):
            record = result.record()
            record.update(result.violations)
            hooks.log.write(record)
        if hooks.progress is not None:
            hooks.progress.update(done, result.tokens, result.loss)
        if hooks.evaluate is not None and eval_every > 0 and done % eval_every == 0:
            hooks.evaluate(done)
            model.module.train()
        if hooks.checkpoint is not None and (
            done == total_steps or (checkpoint_every > 0 and done % checkpoint_every == 0)
        ):
            hooks.checkpoint(done)
    return results


# ----------------------------------------------------------------------------------------------
# The run


@dataclass
class TrainSummary:
    out_dir: Path
    steps: int
    resumed_from: int | None
    data: DataSource
    seconds: float  # the whole run: data, model, evaluation, checkpoints
    train_seconds: float  # the optimizer steps alone
    cpu_seconds: float  # CPU time of the process, all threads (less sensitive to a busy machine)
    tokens: int
    final_loss: float | None
    eval_before: EvalReport | None
    eval_after: EvalReport | None
    # The rows this process packed and trained on (documents, rows, tokens, scored, padding,
    # truncated), and the table's document count.
    packing: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "steps": self.steps,
            "resumed_from": self.resumed_from,
            "data": self.data.to_dict(),
            "seconds": self.seconds,
            "train_seconds": self.train_seconds,
            "cpu_seconds": self.cpu_seconds,
            "tokens": self.tokens,
            "tokens_per_s": self.tokens / self.train_seconds if self.train_seconds > 0 else 0.0,
            "final_loss": self.final_loss,
            "eval_before": self.eval_before.to_dict() if self.eval_before else None,
            "eval_after": self.eval_after.to_dict() if self.eval_after else None,
            "packing": self.packing,
        }


def run_training(
    cfg: TrainConfig,
    *,
    tokenizer_dir: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    eval_problems: Sequence[EvalProblem] = (),
    transforms: Sequence[Transform] = (),
    say: Callable[[str], None] = print,
) -> TrainSummary:
    """Train as `cfg` says and publish the model in `out_dir` (Hugging Face layout, with its
    checkpoints, metrics.jsonl and tensorboard/ beside it).

    tokenizer_dir: the tokenizer to train with; by default the starting checkpoint's.
    resume: continue from the latest complete checkpoint under out_dir (a fresh start when
    there is none). eval_problems: held-out problems scored before and after (and every
    `loop.eval_every` steps) through the verifiers.

    Distributed (`cfg.parallel` spreads the run over dp x ep x pp processes, and every rank
    calls this function inside the process group, e.g. under `r1f train --nproc N`): every
    rank trains its part, rank 0 alone writes files, logs, progress and evaluations, and the
    result is the same as the single-process run's (docs/parallel.md)."""
    started, cpu_started = time.perf_counter(), time.process_time()
    out = Path(out_dir or cfg.out_dir)
    if cfg.loop.threads is not None:
        torch.set_num_threads(cfg.loop.threads)
    placement = place(cfg)
    writer = placement.rank == 0
    if not writer:
        say = _silent
    tok_dir = Path(tokenizer_dir or cfg.model.tokenizer or cfg.model.checkpoint or "")
    if not (tok_dir / "tokenizer.json").is_file():
        raise TrainError(
            f"no tokenizer.json in {tok_dir or '(none given)'}: pass a tokenizer directory or "
            "start from a checkpoint that carries one"
        )
    tokenizer = R1Tokenizer.from_dir(tok_dir)

    from store.store import Store

    store = Store.from_config(cfg.store)
    source, table = open_rows(
        cfg.data.source, store, only_kept=cfg.data.only_kept, cache_dir=out / DATA_CACHE
    )
    spec = DataSpec(loss_on=cfg.data.loss_on, chat_share=cfg.data.chat_share, seed=cfg.seed)
    dataset = PackedDataset(
        TokenizedRows(table, tokenizer, spec), cfg.data.seq_len, cfg.seed, tokenizer.pad_id
    )
    say(
        f"data {source.ref} ({source.content_hash[:12]}): {len(dataset):,} documents, "
        f"tokenized and packed into rows of {cfg.data.seq_len} as training reaches them"
    )

    model = build_model(cfg.model, tokenizer.vocab_size, cfg.seed)
    if writer:
        remove_partials(out)
        if not resume:  # a fresh start must never pick up an older run's checkpoints
            shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    placement.barrier()  # every rank looks for the checkpoint after rank 0 has cleaned up
    checkpoint = latest_checkpoint(out) if resume else None
    if checkpoint is not None:
        load_weights(model, checkpoint)
    for transform in [*config_transforms(cfg), *transforms]:
        model.module = transform(model.module)
    model = placement.distribute(model)
    optimizer = build_optimizer(
        model.module,
        lr=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay,
        betas=(cfg.optim.beta1, cfg.optim.beta2),
        eps=cfg.optim.eps,
    )
    scheduler = build_scheduler(
        optimizer,
        warmup_steps=cfg.optim.warmup_steps,
        total_steps=cfg.loop.steps,
        min_lr_ratio=cfg.optim.min_lr_ratio,
    )
    # What checkpoints read and write: the optimizer state laid out as one process holds it,
    # whatever the layout, so a checkpoint resumes under any other layout.
    optimizer_state = placement.optimizer_state(optimizer)
    start_step, data_state = 0, None
    if checkpoint is not None:
        point = load_training_state(checkpoint, optimizer=optimizer_state, scheduler=scheduler)
        start_step, data_state = point.step, point.data
        say(f"resuming from {checkpoint} (step {start_step})")
    stream = placement.stream(dataset, cfg.loop.rows_per_micro_batch, data_state)

    metadata = _metadata(cfg, source, tokenizer)
    log = (
        MetricsLog(
            out, tensorboard=cfg.loop.tensorboard, resume_step=start_step if checkpoint else None
        )
        if writer
        else None
    )

    def save_checkpoint(step: int) -> None:
        whole = placement.whole_model(model)  # every rank takes part; rank 0 gets it
        state = optimizer_state.state_dict()
        if whole is not None:
            save_training_checkpoint(
                out,
                step,
                save_model=lambda d: whole.save(
                    d, tokenizer_dir=tok_dir, extra_config={**metadata, "r1f_step": step}
                ),
                optimizer=SavedState(state),
                scheduler=scheduler,
                data=stream.state(),
                metadata=metadata,
                keep=cfg.loop.keep_checkpoints,
            )
        placement.barrier()

    def run_eval(step: int) -> EvalReport | None:
        if not eval_problems:
            return None
        model.module.eval()
        whole = placement.whole_model(model)
        report = None
        if whole is not None:
            report = evaluate_model(whole, tokenizer, eval_problems, cfg.eval)
            assert log is not None
            log.write({"kind": "eval", "step": step, **report.summary()})
        placement.barrier()
        return report

    before = run_eval(0) if checkpoint is None and cfg.eval.before else None
    hooks = LoopHooks(
        checkpoint=save_checkpoint,
        evaluate=_eval_hook(run_eval) if eval_problems else None,
        log=log,
        progress=Progress(cfg.loop.steps, start_step) if cfg.loop.progress and writer else None,
    )
    try:
        results = train_loop(
            model,
            stream,
            optimizer,
            scheduler,
            start_step=start_step,
            total_steps=cfg.loop.steps,
            grad_accum=cfg.loop.grad_accum,
            grad_clip=cfg.optim.grad_clip,
            log_every=cfg.loop.log_every,
            checkpoint_every=cfg.loop.checkpoint_every,
            eval_every=cfg.loop.eval_every,
            hooks=hooks,
        )
        if start_step >= cfg.loop.steps and latest_checkpoint(out) is None:
            save_checkpoint(start_step)
        if writer:
            final = latest_checkpoint(out)
            assert final is not None
            publish_model(final, out)
            plot_losses(out, out / LOSS_PLOT)
        after = run_eval(cfg.loop.steps)
        seconds = time.perf_counter() - started
        tokens = sum(r.tokens for r in results)
        train_seconds = sum(r.seconds for r in results)
        if log is not None:
            log.write(
                {
                    "kind": "run",
                    "step": cfg.loop.steps,
                    "seconds": seconds,
                    "train_seconds": train_seconds,
                    "cpu_seconds": time.process_time() - cpu_started,
                    "tokens": tokens,
                    "tokens_per_s": tokens / train_seconds if train_seconds > 0 else 0.0,
                    "load_average": os.getloadavg()[0],
                }
            )
    finally:
        if log is not None:
            log.close()
    if writer:
        record_use(store, source, out, cfg.stage, cfg.loop.steps, metadata["r1f_config_hash"])
    summary = TrainSummary(
        out_dir=out,
        steps=cfg.loop.steps,
        resumed_from=start_step if checkpoint is not None else None,
        data=source,
        seconds=seconds,
        train_seconds=train_seconds,
        cpu_seconds=time.process_time() - cpu_started,
        tokens=tokens,
        final_loss=results[-1].loss if results else None,
        eval_before=before,
        eval_after=after,
        packing={"table_documents": len(dataset), **asdict(dataset.produced)},
    )
    placement.barrier()  # every rank is done with the rows before their copy goes
    if writer:
        # The copy of the rows is only for resuming; a finished run does not need it.
        shutil.rmtree(out / DATA_CACHE, ignore_errors=True)
        # Written last: its presence says the run finished and the model in out_dir is final.
        tmp = out / f".{SUMMARY_FILE}.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
        tmp.replace(out / SUMMARY_FILE)
        # Best-effort, and only when a Prefect API is configured (store.events): triggers react.
        from store.events import checkpoint_created

        checkpoint_created(out.resolve().name, str(out.resolve()), cfg.stage, cfg.loop.steps)
    placement.barrier()  # no rank leaves before the run is published
    return summary


def record_use(
    store: Store, source: DataSource, out: Path, stage: str, steps: int, config_hash: str
) -> None:
    """Note in the store that the model in `out` trained on `source` (`r1f datasets usage`);
    a release directory read without a store records nothing."""
    if source.store is None:
        return
    from store.usage import ModelUse, record_model_use

    record_model_use(
        store,
        ModelUse(
            table=source.table,
            version=source.version,
            content_hash=source.content_hash,
            model=str(out.resolve()),
            stage=stage,
            steps=steps,
            config_hash=config_hash,
        ),
    )


def _silent(line: str) -> None:
    return None


def evaluate_model(
    model: TrainableModel,
    tokenizer: R1Tokenizer,
    problems: Sequence[EvalProblem],
    cfg: EvalConfig,
) -> EvalReport:
    """Score the model as it is now on held-out problems (`trainer.evaluate`), in eval mode on
    `cfg.threads` threads; the caller puts it back in train mode."""
    model.module.eval()
    threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        return evaluate(
            sampler_for(model.base, tokenizer)
            if isinstance(model, DeepSeekV3Model)
            else hf_sampler_for(model.base, tokenizer),
            problems,
            k=cfg.k,
            temperature=cfg.temperature,
            max_tokens=cfg.max_tokens,
            seed=cfg.seed,
        )
    finally:
        torch.set_num_threads(threads)


def _eval_hook(run_eval: Callable[[int], EvalReport | None]) -> Callable[[int], None]:
    def hook(step: int) -> None:
        run_eval(step)  # it writes its own eval record

    return hook


def _metadata(cfg: TrainConfig, source: DataSource, tokenizer: R1Tokenizer) -> dict[str, Any]:
    """What a checkpoint says about its origin (config.json keys `r1f_*`, and the state file)."""
    parent = None
    if cfg.model.checkpoint is not None:
        from trainer.init import checkpoint_hash

        parent = {"path": cfg.model.checkpoint, "hash": checkpoint_hash(cfg.model.checkpoint)}
    return {
        "bos_token_id": tokenizer.bos_id,
        "eos_token_id": tokenizer.eos_id,
        "pad_token_id": tokenizer.pad_id,
        "r1f_stage": cfg.stage,
        "r1f_seed": cfg.seed,
        "r1f_data": source.to_dict(),
        "r1f_parent": parent,
        "r1f_config_hash": config_hash(cfg),
        "r1f_config": config_to_dict(cfg),
    }


def publish_model(checkpoint: Path, out_dir: Path) -> None:
    """Copy a checkpoint's model files (not its optimizer and RNG state) into `out_dir`, each
    file written beside its target and renamed over it, config.json last: a reader never sees a
    config.json whose weights are not all there."""
    files = sorted(
        (f for f in checkpoint.iterdir() if f.is_file() and f.name not in _STATE_FILES),
        key=lambda f: f.name == "config.json",
    )
    for stale in out_dir.glob("model*.safetensors*"):
        if not (checkpoint / stale.name).exists():
            stale.unlink()
    for f in files:
        tmp = out_dir / f".{f.name}.tmp-{os.getpid()}"
        shutil.copy2(f, tmp)
        tmp.replace(out_dir / f.name)
