"""`r1f`: the factory's command line.

Startup stays fast: this module imports only the standard library, and each
command imports what it needs (polars, deltalake, rich, prefect, torch) when
it runs. Human-readable tables by default, `--json` for machines; errors a
user can fix are printed as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from store.store import Store

DEFAULT_STORE = "work/store"


class UserError(Exception):
    """An error the user can fix; printed without a traceback."""


# -- output helpers ----------------------------------------------------------


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Piped output (logs, CI) gets a wide page instead of rich's 80 columns,
    # so tables are not folded into unreadable slivers.
    width = None if stream.isatty() else 160
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


def _when(ts: Any) -> str:
    return str(ts.strftime("%Y-%m-%d %H:%M:%S"))


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def _table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    _console().print(table)


def _progress(description: str, total: int | None, unit: str) -> Any:
    """A rich progress bar on stderr; transient so it leaves no noise in logs."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    amount = DownloadColumn() if unit == "bytes" else MofNCompleteColumn()
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        amount,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=_console(stderr=True),
        transient=True,
    )
    task = progress.add_task(description, total=total)
    return progress, lambda n: progress.advance(task, n)


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


# -- store access ------------------------------------------------------------


def _store(args: argparse.Namespace) -> Store:
    from store.store import Store

    return Store(args.store)


def _ref(text: str, *, need_version: bool = False) -> tuple[str, int | None]:
    from store.lineage import TableRef

    try:
        ref = TableRef.parse(text)
    except ValueError as err:
        raise UserError(str(err)) from None
    if need_version and ref.version is None:
        raise UserError(f"{text!r}: name a version, e.g. {ref.table}@0")
    return ref.table, ref.version


def _lineage(writer: str) -> Any:
    from store.lineage import Lineage

    return Lineage(writer=writer, flow_run_id=os.environ.get("PREFECT__FLOW_RUN_ID"))


# -- datasets commands ---------------------------------------------------------


def cmd_datasets_list(args: argparse.Namespace) -> int:
    store = _store(args)
    infos = [store.info(name) for name in store.tables()]
    if args.json:
        _print_json([i.to_dict() for i in infos])
        return 0
    if not infos:
        _console().print(f"No tables in {store.root} yet.")
        return 0
    _table(
        f"Tables in {store.root}",
        ["name", "kind", "version", "rows", "size", "last commit", "writer"],
        [
            (
                i.name,
                i.kind,
                i.version,
                f"{i.rows:,}",
                _human_bytes(i.bytes),
                _when(i.last_commit.timestamp),
                i.last_commit.lineage.writer if i.last_commit.lineage else "",
            )
            for i in infos
        ],
    )
    return 0


def cmd_datasets_show(args: argparse.Namespace) -> int:
    import polars as pl

    from store.store import key_for

    store = _store(args)
    name, version = _ref(args.ref)
    info = store.info(name, version)
    lf = store.scan(name, info.version)
    if key_for(name) == "sample_id":
        groups = ["domain", "track", "source"]
        preview_cols = ["sample_id", "domain", "track", "source", "prompt", "kept"]
    else:
        groups = ["target_table", "source_file"]
        preview_cols = ["line", "field", "reason", "source_file"]
    composition = lf.group_by(groups).agg(pl.len().alias("rows")).sort(groups).collect()
    preview = lf.select(preview_cols).head(args.rows).collect()
    lineage = info.last_commit.lineage
    if args.json:
        _print_json(
            {
                **info.to_dict(),
                "content_hash": store.content_hash(name, info.version)
                if info.kind == "samples"
                else None,
                "composition": composition.to_dicts(),
                "preview": preview.to_dicts(),
            }
        )
        return 0
    console = _console()
    console.print(f"[bold]{name}@{info.version}[/bold]  ({info.kind})")
    facts = [
        ("rows", f"{info.rows:,}"),
        ("files", f"{info.files} ({_human_bytes(info.bytes)})"),
        ("committed", _when(info.last_commit.timestamp) + " UTC"),
        ("operation", info.last_commit.operation),
    ]
    if info.kind == "samples":
        facts.append(("content hash", store.content_hash(name, info.version)))
    if lineage:
        facts += [
            ("writer", lineage.writer),
            ("user", lineage.user),
            ("code version", lineage.code_version),
            ("config hash", lineage.config_hash or "-"),
            ("flow run", lineage.flow_run_id or "-"),
            ("parents", ", ".join(str(p) for p in lineage.parents) or "-"),
        ]
        facts += [(k, str(v)) for k, v in sorted(lineage.extra.items())]
    _table(None, ["", ""], facts)
    _table("Composition", [*groups, "rows"], composition.rows())
    shown = preview.with_columns(
        [pl.col(c).cast(pl.String).str.slice(0, 60) for c in preview.columns]
    )
    _table(f"First {preview.height} rows", preview.columns, shown.rows())
    return 0


