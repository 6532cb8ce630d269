"""`r1f train pretrain|sft|distill|grpo` and `r1f eval`: train from a config, score a checkpoint
(`grpo` lives in `flows.cli.grpo`).

`r1f train STAGE --config FILE --nproc N` runs the same command as N ranks under torchrun
(`trainer.parallel.launch.torchrun`), spread as the config's `parallel` section says: this
process checks the config and the layout (one-line errors), starts the ranks and waits; each
rank runs this command again (it knows it is a rank from the environment the launcher sets)
and trains its part; rank 0 writes and prints. Any stage but grpo, the same way.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from flows.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
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
    from flows.train import load_stage_config
    from trainer.parallel.launch import WORKER_ENV

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
    cfg = _check_layout(args, cfg)
    out = Path(args.out or cfg.out_dir)
    if os.environ.get(WORKER_ENV) == "1":
        return _train_rank(args, cfg, out)
    if out.exists() and any(out.iterdir()) and not args.resume and not args.force:
        raise UserError(
            f"{out}: exists and is not empty; pass --resume to continue its run, "
            "--force to start over in it, or --out for another directory"
        )
    if args.nproc > 1:
        return _launch(args, cfg, out)
    return _train(args, cfg, out)


def _check_layout(args: argparse.Namespace, cfg: Any) -> Any:
    """The config with its parallel layout over --nproc processes (dp filled in), checked
    against the model and the loop before any rank starts."""
    from dataclasses import replace

    from trainer.parallel.training import layout_problem, model_facts

    try:
        cfg = replace(cfg, parallel=cfg.parallel.for_processes(args.nproc))
    except ValueError as err:
        raise UserError(f"--nproc {args.nproc} with {args.config}: {err}") from None
    if cfg.parallel.world_size == 1:
        return cfg
    try:
        facts = model_facts(cfg.model)
    except (OSError, ValueError, KeyError) as err:
        raise UserError(f"{args.config}: model: {err}") from None
    problem = layout_problem(cfg, facts)
    if problem is not None:
        raise UserError(f"{args.config}: {problem}")
    return cfg


def _launch(args: argparse.Namespace, cfg: Any, out: Path) -> int:
    """Run this command as --nproc ranks under torchrun; their exit status is ours."""
    from flows.cli.common import Interrupted
    from trainer.parallel.launch import torchrun

    argv = ["train", args.stage, "--config", str(Path(args.config).resolve())]
    argv += ["--out", str(out.resolve()), "--nproc", str(args.nproc)]
    argv += [flag for flag in ("--resume", "--force", "--json", "--debug") if _given(args, flag)]
    status = torchrun(args.nproc, "flows.cli", argv, threads=cfg.loop.threads or 1)
    if status == EXIT_INTERRUPTED:
        raise Interrupted(
            f"every rank stopped; {out} keeps its latest complete checkpoint "
            "(continue with --resume)"
        )
    return status


def _given(args: argparse.Namespace, flag: str) -> bool:
    return bool(getattr(args, flag.lstrip("-").replace("-", "_"), False))


def _train_rank(args: argparse.Namespace, cfg: Any, out: Path) -> int:
    """One rank of a run `_launch` started: join the group, train, leave. Rank 0 reports;
    the others stay quiet about what rank 0 reports too (a config or data error, Ctrl-C)."""
    import torch.distributed as dist

    from trainer.parallel.launch import join_torchrun

    rank, _ = join_torchrun(timeout_s=cfg.parallel.timeout_s)
    try:
        return _train(args, cfg, out, quiet=rank != 0)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED  # the launching command says it, once
    except UserError:
        if rank != 0:
            return EXIT_USAGE
        raise
    finally:
        dist.destroy_process_group()


def _train(args: argparse.Namespace, cfg: Any, out: Path, *, quiet: bool = False) -> int:
    from flows.train import train_stage
    from trainer.data import DataError
    from trainer.train import TrainError

    say = (
        (lambda _line: None)
        if args.json or quiet
        else (lambda line: make_console(stderr=True).print(line))
    )
    # Checkpoints are written whole (temporary directory, then rename), so Ctrl-C leaves the
    # last complete one in place for --resume.
    stopped = f"the run in {out} stopped; its last complete checkpoint stays: rerun with --resume"
    try:
        with on_interrupt(stopped):
            summary = train_stage(cfg, out_dir=out, resume=args.resume, say=say)
    except (DataError, TrainError, FileNotFoundError) as err:
        raise UserError(str(err)) from None
    if quiet:
        return 0
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
        p.add_argument(
            "--nproc",
            type=positive_int,
            default=1,
            metavar="N",
            help="processes (torchrun ranks): the config's parallel dp x ep x pp; "
            "dp left out takes what ep x pp leave",
        )
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
