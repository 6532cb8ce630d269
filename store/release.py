"""Export a table version as a release directory that `datasets` loads offline.

Layout::

    DIR/manifest.json                      what is here, with a sha256 per shard
    DIR/README.md                          the dataset card (written by a card hook)
    DIR/data/train-00000-of-00002.parquet  zstd Parquet shards in the Sample schema

The release is assembled in a staging directory beside DIR and renamed into
place at the end, so an interrupted export never leaves a half-written DIR.
The store does not render cards itself (data_cards depends on store, not the
reverse); callers pass `write_card`, which runs inside the staging directory:
`data_cards.from_store.release_card_writer(store)` writes the version's card,
the same text `r1f datasets card` renders, with the reports stored with it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from store.store import Store, StoreError, schema_for

MANIFEST = "manifest.json"
FORMAT = "r1f-release/1"
DATA_FILES = {"train": "data/train-*.parquet"}  # split -> glob, relative to the release root
DEFAULT_SHARD_BYTES = 512 * 1024 * 1024  # uncompressed Arrow bytes per shard

CardWriter = Callable[[Path, dict[str, Any]], object]  # (staging dir, manifest): writes README.md
Progress = Callable[[int], None]


@dataclass(frozen=True)
class Release:
    path: Path
    manifest: dict[str, Any]


def export_release(
    store: Store,
    name: str,
    version: int,
    to_dir: str | os.PathLike[str],
    *,
    write_card: CardWriter | None = None,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    progress: Progress | None = None,
) -> Release:
    """Write `name@version` to `to_dir` as shards + manifest (+ card); returns the manifest."""
    target = Path(to_dir)
    if target.exists() and not target.is_dir():
        raise StoreError(f"{target} is a file; export into a new directory")
    if target.exists() and any(target.iterdir()):
        raise StoreError(f"{target} exists and is not empty; export into a new directory")
    if shard_bytes < 1:
        raise StoreError(f"shard_bytes must be >= 1, got {shard_bytes}")
    info = store.info(name, version)
    staging = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "data").mkdir(parents=True)
    try:
        shards = _write_shards(
            store.iter_batches(name, version), schema_for(name), staging, shard_bytes, progress
        )
        lineage = info.last_commit.lineage
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "name": name,
            "version": version,
            "rows": sum(s["rows"] for s in shards),
            "content_hash": store.content_hash(name, version),
            "committed_at": info.last_commit.timestamp.isoformat(),
            "lineage": json.loads(lineage.to_json()) if lineage else None,
            "data_files": DATA_FILES,
            "schema": [
                {"name": f.name, "type": str(f.type), "nullable": f.nullable}
                for f in schema_for(name)
            ],
            "shards": shards,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if write_card is not None:
            write_card(staging, manifest)
        if target.exists():
            target.rmdir()  # empty, checked above
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Release(target, manifest)


def _write_shards(
    batches: Iterator[pa.RecordBatch],
    schema: pa.Schema,
    root: Path,
    shard_bytes: int,
    progress: Progress | None,
) -> list[dict[str, Any]]:
    paths: list[Path] = []
    rows: list[int] = []
    writer: pq.ParquetWriter | None = None
    size = 0
    for batch in _split_to_budget(batches, shard_bytes):
        if writer is None or size >= shard_bytes:
            if writer is not None:
                writer.close()
            paths.append(root / "data" / f"shard-{len(paths):05d}.parquet")
            rows.append(0)
            writer = pq.ParquetWriter(paths[-1], schema, compression="zstd", compression_level=3)
            size = 0
        writer.write_batch(batch, row_group_size=4096)
        size += batch.nbytes
        rows[-1] += batch.num_rows
        if progress:
            progress(batch.num_rows)
    if writer is not None:
        writer.close()
    else:  # an empty version still gets one (empty) shard, so loaders see the schema
        paths.append(root / "data" / "shard-00000.parquet")
        rows.append(0)
        pq.write_table(schema.empty_table(), paths[-1], compression="zstd")
    shards = []
    for i, (path, count) in enumerate(zip(paths, rows, strict=True)):
        final = path.with_name(f"train-{i:05d}-of-{len(paths):05d}.parquet")
        path.rename(final)
        shards.append(
            {
                "path": final.relative_to(root).as_posix(),
                "rows": count,
                "bytes": final.stat().st_size,
                "sha256": _sha256(final),
            }
        )
    return shards


def _split_to_budget(batches: Iterator[pa.RecordBatch], budget: int) -> Iterator[pa.RecordBatch]:
    """Slice batches so that none spans much more than a quarter of a shard's budget."""
    piece = max(1, budget // 4)
    for batch in batches:
        if batch.nbytes <= piece:
            yield batch
            continue
        step = max(1, batch.num_rows * piece // batch.nbytes)
        for start in range(0, batch.num_rows, step):
            yield batch.slice(start, step)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify_release(path: str | os.PathLike[str]) -> list[str]:
    """Check a release against its manifest; returns the problems found (empty: intact)."""
    root = Path(path)
    if not root.is_dir():
        what = "is a file" if root.exists() else "no such directory"
        return [f"{root}: {what}; name a release directory (r1f datasets export --to DIR)"]
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        return [f"{manifest_path}: missing"]
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        return [f"{manifest_path}: invalid JSON ({err})"]
    except UnicodeDecodeError as err:
        return [f"{manifest_path}: not UTF-8 ({err.reason} at byte {err.start + 1})"]
    shards = manifest.get("shards") if isinstance(manifest, dict) else None
    if not isinstance(shards, list):
        return [f"{manifest_path}: not a release manifest (no 'shards' list)"]
    problems = []
    listed = set()
    for i, shard in enumerate(shards):
        fields = {"path": str, "bytes": int, "sha256": str}
        if not isinstance(shard, dict) or any(
            not isinstance(shard.get(k), t) for k, t in fields.items()
        ):
            problems.append(
                f"{manifest_path}: shards[{i}] needs a string path, an integer bytes and "
                "a string sha256"
            )
            continue
        file = root / shard["path"]
        listed.add(file.resolve())
        if not file.is_file():
            problems.append(f"{shard['path']}: missing")
        elif file.stat().st_size != shard["bytes"]:
            problems.append(
                f"{shard['path']}: {file.stat().st_size} bytes, manifest says {shard['bytes']}"
            )
        elif _sha256(file) != shard["sha256"]:
            problems.append(f"{shard['path']}: sha256 differs from the manifest")
    for extra in sorted((root / "data").glob("*.parquet")):
        if extra.resolve() not in listed:
            problems.append(f"{extra.relative_to(root)}: not in the manifest")
    return problems
