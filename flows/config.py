"""The run config: one YAML file per run, one typed section per part of the recipe.

Each section's schema lives with the package it configures (`StoreConfig` in
`store`); a section appears here once its stage is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from filters.pipeline import FilterRunConfig
from generators.generate import GenerateConfig
from store.config import load_config
from store.store import StoreConfig
from verifiers.judge import JudgeConfig


@dataclass(frozen=True)
class DemoConfig:
    """How big the toy demo is; every count is per task source."""

    tasks_per_source: int = 25
    difficulty: int = 1
    # Malformed rows appended to the first import, to show quarantine at work.
    planted_bad_rows: int = 3
    # HumanEval problems whose canonical solution (and a mutant) go through the sandbox.
    humaneval_problems: int = 10
    # Sampling from the pretrained toy base: trained once from this config and cached under
    # base_dir/<config hash>, so a second demo reuses it. Without a config, the demo samples
    # from a freshly initialised `model_preset` checkpoint instead (random weights).
    base_config: str | None = "configs/pretrain-toy.yaml"
    base_dir: str = "work/base"
    model_preset: str = "tiny"
    generate_prompts_per_source: int = 2
    samples_per_prompt: int = 2
    max_tokens: int = 48
    temperature: float = 1.0
    out_dir: str = field(default="work/demo", metadata={"path": True})


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


def load_run_config(path: str | Path) -> RunConfig:
    return load_config(path, RunConfig)