def cmd_datasets_history(args: argparse.Namespace) -> int:
    store = _store(args)
    commits = store.history(args.name, args.limit)
    if args.json:
        _print_json([c.to_dict() for c in commits])
        return 0
    _table(
        f"History of {args.name}",
        [
            "version",
            "committed",
            "operation",
            "+rows",
            "-rows",
            "~rows",
            "writer",
            "config",
            "parents",
        ],
        [
            (
                c.version,
                _when(c.timestamp),
                c.operation,
                c.rows_added,
                c.rows_removed,
                c.rows_updated,
                c.lineage.writer if c.lineage else "",
                (c.lineage.config_hash or "") if c.lineage else "",
                ", ".join(str(p) for p in c.lineage.parents) if c.lineage else "",
            )
            for c in commits
        ],
    )
    return 0


def cmd_datasets_diff(args: argparse.Namespace) -> int:
    from store.diff import diff_versions

    name_a, ver_a = _ref(args.old, need_version=True)
    name_b, ver_b = _ref(args.new, need_version=True)
    if name_a != name_b:
        raise UserError(f"diff compares two versions of one table, got {name_a} and {name_b}")
    assert ver_a is not None and ver_b is not None
    with _console(stderr=True).status(f"diffing {name_a}@{ver_a} and @{ver_b}"):
        diff = diff_versions(_store(args), name_a, ver_a, ver_b)
    if args.json:
        _print_json(diff.to_dict())
        return 0
    _table(
        f"{name_a}@{ver_a} -> {name_a}@{ver_b}",
        ["rows before", "rows after", "added", "removed", "changed", "unchanged"],
        [(diff.old_rows, diff.new_rows, diff.added, diff.removed, diff.changed, diff.unchanged)],
    )
    keys = ["domain", "track", "source", "old", "new", "delta", "added", "removed", "changed"]
    _table(
        "Composition",
        keys,
        [[row[k] if k != "delta" else f"{row[k]:+d}" for k in keys] for row in diff.composition],
    )
    return 0


def cmd_datasets_import(args: argparse.Namespace) -> int:
    from store.ingest import import_file

    path = Path(args.file)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    total = path.stat().st_size if path.suffix.lower() == ".jsonl" else None
    unit = "bytes" if total is not None else "rows"
    progress, advance = _progress(f"importing {path.name}", total, unit)
    with progress:
        report = import_file(
            _store(args),
            path,
            args.table,
            lineage=_lineage("r1f datasets import"),
            progress=advance,
        )
    if args.json:
        _print_json(report.to_dict())
    else:
        console = _console()
        console.print(
            f"{path}: read {report.rows_read:,} rows: {report.valid:,} valid "
            f"({report.written:,} new, {report.already_present:,} already in {report.table}), "
            f"{report.invalid:,} quarantined."
        )
        if report.version >= 0:
            console.print(f"{report.table} is at version {report.version}.")
        if report.invalid:
            console.print(
                f"Quarantined rows are in {report.table}.quarantine@{report.quarantine_version} "
                f"(see: r1f datasets show {report.table}.quarantine)."
            )
            _table(
                "Quarantine reasons",
                ["kind", "rows", "first example"],
                [(k, n, report.examples[k]) for k, n in report.reasons.items()],
            )
    if report.valid == 0:
        _console(stderr=True).print(f"error: {path}: no valid rows found")
        return 1
    return 0


