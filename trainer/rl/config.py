"""A GRPO run's typed config: one YAML file under `configs/`, loaded with `store.config`.

    from trainer.rl.config import GRPOConfig, load_grpo_config

    cfg = load_grpo_config("configs/r1-zero-toy.yaml")
    cfg.rollout.group_size, cfg.loss.aggregation, cfg.rewards.weights

The sections the supervised loop has are the same here (`store`, `model`, `optim`, `eval`;
`loop` without the packing fields): a GRPO run is the training loop with rollouts in place of
a data stream. What is new:

- `prompts`: the table version of RL prompts (Sample rows carrying `prompt`, `gold`,
  `domain`, `track`, `language`) and the template they are posed in;
- `rollout`: how many prompts a step, G samples each, and how they are sampled;
- `loss`: GRPO's loss by name and scalar (`trainer.rl.core`), how many optimisation passes
  over each rollout batch and in what mini-batches, where the old log-probs come from;
- `reference`: how often the KL reference becomes the current policy;
- `rewards`: the rule rewards by name and weight (`trainer.rl.rewards`), and their workers.

Unknown keys and wrong types are errors naming the file, line and key (docs/config.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from store.config import load_config
from store.store import StoreConfig
from trainer.config import EvalConfig, ModelConfig, OptimConfig, RunLoopConfig
from trainer.rl.core import KL_ESTIMATORS, LOSS_AGGREGATIONS

# What a GRPO checkpoint calls its stage (config.json `r1f_stage`): plain GRPO, or one of the
# R1 recipe's RL stages run through the same loop.
RLStage = Literal["grpo", "r1_zero", "reasoning_rl", "final_rl"]
REWARD_NAMES = ("accuracy", "format", "language", "length", "repetition")


@dataclass(frozen=True)
class PromptsConfig:
    # `NAME@VERSION` (or `NAME`, the latest) in the store, or a release directory: rows with
    # `prompt`, `gold`, `domain`, `track`, `language`. Flows writes the toy prompts there.
    source: str = ""
    # r1_zero: the chat template with the default system text and the assistant turn opened
    # with `<think>` (`<think></think>` for the non-reasoning track), as evaluation poses them.
    template: Literal["r1_zero"] = "r1_zero"


@dataclass(frozen=True)
class RolloutConfig:
    prompts_per_step: int = 16
    group_size: int = 8  # G samples per prompt
    max_tokens: int = 64  # the response horizon
    temperature: float = 1.0
    top_p: float = 1.0
    # MTP speculative decoding for rollouts: the same samples' distribution, fewer forwards
    # while the MTP module still drafts well (GRPO does not train it).
    mtp: bool = False
    max_batch_rows: int = 128  # samples decoded together

    def __post_init__(self) -> None:
        for name in ("prompts_per_step", "group_size", "max_tokens", "max_batch_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 for GRPO rollouts, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass(frozen=True)
class LossConfig:
    clip_low: float = 0.2  # ratio clipped to [1 - clip_low, 1 + clip_high]
    clip_high: float = 0.2  # DAPO's clip-higher: 0.28
    beta: float = 0.0  # KL weight; 0 needs no reference model
    kl_estimator: str = "k3"  # k1, k2, k3 (DeepSeekMath's and R1's)
    kl_ratio_weighted: bool = False  # KL x ratio (DeepSeek-V3.2, TRL's default)
    # seq-mean-token-mean (R1), token-mean (DAPO), seq-mean-token-sum-norm (Dr. GRPO).
    aggregation: str = "seq-mean-token-mean"
    scale_by_std: bool = True  # False: Dr. GRPO's advantages without the std
    std_eps: float = 1e-6
    # Optimisation passes over each rollout batch (GRPO's mu); each pass is cut into
    # mini-batches of `minibatch_rows` rows, one optimizer step each (0: the whole batch).
    updates_per_batch: int = 1
    minibatch_rows: int = 0
    # Rows per forward inside a mini-batch (memory; 0: the whole mini-batch). Gradients
    # accumulate exactly: every forward's loss is divided by its mini-batch's denominator.
    microbatch_rows: int = 0
    # The log-probs of the policy that sampled: the sampler's own (equal to the training
    # forward in fp32 to rounding) or a recomputed training forward. A model whose training
    # forward differs from the sampler's on purpose (FP8) always recomputes.
    old_logprobs: Literal["sampler", "recompute"] = "sampler"

    def __post_init__(self) -> None:
        if self.clip_low < 0 or self.clip_high < 0 or self.clip_low >= 1:
            raise ValueError("clip_low must be in [0, 1) and clip_high >= 0")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(
                f"kl_estimator {self.kl_estimator!r}: choose one of {sorted(KL_ESTIMATORS)}"
            )
        if self.aggregation not in LOSS_AGGREGATIONS:
            raise ValueError(
                f"aggregation {self.aggregation!r}: choose one of {sorted(LOSS_AGGREGATIONS)}"
            )
        if self.updates_per_batch < 1:
            raise ValueError(f"updates_per_batch must be >= 1, got {self.updates_per_batch}")
        if self.minibatch_rows < 0 or self.microbatch_rows < 0 or self.std_eps < 0:
            raise ValueError("minibatch_rows, microbatch_rows and std_eps must be >= 0")


@dataclass(frozen=True)
class ReferenceConfig:
    # The reference becomes the current policy every this many GRPO steps (R1 does so
    # periodically); 0: it stays the starting checkpoint. Only used when loss.beta > 0.
    refresh_every: int = 0

    def __post_init__(self) -> None:
        if self.refresh_every < 0:
            raise ValueError(f"refresh_every must be >= 0, got {self.refresh_every}")


@dataclass(frozen=True)
class RewardsConfig:
    # Reward name -> weight; the sample's reward is the weighted sum. Names: accuracy, format,
    # language, length, repetition (trainer.rl.rewards). A sample for which any weighted
    # reward cannot be computed is masked, never scored 0.
    weights: dict[str, float] = field(default_factory=lambda: {"accuracy": 1.0, "format": 1.0})
    language: str = "en"  # target language when a prompt row carries none
    length_buffer_tokens: int = 16  # DAPO's soft overlong buffer (the horizon is max_tokens)
    repetition_ngram: int = 4
    math_workers: int = 1
    math_timeout: float = 5.0  # seconds per check, enforced by the worker pool
    sandbox_workers: int = 0  # 0: no sandbox; code prompts are then unverifiable
    code_timeout: float = 10.0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.weights) - set(REWARD_NAMES))
        if unknown:
            raise ValueError(f"weights: unknown reward {unknown[0]!r}; known: {REWARD_NAMES}")
        if not any(w != 0 for w in self.weights.values()):
            raise ValueError("weights: at least one reward needs a non-zero weight")
        if self.math_workers < 1 or self.sandbox_workers < 0:
            raise ValueError("math_workers must be >= 1 and sandbox_workers >= 0")
        if self.math_timeout <= 0 or self.code_timeout <= 0:
            raise ValueError("math_timeout and code_timeout must be > 0")
        if self.length_buffer_tokens < 1 or self.repetition_ngram < 1:
            raise ValueError("length_buffer_tokens and repetition_ngram must be >= 1")


@dataclass(frozen=True)
class GRPOConfig:
    stage: RLStage = "grpo"
    seed: int = 0
    out_dir: str = "work/runs/grpo"
    store: StoreConfig = field(default_factory=StoreConfig)
    # The policy's starting checkpoint (`model.checkpoint`, required; ours: deepseek_v3).
    model: ModelConfig = field(default_factory=ModelConfig)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    rewards: RewardsConfig = field(default_factory=RewardsConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4, warmup_steps=0))
    # loop.steps counts GRPO steps (one rollout batch each), not optimizer steps.
    loop: RunLoopConfig = field(default_factory=RunLoopConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if self.model.kind != "deepseek_v3" or self.model.checkpoint is None:
            raise ValueError(
                "model: GRPO starts from one of our checkpoints: set model.checkpoint "
                "(kind deepseek_v3)"
            )


def load_grpo_config(path: str | os.PathLike[str]) -> GRPOConfig:
    return load_config(Path(path), GRPOConfig)
