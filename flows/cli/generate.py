"""`r1f generate`: sample completions for a JSONL file of prompts from a local checkpoint."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from flows.cli.common import (
    UserError,
    add_command,
    make_console,
    print_json,
    progress_bar,
)


def _read_prompts(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    rows = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{number}: not JSON ({err.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
                raise UserError(f"{path}:{number}: each row needs a string field 'prompt'")
            rows.append(row)
    return rows


def cmd_generate(args: argparse.Namespace) -> int:
    import dataclasses

    rows = _read_prompts(Path(args.prompts))
    import torch

    from generators.backends.local import LocalBackend
    from trainer.generate import GenerationStats, SamplingParams, request_seed

    try:
        params = SamplingParams(
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k,
            max_tokens=args.max_tokens,
            stop=tuple(args.stop),
            n=args.n,
            seed=args.seed,
            logprobs=args.logprobs,
        )
        backend = LocalBackend(args.model, max_batch_rows=args.batch_size)
    except (ValueError, FileNotFoundError) as err:
        raise UserError(str(err)) from None
    if args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    if args.mtp and backend.args.n_mtp_depth == 0:
        raise UserError(f"{args.model}: --mtp needs a checkpoint with MTP layers; it has none")
    stats = GenerationStats()
    finish: dict[str, int] = {}
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    chunk = 256  # prompts per call: bounded memory, and output written as it goes
    progress, advance = progress_bar(
        f"generating from {Path(args.prompts).name}", len(rows), "rows"
    )
    with progress, partial.open("w", encoding="utf-8") as fh:
        for start in range(0, len(rows), chunk):
            batch = rows[start : start + chunk]
            # Row k is seeded from (seed, k): the output does not depend on the chunking.
            per_row = [
                dataclasses.replace(params, seed=request_seed(args.seed, start + i))
                for i in range(len(batch))
            ]
            samples = backend.generate(
                [row["prompt"] for row in batch],
                per_row,
                raw=args.raw,
                mtp=args.mtp,
                stats=stats,
                progress=advance,
            )
            for row, completions in zip(batch, samples, strict=True):
                for c in completions:
                    record = {**row, "completion": c.text, "token_ids": c.token_ids}
                    if args.logprobs:
                        record["logprobs"] = c.logprobs
                    record.update(
                        finish_reason=c.finish_reason,
                        sample_index=c.index,
                        prompt_tokens=c.prompt_tokens,
                        completion_tokens=c.completion_tokens,
                    )
                    finish[c.finish_reason] = finish.get(c.finish_reason, 0) + 1
                    fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    partial.replace(out)
    summary = {
        "output": str(out),
        "model": backend.identity,
        "prompts": len(rows),
        "samples": stats.samples,
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "seconds": round(stats.seconds, 3),
        "tokens_per_second": round(stats.tokens_per_second, 1),
        "finish_reasons": finish,
    }
    if args.mtp:
        summary["acceptance_rate"] = round(stats.acceptance_rate, 4)
        summary["tokens_per_forward"] = round(stats.tokens_per_forward, 3)
    if args.json:
        print_json(summary)
        return 0
    line = (
        f"{args.prompts} -> {out}: {stats.samples:,} samples from {len(rows):,} prompts, "
        f"{stats.completion_tokens:,} tokens in {stats.seconds:.1f} s "
        f"({stats.tokens_per_second:,.0f} tokens/s) with {backend.identity}; finish: "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(finish.items()))
    )
    if args.mtp:
        line += (
            f"; MTP acceptance {stats.acceptance_rate:.1%}, "
            f"{stats.tokens_per_forward:.2f} tokens per forward"
        )
    make_console().print(line)
    return 0


def register(commands: Any) -> None:
    """Add `generate` to the top-level subparsers."""
    p = add_command(
        commands, "generate", cmd_generate, "sample completions from a local checkpoint"
    )
    p.add_argument("--model", required=True, metavar="DIR")
    p.add_argument("--prompts", required=True, metavar="IN.jsonl", help="rows with 'prompt'")
    p.add_argument("--output", required=True, metavar="OUT.jsonl")
    p.add_argument("--n", type=int, default=1, help="samples per prompt (default 1)")
    p.add_argument("--temperature", type=float, default=1.0, help="0 is greedy (default 1)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="0: off")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--stop", action="append", default=[], metavar="TEXT", help="repeatable")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--logprobs", action="store_true", help="add log-probs of the chosen tokens")
    p.add_argument("--mtp", action="store_true", help="MTP speculative decoding")
    p.add_argument("--raw", action="store_true", help="prompts as they are, no chat template")
    p.add_argument("--batch-size", type=int, default=32, help="samples decoded together")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: small models decode "
        "fastest on one; a second thread mostly waits on shared cores)",
    )