def cmd_datasets_export(args: argparse.Namespace) -> int:
    from data_cards.from_store import write_card_for_version
    from store.release import DATA_FILES, export_release

    store = _store(args)
    name, version = _ref(args.ref, need_version=True)
    assert version is not None
    rows = store.info(name, version).rows

    def write_card(staging: Path, manifest: dict[str, Any]) -> None:
        write_card_for_version(store, name, version, staging, data_files=DATA_FILES)

    progress, advance = _progress(f"exporting {name}@{version}", rows, "rows")
    with progress:
        release = export_release(
            store,
            name,
            version,
            args.to,
            write_card=write_card,
            shard_bytes=args.shard_mb * 1024 * 1024,
            progress=advance,
        )
    if args.json:
        _print_json({"path": str(release.path), **release.manifest})
        return 0
    m = release.manifest
    _console().print(
        f"Exported {name}@{version}: {m['rows']:,} rows in {len(m['shards'])} shard(s) to "
        f"{release.path}\n  content hash {m['content_hash']}\n  card: {release.path / 'README.md'}\n"
        f'  load: datasets.load_dataset("{release.path}")'
    )
    return 0


def cmd_datasets_verify(args: argparse.Namespace) -> int:
    from store.release import verify_release

    problems = verify_release(args.dir)
    if args.json:
        _print_json({"path": args.dir, "ok": not problems, "problems": problems})
    elif problems:
        for p in problems:
            _console(stderr=True).print(f"{args.dir}: {p}")
    else:
        _console().print(f"{args.dir}: every shard matches the manifest.")
    return 1 if problems else 0


def cmd_datasets_card(args: argparse.Namespace) -> int:
    from data_cards.from_store import write_card_for_version

    store = _store(args)
    name, version = _ref(args.ref)
    version = store.latest_version(name) if version is None else version
    path = write_card_for_version(store, name, version, Path(args.to))
    if args.json:
        _print_json({"card": str(path)})
    else:
        _console().print(f"Card for {name}@{version} written to {path}")
    return 0


def cmd_datasets_vacuum(args: argparse.Namespace) -> int:
    orphans = _store(args).vacuum(args.name, dry_run=not args.apply)
    if args.json:
        _print_json({"table": args.name, "removed" if args.apply else "would_remove": orphans})
        return 0
    verb = "Removed" if args.apply else "Would remove (pass --apply to delete)"
    _console().print(f"{verb} {len(orphans)} unreferenced file(s) in {args.name}.")
    for path in orphans:
        _console().print(f"  {path}")
    return 0


# -- verify commands -----------------------------------------------------------


def _count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


def _verify(args: argparse.Namespace, kind: str, run: Callable[..., dict[str, Any]]) -> int:
    path = Path(args.input)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    progress, advance = _progress(f"verifying {kind} in {path.name}", _count_lines(path), "rows")
    with progress:
        summary = run(
            path, args.output, timeout=args.timeout, workers=args.workers, progress=advance
        )
    if args.json:
        _print_json(summary)
        return 0
    _console().print(
        f"{path} -> {args.output}: {summary['rows']:,} rows: {summary['correct']:,} correct, "
        f"{summary['incorrect']:,} incorrect, {summary['unverifiable']:,} unverifiable"
    )
    breakdown = summary.get("reasons") or summary.get("details") or {}
    _table(None, ["reason" if kind == "math" else "detail", "rows"], list(breakdown.items()))
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


# -- config and demo -----------------------------------------------------------


def cmd_config_show(args: argparse.Namespace) -> int:
    from flows.config import load_run_config
    from store.config import config_hash, config_to_dict, dump_config

    config = load_run_config(args.file)
    if args.json:
        _print_json({"config_hash": config_hash(config), "config": config_to_dict(config)})
    else:
        sys.stdout.write(f"# {args.file} (resolved; config hash {config_hash(config)})\n")
        sys.stdout.write(dump_config(config))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from flows.demo import run_demo

    return run_demo(args.config)


