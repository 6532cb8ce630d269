"""`r1f train grpo`: GRPO (or an R1 RL stage, `stage: r1_zero`) from a config."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from flows.cli.common import UserError, add_command, make_console, print_json


def cmd_grpo(args: argparse.Namespace) -> int:
    from flows.cli.train import print_eval
    from flows.train import grpo_stage, load_grpo_stage_config
    from trainer.data import DataError
    from trainer.train import TrainError

    cfg = load_grpo_stage_config(args.config)  # ConfigError: one line, exit 2 (flows.cli.main)
    if cfg.prompt_set is None and not cfg.prompts.source:
        raise UserError(
            f"{args.config}: prompts.source: name the RL prompt table (NAME@V) or a release, "
            "or add a prompt_set: section to build the toy prompts"
        )
    if not (Path(str(cfg.model.checkpoint)) / "config.json").is_file():
        raise UserError(
            f"{args.config}: model.checkpoint: no checkpoint at {cfg.model.checkpoint}; train "
            "the base first (r1f train pretrain --config configs/pretrain-toy.yaml) or point "
            "to one"
        )
    out = Path(args.out or cfg.out_dir)
    if out.exists() and any(out.iterdir()) and not args.resume and not args.force:
        raise UserError(
            f"{out}: exists and is not empty; pass --resume to continue its run, "
            "--force to start over in it, or --out for another directory"
        )
    say = (
        (lambda _line: None) if args.json else (lambda line: make_console(stderr=True).print(line))
    )
    try:
        summary = grpo_stage(cfg, out_dir=out, resume=args.resume, say=say)
    except (DataError, TrainError, FileNotFoundError) as err:
        raise UserError(str(err)) from None
    except ValueError as err:
        raise UserError(f"{args.config}: {err}") from None
    result = summary.to_dict()
    if args.json:
        print_json(result)
        return 0
    final = summary.final
    make_console().print(
        f"GRPO ({cfg.stage}): {summary.steps} steps on {summary.prompts.ref} in "
        f"{summary.seconds:.0f} s (rollouts {summary.rollout_seconds:.0f} s, updates "
        f"{summary.update_seconds:.0f} s, rewards {summary.reward_seconds:.0f} s); last steps: "
        + ", ".join(f"{k} {v:.3g}" for k, v in final.items())
        + f" -> {out}"
    )
    print_eval(summary.eval_before, summary.eval_after)
    return 0


def add_grpo_parser(stages: Any) -> None:
    """`grpo` under `r1f train`."""
    p = add_command(
        stages,
        "grpo",
        cmd_grpo,
        "GRPO from a checkpoint on a prompt table (R1-Zero: configs/r1-zero-toy.yaml)",
    )
    p.add_argument("--config", required=True, metavar="FILE", help="YAML under configs/")
    p.add_argument("--out", default=None, metavar="DIR", help="default: the config's out_dir")
    p.add_argument(
        "--resume", action="store_true", help="continue from the latest complete checkpoint"
    )
    p.add_argument("--force", action="store_true", help="train into a non-empty --out")
