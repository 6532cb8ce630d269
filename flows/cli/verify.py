"""`r1f verify math|code`: judge completions in a JSONL file."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flows.cli.common import (
    UserError,
    add_command,
    make_console,
    print_json,
    print_table,
    progress_bar,
)


def _count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


def _verify(args: argparse.Namespace, kind: str, run: Callable[..., dict[str, Any]]) -> int:
    path = Path(args.input)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    progress, advance = progress_bar(f"verifying {kind} in {path.name}", _count_lines(path), "rows")
    with progress:
        summary = run(
            path, args.output, timeout=args.timeout, workers=args.workers, progress=advance
        )
    if args.json:
        print_json(summary)
        return 0
    make_console().print(
        f"{path} -> {args.output}: {summary['rows']:,} rows: {summary['correct']:,} correct, "
        f"{summary['incorrect']:,} incorrect, {summary['unverifiable']:,} unverifiable"
    )
    breakdown = summary.get("reasons") or summary.get("details") or {}
    print_table(None, ["reason" if kind == "math" else "detail", "rows"], list(breakdown.items()))
    return 0


def cmd_verify_math(args: argparse.Namespace) -> int:
    from verifiers.math.batch import verify_jsonl

    return _verify(args, "math", verify_jsonl)


def cmd_verify_code(args: argparse.Namespace) -> int:
    from verifiers.code import SandboxUnavailable
    from verifiers.code.batch import verify_jsonl

    try:
        return _verify(args, "code", verify_jsonl)
    except SandboxUnavailable as err:
        raise UserError(str(err)) from None


def register(commands: Any) -> None:
    """Add `verify` and its subcommands to the top-level subparsers."""
    verify = commands.add_parser(
        "verify", help="verify completions: math answers, code against tests"
    )
    vf = verify.add_subparsers(dest="verify_command", metavar="COMMAND", required=True)
    p = add_command(
        vf, "math", cmd_verify_math, "check answers against gold (sympy, hang-proof worker pool)"
    )
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per check (default 5)")
    p = add_command(vf, "code", cmd_verify_code, "run code against tests in the sealed sandbox")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per run (default 10)")
    for p in vf.choices.values():
        p.add_argument("--input", required=True, metavar="IN.jsonl")
        p.add_argument("--output", required=True, metavar="OUT.jsonl")
        p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
