"""`r1f datasets ...`: inspect, import, export and vacuum the versioned tables."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from flows.cli.common import (
    EXIT_NO_VALID_INPUT,
    UserError,
    add_command,
    add_group,
    cli_lineage,
    human_bytes,
    input_file,
    make_console,
    new_directory,
    non_negative_int,
    on_interrupt,
    open_store,
    parse_ref,
    positive_int,
    print_json,
    print_table,
    progress_bar,
    warn,
    warn_bad_lines,
    watch_store,
    when,
)


def cmd_datasets_list(args: argparse.Namespace) -> int:
    store = open_store(args)
    infos = [store.info(name) for name in store.tables()]
    if args.json:
        print_json([i.to_dict() for i in infos])
        return 0
    if not infos:
        make_console().print(f"No tables in {store.root} yet.")
        return 0
    print_table(
        f"Tables in {store.root}",
        ["name", "kind", "version", "rows", "size", "last commit", "writer"],
        [
            (
                i.name,
                i.kind,
                i.version,
                f"{i.rows:,}",
                human_bytes(i.bytes),
                when(i.last_commit.timestamp),
                i.last_commit.lineage.writer if i.last_commit.lineage else "",
            )
            for i in infos
        ],
    )
    return 0


def cmd_datasets_show(args: argparse.Namespace) -> int:
    import polars as pl

    from store.store import key_for

    store = open_store(args)
    name, version = parse_ref(args.ref)
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
    reports = store.reports(name, info.version)
    used_by = _used_by(store, name, info.version)
    if args.json:
        print_json(
            {
                **info.to_dict(),
                "reports": reports.to_dict(),
                "used_by": None if used_by is None else [u.to_dict() for u in used_by],
                "content_hash": store.content_hash(name, info.version)
                if info.kind == "samples"
                else None,
                "composition": composition.to_dicts(),
                "preview": preview.to_dicts(),
            }
        )
        return 0
    console = make_console()
    console.print(f"{name}@{info.version}  ({info.kind})", style="bold")
    facts = [
        ("rows", f"{info.rows:,}"),
        ("files", f"{info.files} ({human_bytes(info.bytes)})"),
        ("committed", when(info.last_commit.timestamp) + " UTC"),
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
    described = ", ".join(f"{r.kind} (v{r.version})" for r in reports.reports)
    if not reports.complete:
        described += f" (log cleaned up before v{reports.searched_from})"
    facts.append(("reports", described or "none stored"))
    if used_by is not None:
        models = ", ".join(f"{u.model} ({u.stage})" for u in used_by[:3])
        more = f" and {len(used_by) - 3} more" if len(used_by) > 3 else ""
        facts.append(
            ("used by", f"{len(used_by)} model(s): {models}{more}" if used_by else "no model yet")
        )
    print_table(None, ["", ""], facts)
    print_table("Composition", [*groups, "rows"], composition.rows())
    shown = preview.with_columns(
        [pl.col(c).cast(pl.String).str.slice(0, 60) for c in preview.columns]
    )
    print_table(f"First {preview.height} rows", preview.columns, shown.rows())
    return 0


def _used_by(store: Any, name: str, version: int) -> list[Any] | None:
    """The models trained on this version, or None (with a warning) when that cannot be told:
    a remote store keeps no usage records, or a record is unreadable."""
    from store.store import StoreError
    from store.usage import model_uses

    if store.is_remote:
        return None
    try:
        return model_uses(store, name, version)
    except StoreError as err:
        warn(f"used by: {err}")
        return None


def cmd_datasets_usage(args: argparse.Namespace) -> int:
    """Which models were trained on a table (at one version, or at any)."""
    from store.usage import model_uses

    store = open_store(args)
    name, version = parse_ref(args.ref)
    info = store.info(name, version)  # StoreError (one line) for an unknown table or version
    if store.is_remote:
        raise UserError(f"{store.root}: model-usage records are kept for local stores only")
    uses = model_uses(store, name, version)
    if args.json:
        print_json([{**u.to_dict(), "model_exists": Path(u.model).exists()} for u in uses])
        return 0
    which = f"{name}@{version}" if version is not None else f"{name} (any version)"
    if not uses:
        make_console().print(f"No model recorded as trained on {which} (latest: v{info.version}).")
        return 0
    print_table(
        f"Models trained on {which}",
        ["version", "model", "stage", "steps", "config hash", "recorded", "on disk"],
        [
            (
                u.version,
                u.model,
                u.stage,
                u.steps,
                (u.config_hash or "")[:12],
                u.recorded_at[:19].replace("T", " "),
                "yes" if Path(u.model).exists() else "no",
            )
            for u in uses
        ],
    )
    return 0


def cmd_datasets_history(args: argparse.Namespace) -> int:
    from store.diff import history_with_row_changes

    store = open_store(args)
    # Overwrites get the diff's counts, so history and `r1f datasets diff` agree.
    commits = history_with_row_changes(store, args.name, args.limit)
    if args.json:
        print_json([c.to_dict() for c in commits])
        return 0
    print_table(
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
                when(c.timestamp),
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

    name_a, ver_a = parse_ref(args.old, need_version=True)
    name_b, ver_b = parse_ref(args.new, need_version=True)
    if name_a != name_b:
        raise UserError(f"diff compares two versions of one table, got {name_a} and {name_b}")
    assert ver_a is not None and ver_b is not None
    with make_console(stderr=True).status(f"diffing {name_a}@{ver_a} and @{ver_b}"):
        diff = diff_versions(open_store(args), name_a, ver_a, ver_b)
    if args.json:
        print_json(diff.to_dict())
        return 0
    print_table(
        f"{name_a}@{ver_a} -> {name_a}@{ver_b}",
        ["rows before", "rows after", "added", "removed", "changed", "unchanged"],
        [(diff.old_rows, diff.new_rows, diff.added, diff.removed, diff.changed, diff.unchanged)],
    )
    keys = ["domain", "track", "source", "old", "new", "delta", "added", "removed", "changed"]
    print_table(
        "Composition",
        keys,
        [[row[k] if k != "delta" else f"{row[k]:+d}" for k in keys] for row in diff.composition],
    )
    return 0


def cmd_datasets_import(args: argparse.Namespace) -> int:
    from store.ingest import import_file

    path = input_file(args.file, None)
    if path.suffix.lower() not in (".jsonl", ".parquet"):
        raise UserError(f"{path}: unsupported file type {path.suffix!r}; use .jsonl or .parquet")
    store = open_store(args, must_exist=False)
    total = path.stat().st_size if path.suffix.lower() == ".jsonl" else None
    unit = "bytes" if total is not None else "rows"
    bar, advance = progress_bar(f"importing {path.name}", total, unit)
    with watch_store(store, "rerun the same command to finish the import"), bar:
        report = import_file(
            store,
            path,
            args.table,
            lineage=cli_lineage("r1f datasets import"),
            progress=advance,
            mode=args.mode,
        )
    if args.json:
        print_json(report.to_dict())
    else:
        warn_bad_lines(
            {"bad_lines": report.invalid, "bad_line_examples": report.bad_line_examples},
            f"quarantined in {report.table}.quarantine",
        )
        console = make_console()
        if report.mode == "upsert":
            outcome = (
                f"{report.written - report.updated:,} new, {report.updated:,} replacing a "
                f"stored row, {report.already_present:,} unchanged"
            )
        else:
            outcome = (
                f"{report.written:,} new, {report.already_present:,} already in {report.table}"
            )
        console.print(
            f"{path}: read {report.rows_read:,} rows: {report.valid:,} valid ({outcome}), "
            f"{report.invalid:,} quarantined."
        )
        if report.mode == "append" and report.already_present:
            console.print(
                f"Rows already in {report.table} (same sample_id) are left as stored; to replace "
                f"them with this file's rows (a corrected completion, a new verdict), run: "
                f"r1f datasets import {path} --table {report.table} --mode upsert"
            )
        if report.dropped_fields:
            console.print(
                f"Not stored: {', '.join(report.dropped_fields)} (generation-only fields; "
                "the Sample record does not hold them)."
            )
        if report.version >= 0:
            console.print(f"{report.table} is at version {report.version}.")
        if report.invalid:
            console.print(
                f"Quarantined rows are in {report.table}.quarantine@{report.quarantine_version} "
                f"(see: r1f datasets show {report.table}.quarantine)."
            )
            print_table(
                "Quarantine reasons",
                ["kind", "rows", "first example"],
                [(k, n, report.examples[k]) for k, n in report.reasons.items()],
            )
    if report.valid == 0:
        warn(f"{path}: no valid rows found")
        return EXIT_NO_VALID_INPUT
    return 0


def cmd_datasets_export(args: argparse.Namespace) -> int:
    from data_cards.from_store import release_card_writer
    from store.release import export_release

    store = open_store(args)
    name, version = parse_ref(args.ref, need_version=True)
    assert version is not None
    target = new_directory(args.to, "--to")
    rows = store.info(name, version).rows
    bar, advance = progress_bar(f"exporting {name}@{version}", rows, "rows")
    with on_interrupt(f"no release written: {target} was not created"), bar:
        release = export_release(
            store,
            name,
            version,
            target,
            write_card=release_card_writer(store),
            shard_bytes=args.shard_mb * 1024 * 1024,
            progress=advance,
        )
    if args.json:
        print_json({"path": str(release.path), **release.manifest})
        return 0
    m = release.manifest
    make_console().print(
        f"Exported {name}@{version}: {m['rows']:,} rows in {len(m['shards'])} shard(s) to "
        f"{release.path}\n  content hash {m['content_hash']}\n  card: {release.path / 'README.md'}\n"
        f'  load: datasets.load_dataset("{release.path}")'
    )
    return 0


def cmd_datasets_verify(args: argparse.Namespace) -> int:
    from store.release import verify_release

    release = Path(args.dir)
    if not release.is_dir():
        what = "is a file" if release.exists() else "no such directory"
        raise UserError(f"{release}: {what}; name a release directory (r1f datasets export --to)")
    problems = verify_release(release)
    if args.json:
        print_json({"path": args.dir, "ok": not problems, "problems": problems})
    elif problems:
        for p in problems:
            make_console(stderr=True).print(f"{args.dir}: {p}")
    else:
        make_console().print(f"{args.dir}: every shard matches the manifest.")
    return 1 if problems else 0


def cmd_datasets_card(args: argparse.Namespace) -> int:
    from data_cards.from_store import write_card_for_version

    store = open_store(args)
    name, version = parse_ref(args.ref)
    version = store.latest_version(name) if version is None else version
    target = Path(args.to)
    if target.exists() and not target.is_dir():
        raise UserError(f"--to {target}: is a file; name a directory for the card")
    path = write_card_for_version(store, name, version, target)
    if args.json:
        print_json({"card": str(path)})
    else:
        make_console().print(f"Card for {name}@{version} written to {path}")
    return 0


def cmd_datasets_vacuum(args: argparse.Namespace) -> int:
    with on_interrupt("vacuum stopped part-way; the files it did not reach are still there"):
        orphans = open_store(args).vacuum(args.name, dry_run=not args.apply)
    if args.json:
        print_json({"table": args.name, "removed" if args.apply else "would_remove": orphans})
        return 0
    verb = "Removed" if args.apply else "Would remove (pass --apply to delete)"
    make_console().print(f"{verb} {len(orphans)} unreferenced file(s) in {args.name}.")
    for path in orphans:
        make_console().print(f"  {path}")
    return 0


def register(commands: Any) -> None:
    """Add `datasets` and its subcommands to the top-level subparsers."""
    ds = add_group(commands, "datasets", "inspect, import and export versioned dataset tables")

    def add(name: str, handler: Any, help: str) -> argparse.ArgumentParser:
        return add_command(ds, name, handler, help, uses_store=name != "verify")

    add("list", cmd_datasets_list, "list the tables in the store")
    p = add("show", cmd_datasets_show, "show one table version: size, lineage, composition")
    p.add_argument("ref", metavar="NAME[@VERSION]")
    p.add_argument("--rows", type=non_negative_int, default=5, help="preview rows (default 5)")
    p = add("usage", cmd_datasets_usage, "which models were trained on a table version")
    p.add_argument("ref", metavar="NAME[@VERSION]", help="without @VERSION: every version")
    p = add("history", cmd_datasets_history, "list a table's commits, newest first")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--limit", type=positive_int, default=None, help="newest N commits")
    p = add("diff", cmd_datasets_diff, "rows added, removed and changed between two versions")
    p.add_argument("old", metavar="NAME@A")
    p.add_argument("new", metavar="NAME@B")
    p = add("import", cmd_datasets_import, "import JSONL/Parquet rows; bad rows are quarantined")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--table", required=True, metavar="NAME")
    p.add_argument(
        "--mode",
        choices=("append", "upsert"),
        default="append",
        help="append (default): rows already stored are left as they are; "
        "upsert: they are replaced when their content differs",
    )
    p = add("export", cmd_datasets_export, "export a version as a release (shards, manifest, card)")
    p.add_argument("ref", metavar="NAME@VERSION")
    p.add_argument("--to", required=True, metavar="DIR", help="a new or empty directory")
    p.add_argument(
        "--shard-mb", type=positive_int, default=512, help="uncompressed MB per shard (default 512)"
    )
    p = add("verify", cmd_datasets_verify, "check a release's shards against its manifest")
    p.add_argument("dir", metavar="DIR")
    p = add("card", cmd_datasets_card, "render the dataset card of a version")
    p.add_argument("ref", metavar="NAME[@VERSION]")
    p.add_argument("--to", required=True, metavar="DIR")
    p = add("vacuum", cmd_datasets_vacuum, "remove files no version references (killed writers)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--apply", action="store_true", help="delete; without it, only list")
