"""The R1 recipe's trainer-side stages, each a config plus a thin function over the trainer's
loops (R1 section 2.3):

    summary = r1_zero(load_grpo_config("configs/r1-zero-toy.yaml"), eval_problems=problems)

| stage | config | loop | starts from | trains on |
|---|---|---|---|---|
| `r1_zero` | `GRPOConfig`, stage r1_zero | `run_grpo` | the base | RL prompts; accuracy + format |
| `cold_start` | `TrainConfig`, stage cold_start | `run_training` (SFT) | the base | a small curated long-CoT table version |
| `reasoning_rl` | `GRPOConfig`, stage reasoning_rl | `run_grpo` | the cold-start checkpoint | reasoning prompts; accuracy (+ format) + language consistency |
| `rejection_sft` | `TrainConfig`, stage rejection_sft | `run_training` (SFT) | the base (R1 fine-tunes DeepSeek-V3-Base) | the rejection-sampled mixture version |
| `final_rl` | `GRPOConfig`, stage final_rl | `run_grpo` | the rejection-SFT checkpoint | every prompt kind; rule rewards (accuracy covers the non-reasoning toy families by reference match) |

Each function takes its config (plus the held-out problems and an output directory), checks
that the config is that stage (`StageError`, naming the key), runs the loop and returns the
loop's summary; the checkpoint directory is `summary.out_dir`. Every stage writes what any run
writes: the checkpoint in the Hugging Face layout, `metrics.jsonl`, and metadata naming the
checkpoint and the data version it started from (config.json `r1f_stage`, `r1f_parent` with
the parent's weights hash, `r1f_data` with the table, version and content hash;
`train_summary.json` repeats them with the evaluation before and after).

Rejection sampling itself (sample from the RL checkpoint, verify, filter, assemble) uses the
factory's functions and is scheduled by flows (`flows/recipe.py`); so is distillation
(`r1f train distill`). The trainer never imports the factory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from trainer.config import TrainConfig
from trainer.evaluate import EvalProblem
from trainer.rl.config import GRPOConfig
from trainer.rl.grpo import GRPOSummary, run_grpo
from trainer.train import TrainError, TrainSummary, run_training

# R1-Zero's rewards (R1 section 2.2.2): rule-based accuracy and format, nothing learned.
R1_ZERO_REWARDS = frozenset({"accuracy", "format"})


class StageError(TrainError):
    """A config that is not the stage it is run as; the message names the key."""


def _weighted(cfg: GRPOConfig) -> set[str]:
    return {name for name, w in cfg.rewards.weights.items() if w != 0}


def _check_rl(cfg: GRPOConfig, stage: str) -> None:
    if cfg.stage != stage:
        raise StageError(f"stage: {cfg.stage!r}; a {stage} config says stage: {stage}")
    if cfg.prompts.template != "r1_zero":
        raise StageError(
            f"prompts.template: {stage} poses prompts in r1_zero, got {cfg.prompts.template!r}"
        )
    if "accuracy" not in _weighted(cfg):
        raise StageError(f"rewards.weights: {stage} rewards accuracy; give it a non-zero weight")


def check_r1_zero(cfg: GRPOConfig) -> None:
    """R1-Zero is GRPO from the base with accuracy and format rewards only, posed in the
    R1-Zero template; raises StageError naming the key that says otherwise."""
    _check_rl(cfg, "r1_zero")
    if _weighted(cfg) != R1_ZERO_REWARDS:
        raise StageError(
            f"rewards.weights: R1-Zero rewards accuracy and format only, got "
            f"{sorted(_weighted(cfg))}"
        )


def check_reasoning_rl(cfg: GRPOConfig) -> None:
    """Reasoning RL adds the language-consistency reward to accuracy (R1 section 2.3.2: the
    two summed; format may stay); no length or repetition shaping."""
    _check_rl(cfg, "reasoning_rl")
    weighted = _weighted(cfg)
    if "language" not in weighted:
        raise StageError(
            "rewards.weights: reasoning_rl adds the language-consistency reward; give "
            "`language` a non-zero weight"
        )
    extra = sorted(weighted - {"accuracy", "format", "language"})
    if extra:
        raise StageError(
            f"rewards.weights: reasoning_rl rewards accuracy, format and language, got {extra}"
        )


def check_final_rl(cfg: GRPOConfig) -> None:
    """Final RL: every prompt kind with rule rewards (accuracy judges reasoning prompts by the
    verifiers and the non-reasoning toy families by reference match)."""
    _check_rl(cfg, "final_rl")


def check_sft(cfg: TrainConfig, stage: str) -> None:
    """An SFT stage of the recipe: supervised fine-tuning of a checkpoint on a table version,
    completions only, every row in the R1 chat template (the readable format)."""
    if cfg.stage != stage:
        raise StageError(f"stage: {cfg.stage!r}; a {stage} config says stage: {stage}")
    if cfg.model.checkpoint is None:
        raise StageError(f"model.checkpoint: {stage} fine-tunes a checkpoint; name one")
    if not cfg.data.source:
        raise StageError(f"data.source: name the {stage} table version (NAME@V) or a release")
    if cfg.data.loss_on != "completion":
        raise StageError(f"data.loss_on: {stage} trains on completions only, got all")
    if cfg.data.chat_share != 1.0:
        raise StageError(
            f"data.chat_share: {stage} renders every row in the chat template, got "
            f"{cfg.data.chat_share}"
        )


def r1_zero(
    cfg: GRPOConfig,
    *,
    eval_problems: Sequence[EvalProblem] = (),
    out_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    say: Callable[[str], None] = print,
    cpu_budget: float | None = None,
) -> GRPOSummary:
    """Pure RL from the base: GRPO with accuracy + format rewards and the R1-Zero template."""
    check_r1_zero(cfg)
    return run_grpo(
        cfg,
        out_dir=out_dir,
        resume=resume,
        eval_problems=eval_problems,
        say=say,
        cpu_budget=cpu_budget,
    )


def reasoning_rl(
    cfg: GRPOConfig,
    *,
    eval_problems: Sequence[EvalProblem] = (),
    out_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    say: Callable[[str], None] = print,
    cpu_budget: float | None = None,
) -> GRPOSummary:
    """GRPO on reasoning prompts with the language-consistency reward added to accuracy."""
    check_reasoning_rl(cfg)
    return run_grpo(
        cfg,
        out_dir=out_dir,
        resume=resume,
        eval_problems=eval_problems,
        say=say,
        cpu_budget=cpu_budget,
    )


def final_rl(
    cfg: GRPOConfig,
    *,
    eval_problems: Sequence[EvalProblem] = (),
    out_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    say: Callable[[str], None] = print,
    cpu_budget: float | None = None,
) -> GRPOSummary:
    """GRPO over every prompt kind, reasoning and non-reasoning, with rule rewards."""
    check_final_rl(cfg)
    return run_grpo(
        cfg,
        out_dir=out_dir,
        resume=resume,
        eval_problems=eval_problems,
        say=say,
        cpu_budget=cpu_budget,
    )


def cold_start(
    cfg: TrainConfig,
    *,
    eval_problems: Sequence[EvalProblem] = (),
    out_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    say: Callable[[str], None] = print,
) -> TrainSummary:
    """SFT of the base on a small curated long-CoT table version, before reasoning RL."""
    check_sft(cfg, "cold_start")
    return run_training(cfg, out_dir=out_dir, resume=resume, eval_problems=eval_problems, say=say)


def rejection_sft(
    cfg: TrainConfig,
    *,
    eval_problems: Sequence[EvalProblem] = (),
    out_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    say: Callable[[str], None] = print,
) -> TrainSummary:
    """SFT on the mixture rejection sampling assembled (reasoning and non-reasoning rows)."""
    check_sft(cfg, "rejection_sft")
    return run_training(cfg, out_dir=out_dir, resume=resume, eval_problems=eval_problems, say=say)


def check_rl_stage(cfg: GRPOConfig) -> None:
    """The check of `cfg.stage` (plain `grpo` has none): a caller runs it before it builds
    anything, so a config for the wrong stage fails first."""
    checks = {
        "r1_zero": check_r1_zero,
        "reasoning_rl": check_reasoning_rl,
        "final_rl": check_final_rl,
    }
    if cfg.stage in checks:
        checks[cfg.stage](cfg)


# Stage name -> function, for a flow that runs the recipe from a list of stage configs.
RL_STAGES: dict[str, Callable[..., GRPOSummary]] = {
    "r1_zero": r1_zero,
    "reasoning_rl": reasoning_rl,
    "final_rl": final_rl,
}
SFT_STAGES: dict[str, Callable[..., TrainSummary]] = {
    "cold_start": cold_start,
    "rejection_sft": rejection_sft,
}
