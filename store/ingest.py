"""Import samples from JSONL or Parquet, validating every row.

Good rows are committed to the target table in one commit; bad rows go to
`TABLE.quarantine` with the reason, the offending field and the source line,
so nothing is lost and the user sees what to fix. Re-importing a file is a
no-op for rows already present (keys are deterministic), so an import killed
half-way is finished by running it again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from store.lineage import Lineage
from store.record import (
    QUARANTINE_SCHEMA,
    SAMPLE_SCHEMA,
    RecordError,
    quarantine_id_for,
    validate_sample,
)
from store.store import QUARANTINE_SUFFIX, Store, StoreError, check_table_name

RAW_CAP = 256 * 1024  # quarantined text is capped so a runaway line cannot bloat the table
Progress = Callable[[int], None]  # called with the amount of input consumed since the last call


@dataclass(frozen=True)
class ImportReport:
    table: str
    source_file: str
    source_sha256: str
    rows_read: int
    valid: int
    invalid: int
    written: int  # valid rows new to the table
    already_present: int  # valid rows whose sample_id the table already had
    version: int  # the table's version after the import (-1: table not created)
    quarantine_version: int | None
    reasons: dict[str, int]  # invalid rows by kind: the bad field, or the parse error
    examples: dict[str, str]  # for each kind, the first such row: "line N: full reason"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class _Bad:
    line: int
    field: str | None
    reason: str
    raw: str


def import_file(
    store: Store,
    path: str | os.PathLike[str],
    table: str,
    *,
    lineage: Lineage,
    progress: Progress | None = None,
    batch_rows: int = 2048,
) -> ImportReport:
    """Validate `path` row by row, commit the good rows to `table`, quarantine the rest."""
    check_table_name(table)
    if table.endswith(QUARANTINE_SUFFIX):
        raise StoreError(f"cannot import into {table}: quarantine tables are written by imports")
    source = Path(path)
    if not source.is_file():
        raise StoreError(f"{source}: no such file")
    kind = source.suffix.lower()
    if kind not in (".jsonl", ".parquet"):
        raise StoreError(f"{source}: unsupported file type {kind!r}; use .jsonl or .parquet")
    sha = _sha256(source)
    lineage = Lineage(
        writer=lineage.writer,
        flow_run_id=lineage.flow_run_id,
        config_hash=lineage.config_hash,
        parents=lineage.parents,
        message=lineage.message,
        extra={**lineage.extra, "source_file": str(source), "source_sha256": sha},
    )
    rows = _jsonl_rows(source, progress) if kind == ".jsonl" else _parquet_rows(source, progress)

    bad: list[_Bad] = []
    first_line: dict[str, int] = {}
    stats = Counter[str]()

    def good_batches() -> Iterator[pa.RecordBatch]:
        buffer: list[dict[str, Any]] = []
        for line, parsed, raw in rows:
            stats["read"] += 1
            if isinstance(parsed, _Bad):
                bad.append(parsed)
                continue
            try:
                row = validate_sample(parsed)
            except RecordError as err:
                bad.append(_Bad(line, err.field, err.message, _raw_text(raw, parsed)))
                continue
            earlier = first_line.setdefault(row["sample_id"], line)
            if earlier != line:
                reason = f"duplicate sample_id {row['sample_id']} (first seen at line {earlier})"
                bad.append(_Bad(line, "sample_id", reason, _raw_text(raw, parsed)))
                continue
            stats["valid"] += 1
            buffer.append(row)
            if len(buffer) >= batch_rows:
                yield pa.RecordBatch.from_pylist(buffer, schema=SAMPLE_SCHEMA)
                buffer = []
        if buffer:
            yield pa.RecordBatch.from_pylist(buffer, schema=SAMPLE_SCHEMA)

    result = store.commit(table, good_batches(), lineage=lineage, mode="append")
    quarantine_version = None
    if bad:
        q = store.commit(
            table + QUARANTINE_SUFFIX,
            _quarantine_table(bad, table, str(source), sha),
            lineage=lineage,
            mode="append",
        )
        quarantine_version = q.version
    return ImportReport(
        table=table,
        source_file=str(source),
        source_sha256=sha,
        rows_read=stats["read"],
        valid=stats["valid"],
        invalid=len(bad),
        written=result.rows_written,
        already_present=result.rows_skipped,
        version=result.version,
        quarantine_version=quarantine_version,
        reasons=dict(Counter(_reason_kind(b) for b in bad).most_common()),
        examples=_examples(bad),
    )


def _reason_kind(bad: _Bad) -> str:
    """Group bad rows for the summary: by the field to blame, else by the parse error."""
    if bad.reason.startswith("duplicate"):
        return "duplicate sample_id"
    if bad.field:
        return f"field {bad.field}"
    return bad.reason.split(":")[0]


def _examples(bad: list[_Bad]) -> dict[str, str]:
    examples: dict[str, str] = {}
    for b in bad:
        examples.setdefault(_reason_kind(b), f"line {b.line}: {b.reason}")
    return examples


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _cap(text: str) -> str:
    return (
        text if len(text) <= RAW_CAP else text[:RAW_CAP] + f"... [{len(text) - RAW_CAP} more chars]"
    )


def _raw_text(raw: str | None, parsed: Any) -> str:
    """The source text of a bad row; Parquet rows have none, so they are shown as JSON."""
    if raw is None:
        raw = json.dumps(parsed, ensure_ascii=False, default=str)
    return _cap(raw.rstrip("\n"))


def _jsonl_rows(path: Path, progress: Progress | None) -> Iterator[tuple[int, Any, str | None]]:
    """(line number, parsed object or _Bad, raw text); blank lines are not rows."""
    with path.open("rb") as fh:
        for number, data in enumerate(fh, start=1):
            if progress:
                progress(len(data))
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as err:
                raw = _raw_text(data.decode("utf-8", errors="replace"), None)
                yield (
                    number,
                    _Bad(number, None, f"not UTF-8: {err.reason} at byte {err.start}", raw),
                    raw,
                )
                continue
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as err:
                reason = f"invalid JSON: {err.msg} at column {err.colno}"
                yield number, _Bad(number, None, reason, _raw_text(text, None)), text
                continue
            yield number, obj, text


def _parquet_rows(path: Path, progress: Progress | None) -> Iterator[tuple[int, Any, str | None]]:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise StoreError(f"{path}: not a readable Parquet file ({err})") from err
    number = 0
    for batch in parquet.iter_batches(batch_size=2048):
        for row in batch.to_pylist():
            number += 1
            yield number, row, None
        if progress:
            progress(batch.num_rows)


def _quarantine_table(bad: list[_Bad], table: str, source: str, sha: str) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "quarantine_id": quarantine_id_for(sha, b.line),
                "target_table": table,
                "source_file": source,
                "source_sha256": sha,
                "line": b.line,
                "field": b.field,
                "reason": b.reason,
                "raw": b.raw,
            }
            for b in bad
        ],
        schema=QUARANTINE_SCHEMA,
    )
