"""`r1f generate`: sample completions for a JSONL file of prompts from a local checkpoint.

Output rows chain into `r1f datasets import`: each is its prompt row (fields
such as `gold`, `domain`, `track`, `source` pass through) with the Sample's
generation fields added (`completion`, `backend`, `model_id`, `model_hash`,
`sampling`, `seed`, `sample_index`, `finish_reason`, token counts), so the
store gives every sample its own `sample_id`. `token_ids` and `logprobs`
are written too; import drops them (store.record.GENERATION_ONLY_FIELDS).

A prompt row that cannot be generated from (a line that is not a JSON
object, no string `prompt`, a prompt longer than the model's context) is
reported as `FILE:LINE: reason` and left out; the other prompts are
generated as usual.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from flows.cli.common import (
    EXIT_NO_VALID_INPUT,
    UserError,
    add_command,
    float_in,
    input_file,
    make_console,
    non_negative_int,
    on_interrupt,
    output_file,
    positive_int,
    print_json,
    progress_bar,
    warn,
    warn_bad_lines,
)

# Prompts per call: bounded memory, and output written as it goes.
CHUNK = 256


def read_prompts(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], Any]:
    """(line, row) for every row with a string `prompt`; the rest in the returned BadLines."""
    from store.jsonl import BadLine, BadLines, read_jsonl

    bad = BadLines(path)
    rows = []
    for number, row in read_jsonl(path):
        if isinstance(row, BadLine):
            bad.add(number, row.reason)
        elif not isinstance(row.get("prompt"), str) or not row["prompt"]:
            bad.add(number, "each row needs a non-empty string field 'prompt'")
        else:
            rows.append((number, row))
    return rows, bad


def cmd_generate(args: argparse.Namespace) -> int:
    source = input_file(args.prompts, "--prompts")
    target = output_file(args.output, "--output")
    if target.exists() and target.resolve() == source.resolve():
        # Samples are not prompts: writing them over the prompt file would lose every prompt
        # that was left out (malformed, too long) and the file a rerun needs.
        raise UserError(f"--output {target}: is the --prompts file; name a new file for samples")
    if not Path(args.model).is_dir():
        raise UserError(f"--model {args.model}: no such checkpoint directory")
    # Loading the model takes a while: Ctrl-C then, as later, leaves the output as it was.
    with on_interrupt(f"{target} was not written (left as it was)"):
        return _generate(args, source, target)


def _generate(args: argparse.Namespace, source: Path, target: Path) -> int:
    rows, bad = read_prompts(source)
    import torch

    from flows.cli.model import unreadable_checkpoint
    from generators.backends.local import LocalBackend
    from store.jsonl import atomic_output, dumps_row
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
    except ValueError as err:
        raise UserError(str(err)) from None
    try:
        backend = LocalBackend(args.model, max_batch_rows=args.batch_size)
    except Exception as err:  # safetensors, JSON: a damaged file, not a bug
        raise unreadable_checkpoint(args.model, err) from None
    torch.set_num_threads(args.threads)
    if args.mtp and backend.args.n_mtp_depth == 0:
        raise UserError(f"--mtp: {args.model} has no MTP layers; drop --mtp")
    # A prompt the model cannot take is that prompt's problem, not the run's.
    limit = backend.args.max_seq_len
    fitting = []
    for number, row in rows:
        text = row["prompt"] if args.raw else backend.render(row["prompt"])
        length = len(backend.tokenizer.encode(text))
        if length >= limit:
            bad.add(
                number, f"prompt is {length} tokens; the model's context is {limit}: shorten it"
            )
        else:
            fitting.append((number, row))
    stats = GenerationStats()
    finish: dict[str, int] = {}
    sampling = {
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k,
        "max_tokens": args.max_tokens,
    }
    bar, advance = progress_bar(f"generating from {source.name}", len(fitting), "rows")
    with (
        bar,
        atomic_output(target) as fh,
    ):
        for start in range(0, len(fitting), CHUNK):
            batch = fitting[start : start + CHUNK]
            # Row k is seeded from (seed, k): the output does not depend on the chunking.
            seeds = [request_seed(args.seed, start + i) for i in range(len(batch))]
            samples = backend.generate(
                [row["prompt"] for _, row in batch],
                [dataclasses.replace(params, seed=s) for s in seeds],
                raw=args.raw,
                mtp=args.mtp,
                stats=stats,
                progress=advance,
            )
            for (_, row), seed, completions in zip(batch, seeds, samples, strict=True):
                for c in completions:
                    record = {
                        **row,
                        "completion": c.text,
                        "backend": backend.name,
                        "model_id": backend.model_id,
                        "model_hash": backend.model_hash,
                        "sampling": sampling,
                        "seed": seed,
                        "sample_index": c.index,
                        "finish_reason": c.finish_reason,
                        "prompt_tokens": c.prompt_tokens,
                        "completion_tokens": c.completion_tokens,
                        "token_ids": c.token_ids,
                    }
                    if args.logprobs:
                        record["logprobs"] = c.logprobs
                    finish[c.finish_reason] = finish.get(c.finish_reason, 0) + 1
                    fh.write(dumps_row(record))
    summary = {
        "output": str(target),
        "model": backend.identity,
        "prompts": len(fitting),
        "samples": stats.samples,
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "seconds": round(stats.seconds, 3),
        "tokens_per_second": round(stats.tokens_per_second, 1),
        "finish_reasons": finish,
        **bad.to_dict(),
    }
    if args.mtp:
        summary["acceptance_rate"] = round(stats.acceptance_rate, 4)
        summary["tokens_per_forward"] = round(stats.tokens_per_forward, 3)
    if args.json:
        print_json(summary)
    else:
        warn_bad_lines(summary)
        line = (
            f"{source} -> {target}: {stats.samples:,} samples from {len(fitting):,} prompts, "
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
    if not fitting:
        warn(f"{source}: no prompt could be generated from")
        return EXIT_NO_VALID_INPUT
    return 0


def register(commands: Any) -> None:
    """Add `generate` to the top-level subparsers."""
    p = add_command(
        commands, "generate", cmd_generate, "sample completions from a local checkpoint"
    )
    p.add_argument("--model", required=True, metavar="DIR")
    p.add_argument("--prompts", required=True, metavar="IN.jsonl", help="rows with 'prompt'")
    p.add_argument(
        "--output", required=True, metavar="OUT.jsonl", help="written atomically at the end"
    )
    p.add_argument("--n", type=positive_int, default=1, help="samples per prompt (default 1)")
    p.add_argument("--temperature", type=float_in(0), default=1.0, help="0 is greedy (default 1)")
    p.add_argument("--top-p", type=float_in(0, 1, low_open=True), default=1.0)
    p.add_argument("--top-k", type=non_negative_int, default=0, help="0: off")
    p.add_argument("--max-tokens", type=positive_int, default=256)
    p.add_argument("--stop", action="append", default=[], metavar="TEXT", help="repeatable")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--logprobs", action="store_true", help="add log-probs of the chosen tokens")
    p.add_argument("--mtp", action="store_true", help="MTP speculative decoding")
    p.add_argument("--raw", action="store_true", help="prompts as they are, no chat template")
    p.add_argument(
        "--batch-size", type=positive_int, default=32, help="samples decoded together (default 32)"
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="torch CPU threads (default 1: small models decode "
        "fastest on one; a second thread mostly waits on shared cores)",
    )
