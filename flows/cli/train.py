"""`r1f train pretrain|sft|distill|grpo` and `r1f eval`: train from a config, score a checkpoint
(`grpo` lives in `flows.cli.grpo`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from flows.cli.common import (
    UserError,
    add_command,
    float_in,
    make_console,
    non_negative_int,
    on_interrupt,
    positive_int,
    print_json,
    print_table,
)
from flows.cli.grpo import add_grpo_parser

STAGES = ("pretrain", "sft", "distill")


def cmd_train(args: argparse.Namespace) -> int:
    from flows.train import load_stage_config, train_stage
    from trainer.data import DataError
    from trainer.train import TrainError

    cfg = load_stage_config(args.config)  # ConfigError: one line, exit 2 (flows.cli.main)
    if cfg.stage != args.stage:
        raise UserError(
            f"{args.config}: stage is {cfg.stage!r}, but this is `r1f train {args.stage}`; "
            f"run `r1f train {cfg.stage}` or set stage: {args.stage}"
        )
    if args.stage != "pretrain" and cfg.corpus is not None:
        raise UserError(f"{args.config}: corpus: is for pretraining; name data.source instead")
    if cfg.corpus is None and not cfg.data.source:
        raise UserError(f"{args.config}: data.source: name a table version (NAME@V) or a release")
    out = Path(args.out or cfg.out_dir)
    if out.exists() and any(out.iterdir()) and not args.resume and not args.force:
        raise UserError(
            f"{out}: exists and is not empty; pass --resume to continue its run, "
            "--force to start over in it, or --out for another directory"
        )
    say = (
        (lambda _line: None) if args.json else (lambda line: make_console(stderr=True).print(line))
    )
    # Checkpoints are written whole (temporary directory, then rename), so Ctrl-C leaves the
    # last complete one in place for --resume.
    stopped = f"the run in {out} stopped; its last complete checkpoint stays: rerun with --resume"
    try:
        with on_interrupt(stopped):
            summary = train_stage(cfg, out_dir=out, resume=args.resume, say=say)
    except (DataError, TrainError, FileNotFoundError) as err:
        raise UserError(str(err)) from None
    result = summary.to_dict()
    if args.json:
        print_json(result)
        return 0
    console = make_console()
    console.print(
        f"Trained {summary.steps} steps ({cfg.stage}) on {summary.data.ref} in "
        f"{summary.seconds:.0f} s, {result['tokens_per_s']:,.0f} tokens/s; final loss "
        f"{summary.final_loss if summary.final_loss is None else round(summary.final_loss, 4)}"
        f" -> {out}"
    )
    print_eval(summary.eval_before, summary.eval_after)
    return 0


def print_eval(before: Any, after: Any) -> None:
    """The before/after table of held-out accuracy (any run's EvalReports)."""
    if after is None:
        return
    rows = []
    for name, score in after.families.items():
        old = before.families.get(name) if before is not None else None
        rows.append(
            (
                name,
                f"{old.greedy:.1%}" if old else "",
                f"{score.greedy:.1%}",
                f"{old.pass_at_k:.1%}" if old else "",
                f"{score.pass_at_k:.1%}",
                f"{score.format_sampled:.1%}",
            )
        )
    k = after.k
    print_table(
        "Held-out toy problems (answers read leniently)",
        [
            "family",
            "greedy before",
            "greedy after",
            f"pass@{k} before",
            f"pass@{k} after",
            "R1 format (sampled)",
        ],
        rows,
    )


def cmd_eval(args: argparse.Namespace) -> int:
    from flows.train import toy_problems
    from trainer.checkpoint import load_checkpoint
    from trainer.evaluate import evaluate, hf_sampler_for, sampler_for
    from trainer.tokenizer import R1Tokenizer

    model_dir = Path(args.model)
    if not model_dir.is_dir():
        raise UserError(f"--model {model_dir}: no such directory; name a checkpoint directory")
    if not (model_dir / "config.json").is_file():
        raise UserError(f"{model_dir}: no config.json; pass a checkpoint directory")
    if not (model_dir / "tokenizer.json").is_file():
        raise UserError(f"{model_dir}: no tokenizer.json; evaluation needs the model's tokenizer")
    from generators.tasks import MAX_DIFFICULTY

    if args.difficulty > MAX_DIFFICULTY:
        raise UserError(
            f"argument --difficulty: must be an integer in 1..{MAX_DIFFICULTY}, got {args.difficulty}"
        )
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    try:
        problems = toy_problems(families, args.problems, args.seed, args.difficulty)
    except ValueError as err:
        raise UserError(f"--families: {err}") from None
    tokenizer = R1Tokenizer.from_dir(model_dir)
    model_type = json.loads((model_dir / "config.json").read_text()).get("model_type")
    if model_type == "deepseek_v3":
        try:
            model, _ = load_checkpoint(model_dir)
        except (ValueError, FileNotFoundError) as err:
            raise UserError(str(err)) from None
        sampler = sampler_for(model.eval(), tokenizer)
    else:  # any transformers causal LM, e.g. a distilled student
        from transformers import AutoModelForCausalLM

        hf_model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
        sampler = hf_sampler_for(hf_model, tokenizer)
    report = evaluate(
        sampler,
        problems,
        k=args.k,
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        seed=args.seed,
    )
    if args.json:
        print_json(report.to_dict())
        return 0
    rows = [
        (
            name,
            s.problems,
            f"{s.greedy:.1%}",
            f"{s.pass_at_k:.1%}",
            f"{s.sample_accuracy:.1%}",
            f"{s.format_greedy:.1%}",
            f"{s.format_sampled:.1%}",
        )
        for name, s in report.families.items()
    ]
    print_table(
        f"{model_dir}: held-out problems (task seed {args.seed}, difficulty {args.difficulty})",
        [
            "family",
            "problems",
            "greedy",
            f"pass@{args.k}",
            "per sample",
            "format greedy",
            "format sampled",
        ],
        rows,
    )
    for name, texts in report.examples.items():
        make_console().print(f"{name} e.g. {json.dumps(texts[0][:160], ensure_ascii=False)}")
    return 0


def register(commands: Any) -> None:
    """Add `train` (pretrain, sft, distill) and `eval` to the top-level subparsers."""
    train = commands.add_parser("train", help="train a model from a config")
    tr = train.add_subparsers(dest="train_command", metavar="STAGE", required=True)
    for stage, help in (
        ("pretrain", "pretrain (the toy base model: configs/pretrain-toy.yaml)"),
        ("sft", "supervised fine-tuning on a table version or release"),
        ("distill", "fine-tune a dense transformers student on a mixture version"),
    ):
        p = add_command(tr, stage, cmd_train, help)
        p.set_defaults(stage=stage)
        p.add_argument("--config", required=True, metavar="FILE", help="YAML under configs/")
        p.add_argument("--out", default=None, metavar="DIR", help="default: the config's out_dir")
        p.add_argument(
            "--resume", action="store_true", help="continue from the latest complete checkpoint"
        )
        p.add_argument("--force", action="store_true", help="train into a non-empty --out")
    add_grpo_parser(tr)
    p = add_command(
        commands,
        "eval",
        cmd_eval,
        "accuracy per toy family on held-out problems, greedy and pass@k",
    )
    p.add_argument("--model", required=True, metavar="DIR")
    p.add_argument("--families", default="toy-arithmetic,toy-countdown")
    p.add_argument("--problems", type=positive_int, default=50, help="per family")
    p.add_argument(
        "--seed", type=non_negative_int, default=1000, help="task seed: keep it out of training"
    )
    p.add_argument("--difficulty", type=positive_int, default=1, help="task difficulty (1..8)")
    p.add_argument("--k", type=positive_int, default=8, help="samples per problem for pass@k")
    p.add_argument("--temperature", type=float_in(0), default=1.0, help="of the pass@k samples")
    p.add_argument("--max-tokens", type=positive_int, default=96)
