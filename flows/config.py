"""The run config: one YAML file per run, one typed section per part of the recipe.

Each section's schema lives with the package it configures (`StoreConfig` in
`store`); a section appears here once its stage is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from filters.pipeline import FilterRunConfig
from generators.generate import GenerateConfig, PromptsConfig
from store.config import load_config
from store.store import StoreConfig
from verifiers.judge import JudgeConfig


@dataclass(frozen=True)
class DemoConfig:
    """Where `r1f demo` writes what is not in the store (the release, the recipe's runs go
    to `recipe.runs_dir`); the demo owns this directory and clears it first."""

    out_dir: str = field(default="work/demo", metadata={"path": True})


@dataclass(frozen=True)
class FlowsConfig:
    """How the Prefect flows fan work out (docs/flows.md).

    `process`: a bounded pool of worker processes on this machine (one backend, one loaded
    model, per worker). `ray`: Ray tasks through prefect-ray, on the cluster at `ray_address`
    (or a local Ray started for the run when null). An `openai` generation backend always runs
    its shards on threads of the flow's own process, sharing one client: its concurrency and
    rate limit are the run's, not each worker's.
    """

    executor: Literal["process", "ray"] = "process"
    workers: int = 2
    ray_address: str | None = None  # e.g. ray://head:10001; null: a local Ray

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")


@dataclass(frozen=True)
class RecipeConfig:
    """The R1 recipe as the `r1_recipe` flow runs it (stages that exist today; docs/flows.md).

    The teacher that generates is the newest checkpoint the recipe has made (the reasoning-RL
    checkpoint, when rejection sampling runs); `generate.backend.local.model_dir` is replaced
    by it. A stage whose config is null is left out, and the stages after it start from the
    newest checkpoint there is. Outside the
    recipe, the flows read `model_dir: "@base"` as this base (trained once, cached).
    """

    base_config: str = field(default="configs/pretrain-toy.yaml", metadata={"path": True})
    # The base is trained once per config and cached under base_dir/<config hash>.
    # Relative to the working directory (not the config file), like the demo's: the cache key
    # hashes the base's config, its store root included.
    base_dir: str = "work/base"
    # R1-Zero: GRPO from the base (trainer.recipe.r1_zero); null leaves the stage out.
    r1_zero_config: str | None = field(default="configs/r1-zero-toy.yaml", metadata={"path": True})
    # Cold start: SFT of the base on a small curated long-CoT set (trainer.recipe.cold_start),
    # which the recipe assembles into `cold_start_table` from the worked solutions and R1-Zero's
    # samples that pass the rejection filters (verified correct, R1 format, readable).
    cold_start_config: str | None = field(
        default="configs/cold-start-toy.yaml", metadata={"path": True}
    )
    cold_start_table: str = "toy-cold-start"
    # R1-Zero's samples for the cold-start set: these prompts (their own seed, apart from the
    # corpus's, the RL prompts' and evaluation's), `zero_samples` each, through `generate:`'s
    # backend and template into `zero_samples_table`.
    zero_samples_table: str = "toy-r1-zero-samples"
    zero_prompts: PromptsConfig = field(
        default_factory=lambda: PromptsConfig(
            sources={"toy-arithmetic": 24, "toy-countdown": 8}, seed=2
        )
    )
    zero_samples: int = 4
    # Reasoning RL from the cold-start checkpoint, with the language-consistency reward.
    reasoning_rl_config: str | None = field(
        default="configs/reasoning-rl-toy.yaml", metadata={"path": True}
    )
    # Rejection SFT: the base fine-tuned on the rejection-sampled mixture (as R1 fine-tunes
    # DeepSeek-V3-Base); final RL: GRPO over every prompt kind from that checkpoint.
    rejection_sft_config: str | None = field(
        default="configs/rejection-sft-toy.yaml", metadata={"path": True}
    )
    final_rl_config: str | None = field(
        default="configs/final-rl-toy.yaml", metadata={"path": True}
    )
    distill_config: str | None = field(default="configs/distill-toy.yaml", metadata={"path": True})
    # Distilled students and evaluation results go here, one directory per mixture version.
    runs_dir: str = field(default="work/recipe", metadata={"path": True})
    # Worked solutions of the toy sources (backend `reference`), imported as a table beside
    # the generated samples: the curated long-CoT set of the recipe's cold start.
    reference_table: str | None = "toy-reference"
    reference_per_source: int = 40


@dataclass(frozen=True)
class RunConfig:
    name: str = "toy"
    seed: int = field(default=0, metadata={"doc": "seed for every random choice of the run"})
    store: StoreConfig = field(default_factory=StoreConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    filter: FilterRunConfig = field(default_factory=FilterRunConfig)
    # Generation into the store (generators.generate) and judging a table (verifiers.judge):
    # absent unless the run has them (each needs its own table, and generation a model).
    generate: GenerateConfig | None = None
    judge: JudgeConfig | None = None
    flows: FlowsConfig = field(default_factory=FlowsConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)


def load_run_config(path: str | Path) -> RunConfig:
    return load_config(path, RunConfig)
