"""The versioned dataset store: named Delta Lake tables under one root.

A table is a Delta Lake table at `ROOT/NAME`. Every write is one Delta commit,
which is atomic: the data files are written first and become visible only
when the commit's log entry lands, so a writer killed half-way leaves the
previous version exactly as it was (the orphaned files are invisible to
readers and removed by `vacuum`). A write interrupted with Ctrl-C under
`store.interrupt.watch_interrupts()` stops between two batches, before its
commit, for the same outcome. Each commit carries a `Lineage` in its
metadata, and the reports its writer attached (`store.reports`): the stage's
account of the version lands in the same atomic commit as its rows. Reads go through polars (`scan`) or stream Arrow batches straight
from the version's Parquet files (`iter_batches`), so a table far larger than
memory can be read, diffed and exported.

Sample tables are keyed by `sample_id`: an `append` skips rows whose key is
already in the table (or earlier in the same input), so a rerun after a crash
finishes the work without duplicates.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
from deltalake import CommitProperties, DeltaTable, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from store import events, interrupt
from store.lineage import LINEAGE_KEY, CommitInfo, Lineage, commit_info_from_delta
from store.record import QUARANTINE_SCHEMA, SAMPLE_SCHEMA, with_content_hashes
from store.reports import REPORTS_KEY, AttachedReport, Report, VersionReports, encode_reports

QUARANTINE_SUFFIX = ".quarantine"
_TABLE_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,127}$")
_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://")

# zstd keeps long CoT text small; row groups of a few thousand rows keep the
# memory of a streaming reader (one row group at a time) in the tens of MB.
_WRITER_PROPERTIES = WriterProperties(
    compression="ZSTD", compression_level=3, max_row_group_size=4096
)
_TARGET_FILE_BYTES = 256 * 1024 * 1024
# Columns holding free text (a completion may be megabytes) get no min/max
# statistics in the Delta log: each one would be copied into every commit's
# log entry, and the log is read in full to open a table.
LONG_TEXT_COLUMNS = frozenset(
    {"prompt", "completion", "reasoning", "answer", "gold", "raw", "reason"}
)

CommitMode: TypeAlias = Literal["append", "overwrite"]
Data: TypeAlias = pa.Table | pa.RecordBatch | pa.RecordBatchReader | Iterable[pa.RecordBatch]


class StoreError(Exception):
    """A store operation failed for a reason the user can act on."""


class StoreConflict(StoreError):
    """A conditional commit (`expect_version`) found the table moved on: another writer
    committed first. Nothing was committed; read again and retry."""


@dataclass(frozen=True)
class StoreConfig:
    """Where the store lives. `root` is a local directory or an object-store URI."""

    # A path written in a config file is relative to that file (store.config).
    root: str = field(default="work/store", metadata={"path": True})
    # Passed unchanged to deltalake/object_store (credentials, endpoints, ...).
    storage_options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CommitResult:
    table: str
    version: int  # the table's version after the call (unchanged when nothing was written)
    rows_written: int
    rows_skipped: int  # keys already in the table (unchanged, for upsert), or repeated in the input
    created: bool  # whether a new version was committed
    rows_updated: int = 0  # upsert: rows of rows_written that replaced a stored row


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


def stats_columns(schema: pa.Schema) -> list[str]:
    """The columns whose min/max go into the Delta log: short, flat ones only."""
    return [
        f.name for f in schema if f.name not in LONG_TEXT_COLUMNS and not pa.types.is_nested(f.type)
    ]


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
        if not self.check_root(must_exist=False):
            return []
        return sorted(
            n
            for n in os.listdir(self.root)
            if os.path.isdir(os.path.join(self.root, n, "_delta_log"))
        )

    def check_root(self, *, must_exist: bool = True) -> bool:
        """Whether the (local) root directory exists; StoreError when it is something else.

        A missing root is an error when `must_exist` (reading from a store that
        is not there is a wrong `--store`, not an empty store); writers create it.
        Object-store roots are not checked: a prefix exists once written to.
        """
        if self.is_remote:
            return True
        if os.path.isdir(self.root):
            return True
        if os.path.exists(self.root):
            raise StoreError(f"store {self.root}: is a file, not a directory; name a directory")
        if must_exist:
            raise StoreError(f"no store at {self.root}: the directory does not exist")
        return False

    def check_writable(self, name: str | None = None) -> None:
        """StoreError unless this process may write the table (or the root) here."""
        if self.is_remote:
            return  # object stores answer for themselves, on write
        self.check_root(must_exist=False)
        path = self.uri(name) if name is not None else self.root
        while not os.path.exists(path):
            path = os.path.dirname(path)
        # access() also reports a read-only file system (EROFS), for root too.
        if not os.access(path, os.W_OK | os.X_OK):
            raise StoreError(
                f"store {self.root}: cannot write to {path} (read-only or no permission)"
            )

    def exists(self, name: str) -> bool:
        return DeltaTable.is_deltatable(self.uri(name), storage_options=self.storage_options)

    def _open(self, name: str, version: int | None = None) -> DeltaTable:
        uri = self.uri(name)
        self.check_root()
        try:
            table = DeltaTable(uri, storage_options=self.storage_options)
        except TableNotFoundError:
            known = ", ".join(self.tables()) or "none yet"
            raise StoreError(f"no table {name!r} in store {self.root} (tables: {known})") from None
        except (DeltaError, OSError) as err:
            raise StoreError(
                f"table {name} in {self.root}: unreadable log ({_first_line(err)})"
            ) from None
        if version is not None:
            latest = table.version()
            if not 0 <= version <= latest:
                raise StoreError(f"{name}@{version}: no such version (versions 0..{latest})")
            try:
                table.load_as_version(version)
            except (DeltaError, OSError) as err:
                raise StoreError(f"{name}@{version}: unreadable log ({_first_line(err)})") from None
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

    def reports(self, name: str, version: int | None = None) -> VersionReports:
        """The reports that describe `name@version` (the latest by default).

        Per kind, the newest report stored with this version or with an
        earlier commit whose rows the version still holds: back to the last
        overwrite, which replaced every row, or to version 0. An empty result
        means no writer of those commits attached a report.
        """
        table = self._open(name, version)
        version = table.version()
        found: dict[str, tuple[int, int, AttachedReport]] = {}
        searched_from, complete = version, False
        for commit in self.history(name):  # newest first
            if commit.version > version:
                continue
            writer = commit.lineage.writer if commit.lineage else None
            for position, report in enumerate(commit.reports):
                if report.kind not in found:
                    attached = AttachedReport(report, commit.version, writer)
                    found[report.kind] = (commit.version, position, attached)
            searched_from = commit.version
            if commit.version == 0 or commit.mode == "Overwrite":
                complete = True
                break
        ordered = sorted(found.values(), key=lambda item: item[:2])
        return VersionReports(
            name, version, tuple(a for _, _, a in ordered), searched_from, complete
        )

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
        reports: Sequence[Report] = (),
        expect_version: int | None = None,
    ) -> CommitResult:
        """Write rows as one atomic commit and return what happened.

        `append` adds rows whose key is not in the table yet; `overwrite` makes
        the new version exactly these rows. Repeated keys within the input are
        kept once (the first). Sample rows get their `content_hash` recomputed.
        An append that adds nothing makes no new version (and stores no
        report). `reports` go into the same commit as the rows: see
        `store.reports`; a bad one is refused before anything is written.

        `expect_version`: commit only on top of that version (-1: only create
        the table); `StoreConflict` when another writer committed first. A
        report computed from the version it builds on (a running total) is then
        exact even with several writers: a loser reads again and retries.
        """
        schema = schema_for(name)
        key = key_for(name)
        properties = self._commit_properties(
            name, lineage, reports, retries=None if expect_version is None else 0
        )
        self.check_writable(name)
        exists = self.exists(name)
        target: str | DeltaTable = self.uri(name)
        if expect_version is not None:
            found = self.latest_version(name) if exists else -1
            if found != expect_version:
                raise StoreConflict(
                    f"{name}: at version {found}, not {expect_version}: another writer committed"
                )
            if exists:
                # The write starts from this snapshot and, without retries, fails rather than
                # rebase onto a commit that lands meanwhile.
                target = self._open(name, expect_version)
        existing: set[str] = set()
        if exists and mode == "append":
            existing = set(self.read(name, expect_version, columns=[key]).get_column(key).to_list())
        seen: set[str] = set()
        counts = {"written": 0, "skipped": 0}

        def fresh_rows() -> Iterator[pa.RecordBatch]:
            for batch in _batches(data, schema, name):
                interrupt.check()
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

        # deltalake pulls the rows on a thread of its own and reports an error
        # raised there as a DeltaError holding a traceback; keep the original.
        raised: list[BaseException] = []

        def watched() -> Iterator[pa.RecordBatch]:
            try:
                yield from all_rows()
                interrupt.check()  # the last chance to stop before the commit
            except BaseException as err:
                raised.append(err)
                raise

        reader = pa.RecordBatchReader.from_batches(schema, watched())
        try:
            write_deltalake(
                target,
                reader,
                mode=mode,
                storage_options=self.storage_options or None,
                target_file_size=_TARGET_FILE_BYTES,
                writer_properties=_WRITER_PROPERTIES,
                commit_properties=properties,
                configuration=None if exists else _table_configuration(schema),
            )
        except CommitFailedError as err:
            if expect_version is None:
                raise self._write_failed(name, err, raised) from None
            raise StoreConflict(
                f"{name}: another writer committed on top of version {expect_version} first"
            ) from None
        except (DeltaError, OSError) as err:
            raise self._write_failed(name, err, raised) from None
        version = self.latest_version(name)
        self._announce(name, version)
        return CommitResult(name, version, counts["written"], counts["skipped"], created=True)

    def upsert(
        self, name: str, data: Data, *, lineage: Lineage, reports: Sequence[Report] = ()
    ) -> CommitResult:
        """Update rows whose key exists (when their content changed) and insert the rest.

        `reports` go into the same commit (none is made when nothing changed).
        """
        schema = schema_for(name)
        key = key_for(name)
        properties = self._commit_properties(name, lineage, reports)
        self.check_writable(name)
        batches = []
        for b in _batches(data, schema, name):
            interrupt.check()
            batches.append(with_content_hashes(b) if schema is SAMPLE_SCHEMA else b)
        source = pa.Table.from_batches(batches, schema=schema)
        if not self.exists(name):
            return self.commit(name, source, lineage=lineage, mode="append", reports=reports)
        dupes = source.num_rows - len(set(source.column(key).to_pylist()))
        if dupes:
            raise StoreError(f"upsert into {name}: {dupes} repeated {key} values in the input")
        changed = "t.content_hash <> s.content_hash" if schema is SAMPLE_SCHEMA else None
        interrupt.check()
        target = self._open(name)
        before = target.version()
        try:
            metrics = (
                target.merge(
                    source,
                    predicate=f"t.{key} = s.{key}",
                    source_alias="s",
                    target_alias="t",
                    writer_properties=_WRITER_PROPERTIES,
                    commit_properties=properties,
                )
                .when_matched_update_all(predicate=changed)
                .when_not_matched_insert_all()
                .execute()
            )
        except (DeltaError, OSError) as err:
            raise self._write_failed(name, err, []) from None
        updated = int(metrics.get("num_target_rows_updated", 0))
        written = int(metrics.get("num_target_rows_inserted", 0)) + updated
        version = self.latest_version(name)
        if version != before:
            self._announce(name, version)
        return CommitResult(
            name,
            version,
            written,
            source.num_rows - written,
            created=version != before,
            rows_updated=updated,
        )

    def delete(
        self,
        name: str,
        keys: Iterable[str],
        *,
        lineage: Lineage,
        reports: Sequence[Report] = (),
    ) -> CommitResult:
        """Remove the rows with these keys in one commit (older versions keep them)."""
        key = key_for(name)
        properties = self._commit_properties(name, lineage, reports)
        self.check_writable(name)
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
                commit_properties=properties,
            )
            .when_matched_delete()
            .execute()
        )
        deleted = int(metrics.get("num_target_rows_deleted", 0))
        version = self.latest_version(name)
        self._announce(name, version)
        return CommitResult(name, version, deleted, ids.num_rows - deleted, created=True)

    def vacuum(self, name: str, *, dry_run: bool = True) -> list[str]:
        """Files under the table that no version references, removed unless dry_run.

        These are what a killed or interrupted writer leaves: data files whose
        commit never landed, partial files included, and everything of a table
        whose first commit never landed (there is then no version at all).
        Retention is zero, so time travel to every version in the log keeps
        working; a writer running on the table at the same time would lose
        the files it has not committed yet, so vacuum only a table at rest.
        """
        if not dry_run:
            self.check_writable(name)
        referenced: set[str] = set()
        if self.exists(name):
            table = self._open(name)
            for v in range(table.version() + 1):
                table.load_as_version(v)
                paths = pa.table(table.get_add_actions(flatten=False)).column("path")
                referenced.update(paths.to_pylist())
        elif not self._has_files(name):
            self._open(name)  # the usual "no table" error, listing the tables there are
        fs, base = self._filesystem(name)
        found = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        orphans = []
        for entry in found:
            relative = entry.path[len(base) :].lstrip("/")
            if entry.type != pafs.FileType.File or relative.split("/")[0] == "_delta_log":
                continue
            if relative not in referenced:
                orphans.append(relative)
        orphans.sort()
        if not dry_run:
            for relative in orphans:
                fs.delete_file(f"{base}/{relative}")
            if not self.exists(name) and not self.is_remote:
                # Nothing of a table without a version is worth keeping, its folders included.
                for folder, _, _ in sorted(os.walk(base), reverse=True):
                    with contextlib.suppress(OSError):
                        os.rmdir(folder)
        return orphans

    def _filesystem(self, name: str) -> tuple[pafs.FileSystem, str]:
        if self.is_remote:
            fs, path = pafs.FileSystem.from_uri(self.uri(name))
            return fs, path.rstrip("/")
        return pafs.LocalFileSystem(), self.uri(name)

    def _has_files(self, name: str) -> bool:
        """Whether anything is stored under the table's name (a version or not)."""
        fs, base = self._filesystem(name)
        return fs.get_file_info(base).type == pafs.FileType.Directory

    def _announce(self, name: str, version: int) -> None:
        """`dataset.version.created` for a new version, when a Prefect API is configured (the
        content hash is computed only then). Best-effort: never fails the commit."""
        if name.endswith(QUARANTINE_SUFFIX) or events.api_url() is None:
            return
        try:
            content_hash = self.content_hash(name, version)
        except (StoreError, OSError, DeltaError) as err:
            events.log.warning("not announcing %s@%d: %s", name, version, err)
            return
        events.dataset_version_created(name, version, content_hash, store_root=self.root)

    @staticmethod
    def _commit_properties(
        name: str, lineage: Lineage, reports: Sequence[Report], retries: int | None = None
    ) -> CommitProperties:
        """Lineage and reports as the commit's metadata; StoreError for a report that cannot go."""
        metadata = {LINEAGE_KEY: lineage.to_json()}
        try:
            encoded = encode_reports(reports)
        except ValueError as err:
            raise StoreError(f"writing {name}: {err}") from None
        if encoded is not None:
            metadata[REPORTS_KEY] = encoded
        return CommitProperties(custom_metadata=metadata, max_commit_retries=retries)

    def _write_failed(
        self, name: str, err: BaseException, raised: list[BaseException]
    ) -> BaseException:
        """The error to show for a failed write: the interrupt or our own error that caused
        it, else the storage error in one line."""
        if raised and isinstance(raised[0], StoreError | KeyboardInterrupt):
            return raised[0]
        if interrupt.interrupted():
            return interrupt.Interrupted("interrupted")
        return StoreError(f"writing table {name} in {self.root} failed: {_first_line(err)}")


def _table_configuration(schema: pa.Schema) -> dict[str, str | None]:
    """Table properties set when a table is created (existing tables keep theirs)."""
    return {"delta.dataSkippingStatsColumns": ",".join(stats_columns(schema))}


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:500]


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
