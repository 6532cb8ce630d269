"""The versioned dataset store: named Delta Lake tables under one root.

A table is a Delta Lake table at `ROOT/NAME`. Every write is one Delta commit,
which is atomic: the data files are written first and become visible only
when the commit's log entry lands, so a writer killed half-way leaves the
previous version exactly as it was (the orphaned files are invisible to
readers and removed by `vacuum`). Each commit carries a `Lineage` in its
metadata. Reads go through polars (`scan`) or stream Arrow batches straight
from the version's Parquet files (`iter_batches`), so a table far larger than
memory can be read, diffed and exported.

Sample tables are keyed by `sample_id`: an `append` skips rows whose key is
already in the table (or earlier in the same input), so a rerun after a crash
finishes the work without duplicates.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
from deltalake import CommitProperties, DeltaTable, WriterProperties, write_deltalake
from deltalake.exceptions import TableNotFoundError

from store.lineage import LINEAGE_KEY, CommitInfo, Lineage, commit_info_from_delta
from store.record import QUARANTINE_SCHEMA, SAMPLE_SCHEMA, with_content_hashes

QUARANTINE_SUFFIX = ".quarantine"
_TABLE_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,127}$")
_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://")

# zstd keeps long CoT text small; row groups of a few thousand rows keep the
# memory of a streaming reader (one row group at a time) in the tens of MB.
_WRITER_PROPERTIES = WriterProperties(
    compression="ZSTD", compression_level=3, max_row_group_size=4096
)
_TARGET_FILE_BYTES = 256 * 1024 * 1024

CommitMode: TypeAlias = Literal["append", "overwrite"]
Data: TypeAlias = pa.Table | pa.RecordBatch | pa.RecordBatchReader | Iterable[pa.RecordBatch]


class StoreError(Exception):
    """A store operation failed for a reason the user can act on."""


@dataclass(frozen=True)
class StoreConfig:
    """Where the store lives. `root` is a local directory or an object-store URI."""

    root: str = "work/store"
    # Passed unchanged to deltalake/object_store (credentials, endpoints, ...).
    storage_options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CommitResult:
    table: str
    version: int  # the table's version after the call (unchanged when nothing was written)
    rows_written: int
    rows_skipped: int  # keys already in the table, or repeated within the input
    created: bool  # whether a new version was committed


@dataclass(frozen=True)
class TableInfo:
    name: str
    kind: Literal["samples", "quarantine"]
    version: int
    rows: int
    files: int
    bytes: int
    last_commit: CommitInfo

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "version": self.version,
            "rows": self.rows,
            "files": self.files,
            "bytes": self.bytes,
            "last_commit": self.last_commit.to_dict(),
        }


def schema_for(name: str) -> pa.Schema:
    return QUARANTINE_SCHEMA if name.endswith(QUARANTINE_SUFFIX) else SAMPLE_SCHEMA


def key_for(name: str) -> str:
    return "quarantine_id" if name.endswith(QUARANTINE_SUFFIX) else "sample_id"


def check_table_name(name: str) -> None:
    base = name.removesuffix(QUARANTINE_SUFFIX)
    if not _TABLE_NAME.match(base):
        raise StoreError(
            f"invalid table name {name!r}: use lowercase letters, digits, '_' and '-' "
            f"(starting with a letter or digit), e.g. 'toy-math'"
        )


class Store:
    """Named, versioned Delta Lake tables under one root (a directory or a URI)."""

    def __init__(
        self, root: str | os.PathLike[str], storage_options: Mapping[str, str] | None = None
    ):
        root = os.fspath(root)
        # An object-store URI passes through untouched; a local path is made absolute
        # so that table URIs stay valid whatever the working directory becomes.
        self.is_remote = bool(_URI.match(root)) and not root.startswith("file://")
        self.root = root.rstrip("/") if self.is_remote else os.path.abspath(root)
        self.storage_options = dict(storage_options or {})

    @classmethod
    def from_config(cls, config: StoreConfig) -> Store:
        return cls(config.root, config.storage_options)

    def __repr__(self) -> str:
        return f"Store({self.root!r})"

    # -- naming and opening -------------------------------------------------

    def uri(self, name: str) -> str:
        check_table_name(name)
        return f"{self.root}/{name}" if self.is_remote else os.path.join(self.root, name)

    def tables(self) -> list[str]:
        """Names of all tables under the root, sorted."""
        if self.is_remote:
            fs, path = pafs.FileSystem.from_uri(self.root)
            entries = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
            names = [e.base_name for e in entries if e.type == pafs.FileType.Directory]
            return sorted(n for n in names if self.exists(n))
        if not os.path.isdir(self.root):
            return []
        return sorted(
            n
            for n in os.listdir(self.root)
            if os.path.isdir(os.path.join(self.root, n, "_delta_log"))
        )

    def exists(self, name: str) -> bool:
        return DeltaTable.is_deltatable(self.uri(name), storage_options=self.storage_options)

    def _open(self, name: str, version: int | None = None) -> DeltaTable:
        uri = self.uri(name)
        try:
            table = DeltaTable(uri, storage_options=self.storage_options)
        except TableNotFoundError:
            known = ", ".join(self.tables()) or "none yet"
            raise StoreError(f"no table {name!r} in store {self.root} (tables: {known})") from None
        if version is not None:
            latest = table.version()
            if not 0 <= version <= latest:
                raise StoreError(f"{name}@{version}: no such version (versions 0..{latest})")
            table.load_as_version(version)
        return table

    def latest_version(self, name: str) -> int:
        return self._open(name).version()

    # -- reading ------------------------------------------------------------

    def info(self, name: str, version: int | None = None) -> TableInfo:
        table = self._open(name, version)
        actions = pa.table(table.get_add_actions(flatten=True))
        ver = table.version()
        return TableInfo(
            name=name,
            kind="quarantine" if name.endswith(QUARANTINE_SUFFIX) else "samples",
            version=ver,
            rows=int(pc.sum(actions["num_records"]).as_py() or 0),
            files=actions.num_rows,
            bytes=int(pc.sum(actions["size_bytes"]).as_py() or 0),
            last_commit=self.commit_info(name, ver),
        )

    def history(self, name: str, limit: int | None = None) -> list[CommitInfo]:
        """Commits, newest first."""
        return [commit_info_from_delta(e) for e in self._open(name).history(limit)]

    def commit_info(self, name: str, version: int) -> CommitInfo:
        for entry in self.history(name):
            if entry.version == version:
                return entry
        raise StoreError(f"{name}@{version}: no commit entry in the table's log")

    def scan(self, name: str, version: int | None = None) -> pl.LazyFrame:
        """A lazy polars frame over one version (the latest by default)."""
        self._open(name, version)  # clear errors for unknown tables and versions
        return pl.scan_delta(
            self.uri(name), version=version, storage_options=self.storage_options or None
        )

    def read(
        self, name: str, version: int | None = None, columns: list[str] | None = None
    ) -> pl.DataFrame:
        lf = self.scan(name, version)
        return (lf.select(columns) if columns else lf).collect()

    def iter_batches(
        self,
        name: str,
        version: int | None = None,
        columns: list[str] | None = None,
        batch_rows: int = 4096,
    ) -> Iterator[pa.RecordBatch]:
        """Stream a version as Arrow batches in the table's schema, one row group at a time.

        The table is opened (and a bad name or version raised) when this is
        called; reading starts at the first batch asked for, so several
        streams can be set up at once without holding each other's data.
        """
        table = self._open(name, version)
        schema = schema_for(name)
        if columns:
            schema = pa.schema([schema.field(c) for c in columns])
        files = table.file_uris()
        filesystem = None
        if self.is_remote:
            filesystem, _ = pafs.FileSystem.from_uri(self.root)
            files = [pafs.FileSystem.from_uri(f)[1] for f in files]
        return _scan(files, schema, filesystem, batch_rows)

    def content_hash(self, name: str, version: int | None = None) -> str:
        """A digest of a version's content, independent of row order and file layout."""
        key = "content_hash" if schema_for(name) is SAMPLE_SCHEMA else "quarantine_id"
        hashes = self.read(name, version, [key]).get_column(key).sort()
        return hashlib.sha256("\n".join(hashes.to_list()).encode()).hexdigest()[:32]

    # -- writing ------------------------------------------------------------

    def commit(
        self,
        name: str,
        data: Data,
        *,
        lineage: Lineage,
        mode: CommitMode = "append",
    ) -> CommitResult:
        """Write rows as one atomic commit and return what happened.

        `append` adds rows whose key is not in the table yet; `overwrite` makes
        the new version exactly these rows. Repeated keys within the input are
        kept once (the first). Sample rows get their `content_hash` recomputed.
        An append that adds nothing makes no new version.
        """
        schema = schema_for(name)
        key = key_for(name)
        exists = self.exists(name)
        existing: set[str] = set()
        if exists and mode == "append":
            existing = set(self.read(name, columns=[key]).get_column(key).to_list())
        seen: set[str] = set()
        counts = {"written": 0, "skipped": 0}

        def fresh_rows() -> Iterator[pa.RecordBatch]:
            for batch in _batches(data, schema, name):
                if schema is SAMPLE_SCHEMA:
                    batch = with_content_hashes(batch)
                keep = []
                for k in batch.column(key).to_pylist():
                    new = k not in existing and k not in seen
                    if new:
                        seen.add(k)
                    keep.append(new)
                batch = batch.filter(pa.array(keep, pa.bool_()))
                counts["written"] += batch.num_rows
                counts["skipped"] += len(keep) - batch.num_rows
                if batch.num_rows:
                    yield batch

        rows = fresh_rows()
        first = next(rows, None)
        if first is None and mode == "append":
            version = self.latest_version(name) if exists else -1
            return CommitResult(name, version, 0, counts["skipped"], created=False)

        def all_rows() -> Iterator[pa.RecordBatch]:
            if first is not None:
                yield first
            yield from rows

        reader = pa.RecordBatchReader.from_batches(schema, all_rows())
        write_deltalake(
            self.uri(name),
            reader,
            mode=mode,
            storage_options=self.storage_options or None,
            target_file_size=_TARGET_FILE_BYTES,
            writer_properties=_WRITER_PROPERTIES,
            commit_properties=_commit_properties(lineage),
        )
        version = self.latest_version(name)
        return CommitResult(name, version, counts["written"], counts["skipped"], created=True)

    def upsert(self, name: str, data: Data, *, lineage: Lineage) -> CommitResult:
        """Update rows whose key exists (when their content changed) and insert the rest."""
        schema = schema_for(name)
        key = key_for(name)
        batches = [
            with_content_hashes(b) if schema is SAMPLE_SCHEMA else b
            for b in _batches(data, schema, name)
        ]
        source = pa.Table.from_batches(batches, schema=schema)
        if not self.exists(name):
            return self.commit(name, source, lineage=lineage, mode="append")
        dupes = source.num_rows - len(set(source.column(key).to_pylist()))
        if dupes:
            raise StoreError(f"upsert into {name}: {dupes} repeated {key} values in the input")
        changed = "t.content_hash <> s.content_hash" if schema is SAMPLE_SCHEMA else None
        metrics = (
            self._open(name)
            .merge(
                source,
                predicate=f"t.{key} = s.{key}",
                source_alias="s",
                target_alias="t",
                writer_properties=_WRITER_PROPERTIES,
                commit_properties=_commit_properties(lineage),
            )
            .when_matched_update_all(predicate=changed)
            .when_not_matched_insert_all()
            .execute()
        )
        written = int(metrics.get("num_target_rows_inserted", 0)) + int(
            metrics.get("num_target_rows_updated", 0)
        )
        return CommitResult(
            name, self.latest_version(name), written, source.num_rows - written, created=True
        )

    def delete(self, name: str, keys: Iterable[str], *, lineage: Lineage) -> CommitResult:
        """Remove the rows with these keys in one commit (older versions keep them)."""
        key = key_for(name)
        ids = pa.table({key: pa.array(sorted(set(keys)), pa.string())})
        if ids.num_rows == 0:
            return CommitResult(name, self.latest_version(name), 0, 0, created=False)
        metrics = (
            self._open(name)
            .merge(
                ids,
                predicate=f"t.{key} = s.{key}",
                source_alias="s",
                target_alias="t",
                writer_properties=_WRITER_PROPERTIES,
                commit_properties=_commit_properties(lineage),
            )
            .when_matched_delete()
            .execute()
        )
        deleted = int(metrics.get("num_target_rows_deleted", 0))
        return CommitResult(
            name, self.latest_version(name), deleted, ids.num_rows - deleted, created=True
        )

    def vacuum(self, name: str, *, dry_run: bool = True) -> list[str]:
        """Files no version references any more (e.g. left by a killed writer), removed unless dry_run.

        Retention is zero: only files outside every version's snapshot are
        candidates, so time travel to the versions still in the log keeps working.
        """
        table = self._open(name)
        referenced: set[str] = set()
        for v in range(table.version() + 1):
            table.load_as_version(v)
            referenced.update(os.path.basename(f) for f in table.file_uris())
        table = self._open(name)
        candidates = table.vacuum(retention_hours=0, dry_run=True, enforce_retention_duration=False)
        orphans = [c for c in candidates if os.path.basename(c) not in referenced]
        if not dry_run:
            for path in orphans:
                os.remove(os.path.join(self.uri(name), path))
        return orphans


