"""`r1f filter run|dedup|decontaminate`: filter, deduplicate and assemble the SFT mixture."""

from __future__ import annotations

import argparse
from typing import Any

from flows.cli.common import (
    EXIT_NO_VALID_INPUT,
    StageBar,
    UserError,
    add_command,
    add_group,
    float_in,
    input_file,
    make_console,
    on_interrupt,
    output_file,
    positive_int,
    print_json,
    print_table,
    warn,
    warn_bad_lines,
    watch_store,
)


def cmd_filter_run(args: argparse.Namespace) -> int:
    from filters.executor import ExecutorError
    from filters.pipeline import PipelineError
    from flows.config import load_run_config
    from flows.filter_run import run_filter
    from store.store import Store

    cfg = load_run_config(args.config)
    store = Store(args.store or cfg.store.root, cfg.store.storage_options)
    try:
        with watch_store(store, "rerun the same command to finish"), StageBar() as bar:
            report = run_filter(args.config, progress=bar, store_root=args.store)
    except (PipelineError, ExecutorError, ValueError) as err:  # ValueError: a benchmark file
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

    source = input_file(args.input, "--input")
    target = output_file(args.output, "--output")
    err = make_console(stderr=True)
    try:
        with (
            on_interrupt(f"{target} was not written (left as it was)"),
            err.status(f"deduplicating {source.name} on {args.field!r}"),
        ):
            stats = dedup_jsonl(
                source,
                target,
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
    else:
        warn_bad_lines(stats)
        make_console().print(
            f"{source} -> {target}: {stats['docs']:,} rows, {stats['duplicates']:,} duplicates "
            f"in {stats['clusters']:,} clusters ({args.method} on {args.field!r}); "
            "`duplicate_of` names the kept copy's id."
        )
    if stats["docs"] == 0:
        warn(f"{source}: no valid rows found")
        return EXIT_NO_VALID_INPUT
    return 0


def cmd_filter_decontaminate(args: argparse.Namespace) -> int:
    from filters.decontam import DEFAULT_N, decontaminate_jsonl

    source = input_file(args.input, "--input")
    target = output_file(args.output, "--output")
    for benchmark in args.benchmarks:
        input_file(benchmark, "--benchmarks")
    try:
        with (
            on_interrupt(f"{target} was not written (left as it was)"),
            make_console(stderr=True).status(f"checking {source.name} against benchmarks"),
        ):
            report = decontaminate_jsonl(
                source,
                args.benchmarks,
                target,
                n=args.n or [DEFAULT_N],
                fields=args.fields,
                id_field=args.id_field,
                text_field=args.text_field,
            )
    except ValueError as error:
        raise UserError(str(error)) from None
    summary = report.as_dict()
    if args.json:
        print_json(summary)
    else:
        warn_bad_lines(summary)
        grams = " and ".join(str(n) for n in sorted(report.ns))
        make_console().print(
            f"{source} -> {target}: {report.samples:,} rows checked for {grams}-gram overlap, "
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
    if report.samples == 0:
        warn(f"{source}: no valid rows found")
        return EXIT_NO_VALID_INPUT
    return 0


def register(commands: Any) -> None:
    """Add `filter` and its subcommands to the top-level subparsers."""
    fl = add_group(commands, "filter", "filter, dedup, decontaminate and assemble the SFT mixture")
    p = add_command(
        fl,
        "run",
        cmd_filter_run,
        "filter store tables and assemble the SFT mixture",
        uses_store=True,
    )
    p.add_argument(
        "--config",
        required=True,
        metavar="FILE",
        help="run config with a filter: section (--store replaces its store.root)",
    )
    out_help = "written atomically; may be the input itself"
    p = add_command(fl, "dedup", cmd_filter_dedup, "mark exact or near duplicates in a JSONL file")
    p.add_argument("--input", required=True, metavar="IN.jsonl", help="rows as import takes them")
    p.add_argument("--output", required=True, metavar="OUT.jsonl", help=out_help)
    p.add_argument("--field", default="completion", help="text to compare (default completion)")
    p.add_argument(
        "--threshold",
        type=float_in(0, 1, low_open=True),
        default=0.8,
        metavar="J",
        help="Jaccard similarity in (0, 1] (default 0.8)",
    )
    p.add_argument("--method", choices=("near", "exact"), default="near")
    p.add_argument(
        "--id-field",
        default=None,
        help="field holding each row's id (default: sample_id, else id, else the id "
        "import gives the row)",
    )
    p.add_argument(
        "--num-perm", type=positive_int, default=128, help="MinHash permutations (default 128)"
    )
    p = add_command(
        fl, "decontaminate", cmd_filter_decontaminate, "flag rows sharing n-grams with benchmarks"
    )
    p.add_argument("--input", required=True, metavar="IN.jsonl")
    p.add_argument(
        "--benchmarks", action="append", required=True, metavar="B.jsonl", help="repeatable"
    )
    p.add_argument("--output", required=True, metavar="OUT.jsonl", help=out_help)
    p.add_argument(
        "--n",
        type=positive_int,
        action="append",
        default=None,
        help="gram length (default 13; repeatable)",
    )
    p.add_argument("--fields", nargs="+", default=["prompt", "completion"], metavar="FIELD")
    p.add_argument("--id-field", default=None, help="names rows in the report (default: as dedup)")
    p.add_argument("--text-field", default=None, help="benchmark text field (default: guessed)")
