"""`r1f datasets ...`: inspect, import, export and vacuum the versioned tables."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from flows.cli.common import (
    DEFAULT_STORE,
    UserError,
    add_command,
    cli_lineage,
    human_bytes,
    make_console,
    open_store,
    parse_ref,
    print_json,
    print_table,
    progress_bar,
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
    if args.json:
        print_json(
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
    console = make_console()
    console.print(f"[bold]{name}@{info.version}[/bold]  ({info.kind})")
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
    print_table(None, ["", ""], facts)
    print_table("Composition", [*groups, "rows"], composition.rows())
    shown = preview.with_columns(
        [pl.col(c).cast(pl.String).str.slice(0, 60) for c in preview.columns]
    )
    print_table(f"First {preview.height} rows", preview.columns, shown.rows())
    return 0


def cmd_datasets_history(args: argparse.Namespace) -> int:
    store = open_store(args)
    commits = store.history(args.name, args.limit)
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

    path = Path(args.file)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    total = path.stat().st_size if path.suffix.lower() == ".jsonl" else None
    unit = "bytes" if total is not None else "rows"
    progress, advance = progress_bar(f"importing {path.name}", total, unit)
    with progress:
        report = import_file(
            open_store(args),
            path,
            args.table,
            lineage=cli_lineage("r1f datasets import"),
            progress=advance,
        )
    if args.json:
        print_json(report.to_dict())
    else:
        console = make_console()
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
            print_table(
                "Quarantine reasons",
                ["kind", "rows", "first example"],
                [(k, n, report.examples[k]) for k, n in report.reasons.items()],
            )
    if report.valid == 0:
        make_console(stderr=True).print(f"error: {path}: no valid rows found")
        return 1
    return 0


def cmd_datasets_export(args: argparse.Namespace) -> int:
    from data_cards.from_store import write_card_for_version
    from store.release import DATA_FILES, export_release

    store = open_store(args)
    name, version = parse_ref(args.ref, need_version=True)
    assert version is not None
    rows = store.info(name, version).rows

    def write_card(staging: Path, manifest: dict[str, Any]) -> None:
        write_card_for_version(store, name, version, staging, data_files=DATA_FILES)

    progress, advance = progress_bar(f"exporting {name}@{version}", rows, "rows")
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

    problems = verify_release(args.dir)
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
    path = write_card_for_version(store, name, version, Path(args.to))
    if args.json:
        print_json({"card": str(path)})
    else:
        make_console().print(f"Card for {name}@{version} written to {path}")
    return 0


def cmd_datasets_vacuum(args: argparse.Namespace) -> int:
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
    datasets = commands.add_parser(
        "datasets", help="inspect, import and export versioned dataset tables"
    )
    datasets.add_argument(
        "--store",
        default=os.environ.get("R1F_STORE", DEFAULT_STORE),
        help="store root: a directory or object-store URI (default: $R1F_STORE or work/store)",
    )
    ds = datasets.add_subparsers(dest="datasets_command", metavar="COMMAND", required=True)
    add_command(ds, "list", cmd_datasets_list, "list the tables in the store")
    p = add_command(
        ds, "show", cmd_datasets_show, "show one table version: size, lineage, composition"
    )
    p.add_argument("ref", metavar="NAME[@VERSION]")
    p.add_argument("--rows", type=int, default=5, help="preview rows (default 5)")
    p = add_command(ds, "history", cmd_datasets_history, "list a table's commits, newest first")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--limit", type=int, default=None)
    p = add_command(
        ds, "diff", cmd_datasets_diff, "rows added, removed and changed between two versions"
    )
    p.add_argument("old", metavar="NAME@A")
    p.add_argument("new", metavar="NAME@B")
    p = add_command(
        ds, "import", cmd_datasets_import, "import JSONL/Parquet rows; bad rows are quarantined"
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument("--table", required=True, metavar="NAME")
    p = add_command(
        ds, "export", cmd_datasets_export, "export a version as a release (shards, manifest, card)"
    )
    p.add_argument("ref", metavar="NAME@VERSION")
    p.add_argument("--to", required=True, metavar="DIR")
    p.add_argument("--shard-mb", type=int, default=512, help="uncompressed MB per shard")
    p = add_command(
        ds, "verify", cmd_datasets_verify, "check a release's shards against its manifest"
    )
    p.add_argument("dir", metavar="DIR")
    p = add_command(ds, "card", cmd_datasets_card, "render the dataset card of a version")
    p.add_argument("ref", metavar="NAME[@VERSION]")
    p.add_argument("--to", required=True, metavar="DIR")
    p = add_command(
        ds, "vacuum", cmd_datasets_vacuum, "remove files no version references (killed writers)"
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("--apply", action="store_true", help="delete; without it, only list")