def _commit_properties(lineage: Lineage) -> CommitProperties:
    return CommitProperties(custom_metadata={LINEAGE_KEY: lineage.to_json()})


def _scan(
    files: list[str], schema: pa.Schema, filesystem: Any, batch_rows: int
) -> Iterator[pa.RecordBatch]:
    if not files:
        return
    dataset = pads.dataset(files, format="parquet", filesystem=filesystem)
    # Default readahead keeps ~4 files x 16 batches in flight (4-5 GB on long
    # texts); one file and a few batches keep a full scan under 1 GB.
    batches = dataset.to_batches(
        columns=schema.names, batch_size=batch_rows, batch_readahead=4, fragment_readahead=1
    )
    for batch in batches:
        yield batch.cast(schema)


def _batches(data: Data, schema: pa.Schema, name: str) -> Iterator[pa.RecordBatch]:
    """Normalise any accepted input to batches in `schema`, with a clear error on mismatch."""
    if isinstance(data, pa.Table):
        items: Iterable[pa.RecordBatch] = data.to_batches()
    elif isinstance(data, pa.RecordBatch):
        items = [data]
    else:
        items = data
    for batch in items:
        if batch.schema.equals(schema):
            yield batch
            continue
        missing = [f for f in schema.names if f not in batch.schema.names]
        extra = [f for f in batch.schema.names if f not in schema.names]
        if missing or extra:
            raise StoreError(
                f"writing {name}: columns do not match the table schema "
                f"(missing: {missing or 'none'}; unexpected: {extra or 'none'})"
            )
        try:
            yield batch.select(schema.names).cast(schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as err:
            raise StoreError(f"writing {name}: cannot convert to the table schema: {err}") from err