# -- model and generate commands ----------------------------------------------


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
    with _console(stderr=True).status("training the tokenizer on the toy corpus"):
        tokenizer = train_tokenizer(toy_corpus(), vocab_size=max(config.vocab_size, MIN_VOCAB_SIZE))
    try:
        with _console(stderr=True).status(f"initialising with seed {args.seed}"):
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
        _print_json(summary)
    else:
        _console().print(
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
        _print_json(info)
        return 0
    params, kv = info["parameters"], info["kv_cache"]
    console = _console()
    console.print(
        f"[bold]{info['path']}[/bold]  ({info['model_type']}, {info['dtype']}, "
        f"{info['n_tensors']} tensors, {_human_bytes(info['weight_bytes'])})\n"
        f"model hash {info['model_hash']}"
    )
    _table("Shape", ["setting", "value"], list(info["config"].items()))
    _table(
        "Parameters",
        ["", "total", "activated per token"],
        [
            ("model", f"{params['total']:,}", f"{params['activated']:,}"),
            ("with MTP", f"{params['total_with_mtp']:,}", f"{params['activated_with_mtp']:,}"),
        ],
    )
    _table(
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
    _table(
        "Tensor shapes (one layer of each kind)", ["tensor", "shape"], list(info["tensors"].items())
    )
    return 0


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
    progress, advance = _progress(f"generating from {Path(args.prompts).name}", len(rows), "rows")
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
        _print_json(summary)
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
    _console().print(line)
    return 0


# -- filter commands -----------------------------------------------------------


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
            console=_console(stderr=True),
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
        _print_json(report.to_dict())
        return 0
    console = _console()
    console.print(
        f"Filtered {report.rows:,} rows of {', '.join(str(r) for r in report.inputs)}: "
        f"decisions in {report.candidates}, mixture {report.mixture} ({report.mixture_rows:,} rows)."
    )
    _table(
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
    _table(
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
    _table(
        "Stages",
        ["stage", "seconds", "rows"],
        [(s.name, f"{s.seconds:.1f}", f"{s.rows:,}") for s in report.stages],
    )
    console.print(f"Card: {report.card}")
    for warning in mix.warnings:
        _console(stderr=True).print(f"warning: {warning}")
    return 0


def cmd_filter_dedup(args: argparse.Namespace) -> int:
    from filters.dedup import dedup_jsonl

    path = Path(args.input)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    err = _console(stderr=True)
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
        _print_json(stats)
        return 0
    _console().print(
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
        with _console(stderr=True).status(f"checking {path.name} against benchmarks"):
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
        _print_json(report.as_dict())
        return 0
    grams = " and ".join(str(n) for n in sorted(report.ns))
    _console().print(
        f"{path} -> {args.output}: {report.samples:,} rows checked for {grams}-gram overlap, "
        f"{report.contaminated:,} contaminated."
    )
    _table(
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


# -- parser --------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="r1f",
        description="r1-factory: a reasoning-data factory for the DeepSeek-R1 recipe.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(
        group: Any, name: str, handler: Callable[[argparse.Namespace], int], help: str
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = group.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler)
        p.add_argument("--json", action="store_true", help="print machine-readable JSON")
        return p

    datasets = commands.add_parser(
        "datasets", help="inspect, import and export versioned dataset tables"
    )
    datasets.add_argument(
        "--store",
        default=os.environ.get("R1F_STORE", DEFAULT_STORE),
        help="store root: a directory or object-store URI (default: $R1F_STORE or work/store)",
    )
    ds = datasets.add_subparsers(dest="datasets_command", metavar="COMMAND", required=True)
    add(ds, "list", cmd_datasets_list, "list the tables in the store")
    p = add(ds, "show", cmd_datasets_show, "show one table version: size, lineage, composition")
    p.add_argument("ref", metavar="NAME[@VERSION]")
    p.add_argument("--rows", type=int, default=5, help="preview rows (default 5)")
    p = add(ds, "history", cmd_datasets_history, "list a table's commits, newest first")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--limit", type=int, default=None)
    p = add(ds, "diff", cmd_datasets_diff, "rows added, removed and changed between two versions")
    p.add_argument("old", metavar="NAME@A")
    p.add_argument("new", metavar="NAME@B")
    p = add(
        ds, "import", cmd_datasets_import, "import JSONL/Parquet rows; bad rows are quarantined"
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument("--table", required=True, metavar="NAME")
    p = add(
        ds, "export", cmd_datasets_export, "export a version as a release (shards, manifest, card)"
    )
    p.add_argument("ref", metavar="NAME@VERSION")
    p.add_argument("--to", required=True, metavar="DIR")
    p.add_argument("--shard-mb", type=int, default=512, help="uncompressed MB per shard")
    p = add(ds, "verify", cmd_datasets_verify, "check a release's shards against its manifest")
    p.add_argument("dir", metavar="DIR")
    p = add(ds, "card", cmd_datasets_card, "render the dataset card of a version")
    p.add_argument("ref", metavar="NAME[@VERSION]")
    p.add_argument("--to", required=True, metavar="DIR")
    p = add(
        ds, "vacuum", cmd_datasets_vacuum, "remove files no version references (killed writers)"
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("--apply", action="store_true", help="delete; without it, only list")

    verify = commands.add_parser(
        "verify", help="verify completions: math answers, code against tests"
    )
    vf = verify.add_subparsers(dest="verify_command", metavar="COMMAND", required=True)
    p = add(
        vf, "math", cmd_verify_math, "check answers against gold (sympy, hang-proof worker pool)"
    )
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per check (default 5)")
    p = add(vf, "code", cmd_verify_code, "run code against tests in the sealed sandbox")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per run (default 10)")
    for p in vf.choices.values():
        p.add_argument("--input", required=True, metavar="IN.jsonl")
        p.add_argument("--output", required=True, metavar="OUT.jsonl")
        p.add_argument("--workers", type=int, default=os.cpu_count() or 1)

    config = commands.add_parser("config", help="inspect run configs")
    cfg = config.add_subparsers(dest="config_command", metavar="COMMAND", required=True)
    p = add(cfg, "show", cmd_config_show, "print a config file fully resolved (defaults, extends)")
    p.add_argument("file", metavar="FILE")

    p = add(
        commands, "demo", cmd_demo, "run the recipe, as far as it is built, at toy scale on the CPU"
    )
    p.add_argument("--config", default="configs/demo.yaml", metavar="FILE")

    model = commands.add_parser("model", help="create and inspect model checkpoints")
    md = model.add_subparsers(dest="model_command", metavar="COMMAND", required=True)
    p = add(md, "init", cmd_model_init, "randomly initialise a checkpoint (with a toy tokenizer)")
    p.add_argument("--preset", default=None, help="tiny, debug, vllm_tiny, ... (trainer.model)")
    p.add_argument(
        "--config", default=None, metavar="FILE", help="YAML/JSON ModelArgs or config.json"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--force", action="store_true", help="write into a non-empty directory")
    p = add(md, "info", cmd_model_info, "shapes, parameters and KV-cache bytes of a checkpoint")
    p.add_argument("dir", metavar="DIR")

    p = add(commands, "generate", cmd_generate, "sample completions from a local checkpoint")
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

    filt = commands.add_parser(
        "filter", help="filter, dedup, decontaminate and assemble the SFT mixture"
    )
    fl = filt.add_subparsers(dest="filter_command", metavar="COMMAND", required=True)
    p = add(fl, "run", cmd_filter_run, "filter store tables and assemble the SFT mixture")
    p.add_argument("--config", required=True, metavar="FILE", help="run config with a filter:")
    p = add(fl, "dedup", cmd_filter_dedup, "mark exact or near duplicates in a JSONL file")
    p.add_argument("--input", required=True, metavar="IN.jsonl", help="rows with a unique id")
    p.add_argument("--output", required=True, metavar="OUT.jsonl")
    p.add_argument("--field", default="completion", help="text to compare (default completion)")
    p.add_argument(
        "--threshold", type=float, default=0.8, metavar="J", help="Jaccard (default 0.8)"
    )
    p.add_argument("--method", choices=("near", "exact"), default="near")
    p.add_argument("--id-field", default="id", help="field holding each row's id (default id)")
    p.add_argument("--num-perm", type=int, default=128, help="MinHash permutations")
    p = add(
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except UserError as err:
        sys.stderr.write(f"r1f: error: {err}\n")
        return 2
    except Exception as err:
        # Errors from our own layers carry messages meant for users; show them plainly.
        from store.config import ConfigError
        from store.store import StoreError

        if isinstance(err, StoreError | ConfigError):
            sys.stderr.write(f"r1f: error: {err}\n")
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
