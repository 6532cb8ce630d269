"""`r1f model init|info`: create and inspect DeepSeek-V3 checkpoints."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from flows.cli.common import (
    UserError,
    add_command,
    human_bytes,
    make_console,
    print_json,
    print_table,
)


def cmd_model_init(args: argparse.Namespace) -> int:
    from flows.toy import toy_corpus
    from trainer.init import init_checkpoint, model_args
    from trainer.model import count_parameters
    from trainer.tokenizer import MIN_VOCAB_SIZE, train_tokenizer

    try:
        config = model_args(args.preset, args.config)
    except ValueError as err:
        raise UserError(str(err)) from None
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.force:
        raise UserError(f"{out}: exists and is not empty; pass --force to write into it")
    with make_console(stderr=True).status("training the tokenizer on the toy corpus"):
        tokenizer = train_tokenizer(toy_corpus(), vocab_size=max(config.vocab_size, MIN_VOCAB_SIZE))
    try:
        with make_console(stderr=True).status(f"initialising with seed {args.seed}"):
            path, used = init_checkpoint(config, args.seed, out, tokenizer=tokenizer)
    except ValueError as err:
        raise UserError(str(err)) from None
    total, activated = count_parameters(used)
    summary = {
        "path": str(path),
        "preset": args.preset,
        "config": args.config,
        "seed": args.seed,
        "vocab_size": used.vocab_size,
        "tokenizer_vocab_size": tokenizer.get_vocab_size(),
        "parameters": total,
        "activated_parameters": activated,
        "mtp_depth": used.n_mtp_depth,
    }
    if args.json:
        print_json(summary)
    else:
        make_console().print(
            f"Initialised {args.preset or args.config} (seed {args.seed}) in {path}: "
            f"{total:,} parameters ({activated:,} activated), vocabulary {used.vocab_size:,} "
            f"(tokenizer {tokenizer.get_vocab_size():,}), MTP depth {used.n_mtp_depth}."
        )
    return 0


def cmd_model_info(args: argparse.Namespace) -> int:
    from trainer.init import describe_checkpoint

    try:
        info = describe_checkpoint(args.dir)
    except (ValueError, FileNotFoundError) as err:
        raise UserError(str(err)) from None
    if args.json:
        print_json(info)
        return 0
    params, kv = info["parameters"], info["kv_cache"]
    console = make_console()
    console.print(
        f"[bold]{info['path']}[/bold]  ({info['model_type']}, {info['dtype']}, "
        f"{info['n_tensors']} tensors, {human_bytes(info['weight_bytes'])})\n"
        f"model hash {info['model_hash']}"
    )
    print_table("Shape", ["setting", "value"], list(info["config"].items()))
    print_table(
        "Parameters",
        ["", "total", "activated per token"],
        [
            ("model", f"{params['total']:,}", f"{params['activated']:,}"),
            ("with MTP", f"{params['total_with_mtp']:,}", f"{params['activated_with_mtp']:,}"),
        ],
    )
    print_table(
        f"KV cache per token ({kv['layers']} layers, {kv['bytes_per_value']} bytes per value)",
        ["cache", "values per layer", "bytes per token"],
        [
            (
                "MLA latent (ours)",
                f"{kv['mla_values_per_layer']:,}",
                f"{kv['mla_bytes_per_token']:,}",
            ),
            (
                "plain multi-head",
                f"{kv['mha_values_per_layer']:,}",
                f"{kv['mha_bytes_per_token']:,}",
            ),
            ("reduction", f"{kv['reduction']:.1f}x", ""),
        ],
    )
    print_table(
        "Tensor shapes (one layer of each kind)", ["tensor", "shape"], list(info["tensors"].items())
    )
    return 0


def register(commands: Any) -> None:
    """Add `model` and its subcommands to the top-level subparsers."""
    model = commands.add_parser("model", help="create and inspect model checkpoints")
    md = model.add_subparsers(dest="model_command", metavar="COMMAND", required=True)
    p = add_command(
        md, "init", cmd_model_init, "randomly initialise a checkpoint (with a toy tokenizer)"
    )
    p.add_argument("--preset", default=None, help="tiny, debug, vllm_tiny, ... (trainer.model)")
    p.add_argument(
        "--config", default=None, metavar="FILE", help="YAML/JSON ModelArgs or config.json"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--force", action="store_true", help="write into a non-empty directory")
    p = add_command(
        md, "info", cmd_model_info, "shapes, parameters and KV-cache bytes of a checkpoint"
    )
    p.add_argument("dir", metavar="DIR")
