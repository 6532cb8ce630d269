"""The training run's typed config: one YAML file under `configs/`, loaded with `store.config`.

    from trainer.config import TrainConfig, load_train_config

    cfg = load_train_config("configs/pretrain-toy.yaml")
    cfg.optim.lr, cfg.loop.steps, cfg.data.source

Sections: `model` (what to build), `data` (which table version and how to render it),
`optim` (AdamW, warm-up + cosine, clipping), `loop` (steps, batch, accumulation, logging,
checkpoints), `eval` (held-out toy problems scored through the verifiers), `fp8` (optional:
DeepSeek-V3's FP8 recipe for the linear layers, `trainer.fp8.Float8Recipe`; `fp8: {}` is the
V3 recipe, no section trains in the parameters' own precision), `parallel` (how the run is
spread over processes: data, expert and pipeline parallelism; docs/parallel.md). Unknown keys
and wrong types are errors naming the file, line and key (docs/config.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from store.config import load_config
from store.store import StoreConfig
from trainer.fp8.recipe import Float8Recipe

# cold_start and rejection_sft are the R1 recipe's SFT stages (trainer.recipe): SFT by another
# name, so that the checkpoint says which stage made it.
Stage = Literal["pretrain", "sft", "distill", "cold_start", "rejection_sft"]
ScheduleName = Literal["1f1b", "dualpipev"]
SCHEDULE_NAMES: tuple[ScheduleName, ...] = ("1f1b", "dualpipev")
DataParallelMode = Literal["fsdp", "ddp"]


@dataclass(frozen=True)
class ModelConfig:
    """What the loop trains: a fresh DeepSeek-V3 from a preset, or a checkpoint directory
    (ours, or any transformers causal LM: `kind: hf`)."""

    kind: Literal["deepseek_v3", "hf"] = "deepseek_v3"
    # deepseek_v3 from scratch: a preset, optionally overridden by a YAML of ModelArgs fields
    # (the file `r1f model init --config` takes).
    preset: str | None = "tiny"
    args_file: str | None = None
    # Start from these weights instead (SFT, distillation, resuming a finished run elsewhere).
    checkpoint: str | None = None
    # hf from scratch: a transformers config.json (e.g. a small Qwen2 or Llama).
    hf_config: str | None = None
    # The tokenizer directory, when the model does not start from a checkpoint that has one
    # (a student from scratch takes its teacher's).
    tokenizer: str | None = None
    # Seed of a fresh model's initial weights; None: the run's seed. Lets two runs share data
    # order and differ only in their starting point (bench/fp8.py's run-to-run control).
    init_seed: int | None = None
    # Training constants; None keeps the model's own (config.json's mtp_loss_weight, ...).
    mtp_lambda: float | None = None
    bias_update_speed: float | None = None
    seq_aux_alpha: float | None = None

    def __post_init__(self) -> None:
        if self.kind == "hf" and self.checkpoint is None and self.hf_config is None:
            raise ValueError("kind hf needs checkpoint (a transformers directory) or hf_config")
        if self.kind == "deepseek_v3" and self.hf_config is not None:
            raise ValueError("hf_config is for kind: hf")


@dataclass(frozen=True)
class DataConfig:
    # `NAME@VERSION` (or `NAME`, the latest) in the store, or a release directory.
    source: str = ""
    seq_len: int = 256
    # Share of rows rendered with the R1 chat template; the rest as `prompt\ncompletion` text.
    chat_share: float = 1.0
    # Which tokens carry the loss: every token (pretraining) or the completion's (SFT).
    loss_on: Literal["all", "completion"] = "completion"
    only_kept: bool = True  # drop rows a filter rejected

    def __post_init__(self) -> None:
        if self.seq_len < 8:
            raise ValueError(f"seq_len must be >= 8, got {self.seq_len}")
        if not 0.0 <= self.chat_share <= 1.0:
            raise ValueError(f"chat_share must be in [0, 1], got {self.chat_share}")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-3
    # Cosine decay from lr to lr * min_lr_ratio over the steps after warm-up.
    min_lr_ratio: float = 0.1
    warmup_steps: int = 20
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global grad norm; 0 turns clipping off

    def __post_init__(self) -> None:
        if self.lr <= 0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError("lr must be > 0 and min_lr_ratio in [0, 1]")
        if self.warmup_steps < 0 or self.grad_clip < 0:
            raise ValueError("warmup_steps and grad_clip must be >= 0")


@dataclass(frozen=True)
class RunLoopConfig:
    """What every training loop shares (supervised and GRPO): how many steps, logging,
    checkpoints, evaluation, threads. Each loop adds how it batches."""

    steps: int = 100
    log_every: int = 10
    checkpoint_every: int = 100  # also at the end; 0: only at the end
    keep_checkpoints: int = 2
    eval_every: int = 0  # 0: evaluate before and after training only
    threads: int | None = None  # torch.set_num_threads; None leaves torch's default
    tensorboard: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}")


@dataclass(frozen=True)
class LoopConfig(RunLoopConfig):
    rows_per_micro_batch: int = 8  # packed rows of seq_len per forward
    grad_accum: int = 1  # micro-batches per optimizer step

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("rows_per_micro_batch", "grad_accum"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class EvalConfig:
    """Held-out toy problems; the CLI builds them (the trainer never imports generators)."""

    families: list[str] = field(default_factory=lambda: ["toy-arithmetic", "toy-countdown"])
    problems: int = 50  # per family
    difficulty: int = 1
    # Task seed of the problems: must differ from every seed the training data used.
    seed: int = 1000
    k: int = 8  # pass@k samples per problem
    temperature: float = 1.0
    max_tokens: int = 96
    # Template the problems are posed in: r1_zero = the chat template with the default system
    # text and `<think>` opened (the format R1-Zero's reward checks).
    template: Literal["r1_zero"] = "r1_zero"
    # Decoding a toy model is many tiny operators: a second thread only waits for the first
    # (and spins on a busy machine), so evaluation runs on one.
    threads: int | None = 1
    # Score the starting checkpoint too. A stage of the recipe can leave it off: the model it
    # starts from was scored with the same problems when the stage before it finished.
    before: bool = True

    def __post_init__(self) -> None:
        if self.problems < 0 or self.k < 1 or self.max_tokens < 1:
            raise ValueError("problems must be >= 0, k and max_tokens >= 1")


@dataclass(frozen=True)
class ParallelConfig:
    """How a run is spread over processes (`r1f train STAGE --nproc N`, N = dp x ep x pp).

    The layout changes where the step is computed, never what: the global batch is
    `loop.rows_per_micro_batch` x `loop.grad_accum` rows whatever the layout, each data rank
    (dp x ep of them) reading its share of every micro-batch, and losses are normalised by
    the step's counts over all of them (trainer.parallel.training). Left out, dp is what the
    launch leaves: N / (ep x pp) (`for_processes`), so `--nproc N` alone is N-way data
    parallelism."""

    dp: int | None = None  # data-parallel replicas; None: the processes ep x pp leave over
    ep: int = 1  # expert-parallel ranks (also data parallel for the dense parameters)
    pp: int = 1  # pipeline ranks
    schedule: ScheduleName = "1f1b"  # pipeline schedule when pp > 1
    # Pipeline micro-batches per step (pp > 1): the data rank's rows of the step are split
    # into this many; None takes loop.grad_accum (one per loop micro-batch).
    microbatches: int | None = None
    # How the data group shares the model: FSDP2 shards it, DDP replicates it. None: fsdp for
    # our DeepSeek-V3, ddp for a transformers model (model.kind: hf), which FSDP here leaves.
    data_parallel: DataParallelMode | None = None
    # DualPipeV only: run each overlapped pair (one micro-batch's forward, another's backward)
    # concurrently instead of one after the other; see trainer/parallel/overlap.py.
    overlap: bool = False
    # A collective that waits longer than this fails the run (ranks wait for rank 0 while it
    # evaluates and writes checkpoints).
    timeout_s: float = 1800.0

    def __post_init__(self) -> None:
        for name in ("dp", "ep", "pp"):
            value = getattr(self, name)
            if name == "dp" and value is None:
                continue
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.microbatches is not None and self.microbatches < 1:
            raise ValueError(f"microbatches must be >= 1, got {self.microbatches}")
        if self.microbatches is not None and self.pp == 1:
            raise ValueError(
                "microbatches splits a pipeline's step (pp > 1); without a pipeline, "
                "accumulate with loop.grad_accum"
            )
        if self.schedule not in SCHEDULE_NAMES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULE_NAMES)}")
        if self.data_parallel not in (None, "fsdp", "ddp"):
            raise ValueError(f"data_parallel must be fsdp or ddp, got {self.data_parallel!r}")
        if self.overlap and (self.schedule != "dualpipev" or self.pp == 1):
            raise ValueError("overlap needs schedule: dualpipev and pp > 1")
        if self.overlap and self.data_parallel != "ddp" and self.data_size > 1:
            raise ValueError(
                "overlap with FSDP: its gathers and reductions from the overlapped forward and "
                "backward would share one process group; use data_parallel: ddp"
            )
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")

    def for_processes(self, world_size: int) -> ParallelConfig:
        """This layout over `world_size` processes, dp filled in when left out; ValueError
        saying why when they cannot make it."""
        per_replica = self.ep * self.pp
        if self.dp is None and world_size % per_replica == 0:
            return replace(self, dp=world_size // per_replica)
        if self.dp is None:
            raise ValueError(
                f"not a multiple of ep {self.ep} x pp {self.pp} = {per_replica} (the processes "
                f"of one data replica); use a multiple of {per_replica}"
            )
        if self.world_size != world_size:
            raise ValueError(
                f"the layout dp {self.dp} x ep {self.ep} x pp {self.pp} needs "
                f"{self.world_size} processes; use {self.world_size} or change parallel"
            )
        return self

    @property
    def dp_size(self) -> int:
        """Data-parallel replicas (1 when dp is left out and nothing filled it in)."""
        return self.dp or 1

    @property
    def world_size(self) -> int:
        return self.pp * self.dp_size * self.ep

    @property
    def data_size(self) -> int:
        return self.dp_size * self.ep

    @property
    def stages(self) -> int:
        """Pipeline stages: one per pipeline rank (1F1B), two (DualPipeV's V)."""
        return self.pp * (2 if self.schedule == "dualpipev" and self.pp > 1 else 1)


@dataclass(frozen=True)
class TrainConfig:
    stage: Stage = "pretrain"
    seed: int = 0
    out_dir: str = "work/runs/train"
    store: StoreConfig = field(default_factory=StoreConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # Swap the model's nn.Linear layers for FP8 ones before the optimizer is built
    # (`convert_to_fp8`); None: no FP8.
    fp8: Float8Recipe | None = None
    parallel: ParallelConfig = field(default_factory=ParallelConfig)


def load_train_config(path: str | os.PathLike[str]) -> TrainConfig:
    return load_config(Path(path), TrainConfig)
