"""`r1f filter run|dedup|decontaminate`: filter, deduplicate and assemble the SFT mixture."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from flows.cli.common import (
    UserError,
    add_command,
    make_console,
    print_json,
    print_table,
)


class _StageBar:
    """`r1f filter run` progress on stderr: one bar per stage, each left with its time."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.bar = Progress(
            TextColumn("{task.description:<18}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=make_console(stderr=True),
        )
        self.task: Any = None

    def _finish(self) -> None:
        if self.task is None:
            return
        task = self.bar.tasks[-1]
        done = task.total or task.completed or 1
        self.bar.update(self.task, total=done, completed=done)
        self.bar.stop_task(self.task)

    def stage(self, name: str, total: int | None) -> None:
        self._finish()
        self.task = self.bar.add_task(name, total=total)

    def advance(self, rows: int) -> None:
        self.bar.advance(self.task, rows)

    def __enter__(self) -> _StageBar:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._finish()
        self.bar.stop()


def cmd_filter_run(args: argparse.Namespace) -> int:
    from filters.executor import ExecutorError
    from filters.pipeline import PipelineError
    from flows.filter_run import run_filter

    try:
        with _StageBar() as bar:
            report = run_filter(args.config, progress=bar)
    except (PipelineError, ExecutorError) as err:
        raise UserError(str(err)) from None
    if args.json:
        print_json(report.to_dict())
        return 0
    console = make_console()
    console.print(
        f"Filtered {report.rows:,} rows of {', '.join(str(r) for r in report.inputs)}: "
        f"decisions in {report.candidates}, mixture {report.mixture} ({report.mixture_rows:,} rows)."
    )
    print_table(
        "Steps",
        ["step", "rows in", "kept", "dropped", "already dropped", "seconds", "top reasons"],
        [
            (
                s.step,
                f"{s.rows_in:,}",
                f"{s.kept:,}",
                f"{sum(s.dropped.values()):,}",
                f"{s.skipped:,}",
                f"{s.seconds:.1f}",
                ", ".join(f"{r} {n:,}" for r, n in s.dropped.most_common(3)),
            )
            for s in report.steps
        ],
    )
    mix = report.mixture_report
    print_table(
        "Mixture",
        ["track", "target", "achieved", "unique", "repeats", "pool", "short by"],
        [
            (
                t.track,
                f"{t.target:,}",
                f"{t.achieved:,}",
                f"{t.unique:,}",
                f"{t.repeats:,}",
                f"{t.pool:,}",
                f"{t.shortfall:,}",
            )
            for t in mix.tracks
        ],
    )
    if report.decontam is None:
        console.print("Decontamination: no benchmark files configured, not checked.")
    else:
        d = report.decontam
        per = ", ".join(f"{b.name} {b.contaminated:,}" for b in d.benchmarks.values())
        console.print(
            f"Decontamination: {d.contaminated:,} of {d.samples:,} checked samples "
            f"contaminated ({per})."
        )
    print_table(
        "Stages",
        ["stage", "seconds", "rows"],
        [(s.name, f"{s.seconds:.1f}", f"{s.rows:,}") for s in report.stages],
    )
    console.print(f"Card: {report.card}")
    for warning in mix.warnings:
        make_console(stderr=True).print(f"warning: {warning}")
    return 0


def cmd_filter_dedup(args: argparse.Namespace) -> int:
    from filters.dedup import dedup_jsonl

    path = Path(args.input)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    err = make_console(stderr=True)
    try:
        with err.status(f"deduplicating {path.name} on {args.field!r}"):
            stats = dedup_jsonl(
                path,
                args.output,
                field=args.field,
                threshold=args.threshold,
                method=args.method,
                id_field=args.id_field,
                num_perm=args.num_perm,
                log=None if args.json else err.print,
            )
    except ValueError as error:
        raise UserError(str(error)) from None
    if args.json:
        print_json(stats)
        return 0
    make_console().print(
        f"{path} -> {args.output}: {stats['docs']:,} rows, {stats['duplicates']:,} duplicates "
        f"in {stats['clusters']:,} clusters ({args.method} on {args.field!r}); "
        "`duplicate_of` names the kept copy's id."
    )
    return 0


def cmd_filter_decontaminate(args: argparse.Namespace) -> int:
    from filters.decontam import DEFAULT_N, decontaminate_jsonl

    path = Path(args.input)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        with make_console(stderr=True).status(f"checking {path.name} against benchmarks"):
            report = decontaminate_jsonl(
                path,
                args.benchmarks,
                args.output,
                n=args.n or [DEFAULT_N],
                fields=args.fields,
                id_field=args.id_field,
                text_field=args.text_field,
            )
    except ValueError as error:
        raise UserError(str(error)) from None
    if args.json:
        print_json(report.as_dict())
        return 0
    grams = " and ".join(str(n) for n in sorted(report.ns))
    make_console().print(
        f"{path} -> {args.output}: {report.samples:,} rows checked for {grams}-gram overlap, "
        f"{report.contaminated:,} contaminated."
    )
    print_table(
        None,
        ["benchmark", "items", "contaminated rows", "items leaked", "too short to check"],
        [
            (
                b.name,
                f"{b.items:,}",
                f"{b.contaminated:,}",
                f"{len(b.items_leaked):,}",
                f"{b.skipped_items:,}",
            )
            for b in report.benchmarks.values()
        ],
    )
    return 0


def register(commands: Any) -> None:
    """Add `filter` and its subcommands to the top-level subparsers."""
    filt = commands.add_parser(
        "filter", help="filter, dedup, decontaminate and assemble the SFT mixture"
    )
    fl = filt.add_subparsers(dest="filter_command", metavar="COMMAND", required=True)
    p = add_command(fl, "run", cmd_filter_run, "filter store tables and assemble the SFT mixture")
    p.add_argument("--config", required=True, metavar="FILE", help="run config with a filter:")
    p = add_command(fl, "dedup", cmd_filter_dedup, "mark exact or near duplicates in a JSONL file")
    p.add_argument("--input", required=True, metavar="IN.jsonl", help="rows with a unique id")
    p.add_argument("--output", required=True, metavar="OUT.jsonl")
    p.add_argument("--field", default="completion", help="text to compare (default completion)")
    p.add_argument(
        "--threshold", type=float, default=0.8, metavar="J", help="Jaccard (default 0.8)"
    )
    p.add_argument("--method", choices=("near", "exact"), default="near")
    p.add_argument("--id-field", default="id", help="field holding each row's id (default id)")
    p.add_argument("--num-perm", type=int, default=128, help="MinHash permutations")
    p = add_command(
        fl, "decontaminate", cmd_filter_decontaminate, "flag rows sharing n-grams with benchmarks"
    )
    p.add_argument("--input", required=True, metavar="IN.jsonl")
    p.add_argument(
        "--benchmarks", action="append", required=True, metavar="B.jsonl", help="repeatable"
    )
    p.add_argument("--output", required=True, metavar="OUT.jsonl")
    p.add_argument(
        "--n", type=int, action="append", default=None, help="gram length (default 13; repeatable)"
    )
    p.add_argument("--fields", nargs="+", default=["prompt", "completion"], metavar="FIELD")
    p.add_argument("--id-field", default="id", help="names rows in the report (default id)")
    p.add_argument("--text-field", default=None, help="benchmark text field (default: guessed)")
