"""Import samples from JSONL or Parquet, validating every row.

Good rows are committed to the target table in one commit; bad rows go to
`TABLE.quarantine` with the reason, the offending field and the source line,
so nothing is lost and the user sees what to fix. JSONL is read by
`store.jsonl.read_jsonl`, the reader every command shares, so a line is bad
here for the same reasons as anywhere else.

Two modes:

- `append` (the default): rows whose `sample_id` the table already holds are
  left as they are, so re-importing a file is a no-op and an import killed
  half-way is finished by running it again;
- `upsert`: such rows replace the stored ones when their content differs
  (a corrected completion, a new verdict), the rest are inserted.

Generation-only fields that `r1f generate` writes but the Sample record does
not hold (`token_ids`, `logprobs`; see `store.record.GENERATION_ONLY_FIELDS`)
are dropped, and the report names them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeAlias

import pyarrow as pa
import pyarrow.parquet as pq

from store import interrupt
from store.jsonl import BadLine, cap, read_jsonl_lines
from store.lineage import Lineage
from store.record import (
    GENERATION_ONLY_FIELDS,
    IDENTITY_FIELDS,
    QUARANTINE_SCHEMA,
    SAMPLE_SCHEMA,
    RecordError,
    quarantine_id_for,
    validate_sample,
)
from store.store import QUARANTINE_SUFFIX, Store, StoreError, check_table_name

Progress = Callable[[int], None]  # called with the amount of input consumed since the last call
ImportMode: TypeAlias = Literal["append", "upsert"]
IMPORT_MODES: tuple[ImportMode, ...] = ("append", "upsert")


@dataclass(frozen=True)
class ImportReport:
    table: str
    source_file: str
    source_sha256: str
    rows_read: int
    valid: int
    invalid: int
    written: int  # valid rows new to the table, or (upsert) replacing a stored row
    already_present: int  # valid rows whose sample_id the table already had, left as stored
    version: int  # the table's version after the import (-1: table not created)
    quarantine_version: int | None
    reasons: dict[str, int]  # invalid rows by kind: the bad field, or the parse error
    examples: dict[str, str]  # for each kind, the first such row: "line N: full reason"
    mode: ImportMode = "append"
    updated: int = 0  # upsert: rows of `written` that replaced a stored row
    dropped_fields: tuple[str, ...] = ()  # generation-only fields present in the input
    # The first few invalid rows as every command reports bad lines: "FILE:LINE: reason"
    bad_line_examples: tuple[str, ...] = ()

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
    mode: ImportMode = "append",
) -> ImportReport:
    """Validate `path` row by row, commit the good rows to `table`, quarantine the rest."""
    if mode not in IMPORT_MODES:
        raise StoreError(f"import mode must be one of {', '.join(IMPORT_MODES)}, got {mode!r}")
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
    dropped: set[str] = set()

    def good_batches() -> Iterator[pa.RecordBatch]:
        buffer: list[dict[str, Any]] = []
        for line, parsed, raw in rows:
            stats["read"] += 1
            if isinstance(parsed, BadLine):
                bad.append(_Bad(line, None, parsed.reason, parsed.raw))
                continue
            if isinstance(parsed, dict):
                extra = [f for f in GENERATION_ONLY_FIELDS if f in parsed]
                if extra:
                    dropped.update(extra)
                    parsed = {k: v for k, v in parsed.items() if k not in GENERATION_ONLY_FIELDS}
            try:
                row = validate_sample(parsed)
            except RecordError as err:
                bad.append(_Bad(line, err.field, err.message, _raw_text(raw, parsed)))
                continue
            earlier = first_line.setdefault(row["sample_id"], line)
            if earlier != line:
                reason = (
                    f"duplicate sample_id {row['sample_id']} (first seen at line {earlier}); "
                    f"two samples of one prompt are distinct when they differ in one of "
                    f"{', '.join(IDENTITY_FIELDS)} (e.g. sample_index 0, 1, ...) "
                    "or carry their own sample_id"
                )
                bad.append(_Bad(line, "sample_id", reason, _raw_text(raw, parsed)))
                continue
            stats["valid"] += 1
            buffer.append(row)
            if len(buffer) >= batch_rows:
                yield pa.RecordBatch.from_pylist(buffer, schema=SAMPLE_SCHEMA)
                buffer = []
        if buffer:
            yield pa.RecordBatch.from_pylist(buffer, schema=SAMPLE_SCHEMA)

    if mode == "upsert":
        result = store.upsert(table, good_batches(), lineage=lineage)
    else:
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
        mode=mode,
        updated=result.rows_updated,
        dropped_fields=tuple(sorted(dropped)),
        bad_line_examples=tuple(
            f"{source}:{b.line}: {b.field + ': ' if b.field else ''}{b.reason}" for b in bad[:5]
        ),
    )


def _reason_kind(bad: _Bad) -> str:
    """Group bad rows for the summary: by the field to blame, else by the parse error."""
    if bad.reason.startswith("duplicate"):
        return "duplicate sample_id"
    if bad.field:
        return f"field {bad.field}"
    return bad.reason.split(" (")[0].split(":")[0]  # "invalid JSON", "not UTF-8", ...


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


def _raw_text(raw: str | None, parsed: Any) -> str:
    """The source text of a bad row; Parquet rows have none, so they are shown as JSON."""
    if raw is None:
        raw = json.dumps(parsed, ensure_ascii=False, default=str)
    return cap(raw.rstrip("\r\n"))


def _jsonl_rows(path: Path, progress: Progress | None) -> Iterator[tuple[int, Any, str | None]]:
    """(line number, parsed object or BadLine, the line's text) from the shared reader,
    with a check for Ctrl-C between lines (this runs on the store writer's thread)."""
    for number, row, data in read_jsonl_lines(path, progress=progress):
        interrupt.check()
        yield number, row, data.decode("utf-8", errors="replace")


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
