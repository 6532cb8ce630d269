"""The R1 recipe's stages, each a config plus a thin function over the trainer's loops.

    summary = r1_zero(load_grpo_config("configs/r1-zero-toy.yaml"), eval_problems=problems)

Every stage writes what any run writes (`run_training` / `run_grpo`): the checkpoint in the
Hugging Face layout, `metrics.jsonl`, and metadata naming the checkpoint and the data version
it started from (config.json `r1f_parent` with the parent's weights hash, `r1f_data` with the
table, version and content hash; `train_summary.json` repeats both with the evaluation before
and after). A stage function only checks that its config is that stage and runs the loop.

Built: `r1_zero`. Not built yet: cold start, reasoning RL, rejection sampling, rejection SFT,
final RL, distillation of the recipe (issue 11); each will be a config and a function here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from trainer.evaluate import EvalProblem
from trainer.rl.config import GRPOConfig
from trainer.rl.grpo import GRPOSummary, run_grpo
from trainer.train import TrainError

# R1-Zero's rewards (R1 section 2.2.2): rule-based accuracy and format, nothing learned.
R1_ZERO_REWARDS = frozenset({"accuracy", "format"})


def check_r1_zero(cfg: GRPOConfig) -> None:
    """R1-Zero is GRPO from the base with accuracy and format rewards only, posed in the
    R1-Zero template; raises TrainError naming the key that says otherwise."""
    if cfg.stage != "r1_zero":
        raise TrainError(f"stage: {cfg.stage!r}; an R1-Zero config says stage: r1_zero")
    weighted = {name for name, w in cfg.rewards.weights.items() if w != 0}
    if weighted != R1_ZERO_REWARDS:
        raise TrainError(
            f"rewards.weights: R1-Zero rewards accuracy and format only, got {sorted(weighted)}"
        )
    if cfg.prompts.template != "r1_zero":
        raise TrainError(
            f"prompts.template: R1-Zero poses prompts in r1_zero, got {cfg.prompts.template!r}"
        )


def r1_zero(
    cfg: GRPOConfig,
    *,
    eval_problems: Sequence[EvalProblem] = (),
    out_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    say: Callable[[str], None] = print,
) -> GRPOSummary:
    """Pure RL from the base: GRPO with accuracy + format rewards and the R1-Zero template."""
    check_r1_zero(cfg)
    return run_grpo(cfg, out_dir=out_dir, resume=resume, eval_problems=eval_problems, say=say)
