"""`r1f verify math|code`: judge completions in a JSONL file; `r1f verify table`: judge a
stored table version and commit the verdicts (`verifiers.judge`)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flows.cli.common import (
    EXIT_NO_VALID_INPUT,
    StageBar,
    UserError,
    add_command,
    add_group,
    cli_lineage,
    input_file,
    make_console,
    on_interrupt,
    open_store,
    output_file,
    parse_ref,
    positive_int,
    positive_seconds,
    print_json,
    print_table,
    progress_bar,
    warn,
    warn_bad_lines,
    watch_store,
)


def _count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


def _verify(args: argparse.Namespace, kind: str, run: Callable[..., dict[str, Any]]) -> int:
    source = input_file(args.input, "--input")
    target = output_file(args.output, "--output")
    bar, advance = progress_bar(f"verifying {kind} in {source.name}", _count_lines(source), "rows")
    # The output is written to a temporary file renamed into place at the end
    # (store.jsonl.atomic_output): interrupted, the target is left as it was.
    with on_interrupt(f"{target} was not written (left as it was)"), bar:
        summary = run(source, target, timeout=args.timeout, workers=args.workers, progress=advance)
    breakdown = summary.get("reasons") or summary.get("details") or {}
    bad_input = sum(n for reason, n in breakdown.items() if reason.startswith("bad_input"))
    if args.json:
        print_json(summary)
    else:
        warn_bad_lines(summary, "kept as a bad_input row")
        make_console().print(
            f"{source} -> {target}: {summary['rows']:,} rows: {summary['correct']:,} correct, "
            f"{summary['incorrect']:,} incorrect, {summary['unverifiable']:,} unverifiable"
        )
        print_table(
            None, ["reason" if kind == "math" else "detail", "rows"], list(breakdown.items())
        )
    if summary["rows"] == bad_input:
        warn(f"{source}: no valid rows found (each needs {REQUIRED[kind]})")
        return EXIT_NO_VALID_INPUT
    return 0


REQUIRED = {"math": "'gold' and 'completion'", "code": "'completion' and 'tests'"}


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


def cmd_verify_table(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from verifiers.code import SandboxUnavailable
    from verifiers.judge import JudgeConfig, judge

    table, version = parse_ref(args.ref)
    try:
        cfg = JudgeConfig(
            table,
            workers=args.workers,
            math_timeout=args.math_timeout,
            code_timeout=args.code_timeout,
        )
    except ValueError as err:
        raise UserError(str(err)) from None
    store = open_store(args)
    # Resolve the version before any progress is drawn: an unknown table or version is then
    # the only line printed.
    cfg = replace(cfg, table=f"{table}@{store.info(table, version).version}")
    try:
        with watch_store(store, "rerun the same command to finish"), StageBar() as bar:
            report = judge(store, cfg, cli_lineage("r1f verify table"), progress=bar)
    except SandboxUnavailable as err:
        raise UserError(str(err)) from None
    if args.json:
        print_json(report.to_dict())
        return 0
    after = (
        f"-> {report.table}@{report.version}"
        if report.changed
        else f"unchanged, still {report.table}@{report.version}"
    )
    make_console().print(
        f"Judged {report.table}@{report.judged_version}: {report.rows:,} samples, "
        f"{report.changed:,} with new verdicts {after}"
    )
    print_table(
        None,
        ["verifier", "verdict", "samples"],
        [(v, verdict, n) for v, counts in report.verdicts.items() for verdict, n in counts.items()],
    )
    return 0


def register(commands: Any) -> None:
    """Add `verify` and its subcommands to the top-level subparsers."""
    vf = add_group(commands, "verify", "verify completions: math answers, code against tests")
    p = add_command(
        vf, "math", cmd_verify_math, "check answers against gold (sympy, hang-proof worker pool)"
    )
    p.add_argument(
        "--timeout", type=positive_seconds, default=5.0, help="seconds per check (default 5)"
    )
    p = add_command(vf, "code", cmd_verify_code, "run code against tests in the sealed sandbox")
    p.add_argument(
        "--timeout", type=positive_seconds, default=10.0, help="seconds per run (default 10)"
    )
    for p in vf.choices.values():
        p.add_argument("--input", required=True, metavar="IN.jsonl")
        p.add_argument(
            "--output",
            required=True,
            metavar="OUT.jsonl",
            help="written atomically; may be the input itself",
        )
        p.add_argument(
            "--workers",
            type=positive_int,
            default=os.cpu_count() or 1,
            help="parallel workers (default: one per CPU)",
        )
    p = add_command(
        vf,
        "table",
        cmd_verify_table,
        "judge a stored table version (math, code, format) and commit the verdicts",
        uses_store=True,
    )
    p.add_argument("ref", metavar="NAME[@VERSION]", help="the table (default: its latest version)")
    p.add_argument(
        "--workers", type=positive_int, default=2, help="math workers and sandboxes (default 2)"
    )
    p.add_argument(
        "--math-timeout", type=positive_seconds, default=5.0, help="seconds per math check"
    )
    p.add_argument(
        "--code-timeout", type=positive_seconds, default=10.0, help="seconds per code run"
    )
