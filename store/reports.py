"""Reports stored with the table version they describe.

A stage that commits a version knows things about it that its rows do not
say: the filter run's step stats, its decontamination and mixture reports,
a generation run's cost. Each is a `Report`, keyed by `kind`, and travels
in the same Delta commit as the rows (custom commit metadata, key
`r1f.reports`, beside the lineage), so it lands exactly when the rows land:
never on another version, never without its rows, and never missing from a
version whose rows are there. A card is rendered from them, from the store,
wherever it is shown.

    store.commit(name, rows, lineage=lineage, reports=[Report("generation.cost", "Generation cost", {...})])
    store.reports(name, version)   # VersionReports: what describes that version

Which reports describe a version: per kind, the newest one stored with that
version or with an earlier commit whose rows it still holds, that is back
to the last overwrite (which replaced every row) or the table's first
version. An append, an upsert or a delete without a report of some kind
therefore keeps showing the last report of that kind, and the card names
the version it came with. A stage that commits in shards (generation) and
wants the card to show the whole run attaches, with each shard, the report
of everything so far (read the previous one with `Store.reports`).

Reports are small by design: the whole commit entry is read back by every
history listing and replayed when the table is opened (until a Delta
checkpoint), so a commit's reports together are capped at
`MAX_REPORTS_BYTES` of JSON. Per-row or per-item detail belongs in a table.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

REPORTS_KEY = "r1f.reports"
# JSON bytes of one commit's reports together; see the module docstring for why a cap.
MAX_REPORTS_BYTES = 256 * 1024
# `stage.what`: lowercase words joined by dots, e.g. "filter.steps", "generation.cost".
_KIND = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_\-]*)*$")
# The kind under which an unreadable `r1f.reports` entry shows up, so that it is seen.
UNREADABLE_KIND = "r1f.unreadable"


@dataclass(frozen=True)
class Report:
    """What a stage knows about the version it commits, as one section of its card.

    `data` is the machine-readable report (JSON: numbers, strings, lists,
    objects). `markdown` is the card section's body as the stage words it;
    left empty, the card shows `data` as a table. The card adds the
    heading `## {title}`, so `markdown` starts with text or `###` headings.
    """

    kind: str
    title: str
    data: Mapping[str, Any] = field(default_factory=dict)
    markdown: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "title": self.title,
            "data": dict(self.data),
            "markdown": self.markdown,
        }

    @staticmethod
    def from_dict(raw: Any) -> Report:
        if not isinstance(raw, Mapping):
            raise ValueError(f"a report must be a JSON object, got {type(raw).__name__}")
        kind, title = raw.get("kind"), raw.get("title")
        data, markdown = raw.get("data", {}), raw.get("markdown", "")
        if not isinstance(kind, str) or not isinstance(title, str):
            raise ValueError("a report needs a string kind and a string title")
        if not isinstance(data, Mapping) or not isinstance(markdown, str):
            raise ValueError(f"report {kind}: data must be an object and markdown a string")
        return Report(kind, title, data, markdown)


@dataclass(frozen=True)
class AttachedReport:
    """A report as read back: with the version whose commit carried it, and that commit's writer."""

    report: Report
    version: int
    writer: str | None

    @property
    def kind(self) -> str:
        return self.report.kind

    def to_dict(self) -> dict[str, Any]:
        return {**self.report.to_dict(), "version": self.version, "writer": self.writer}


@dataclass(frozen=True)
class VersionReports:
    """The reports that describe one table version, oldest first (by version, then as stored).

    `searched_from` is the oldest version whose commit was read. `complete`
    is false when the log no longer reaches back to the last overwrite or
    to version 0 (Delta removes log entries past its retention when it
    writes a checkpoint): reports stored before `searched_from` are lost.
    """

    table: str
    version: int
    reports: tuple[AttachedReport, ...]
    searched_from: int
    complete: bool = True

    def kinds(self) -> list[str]:
        return [r.kind for r in self.reports]

    def get(self, kind: str) -> AttachedReport | None:
        return next((r for r in self.reports if r.kind == kind), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "version": self.version,
            "searched_from": self.searched_from,
            "complete": self.complete,
            "reports": [r.to_dict() for r in self.reports],
        }


def encode_reports(reports: Sequence[Report]) -> str | None:
    """The commit-metadata value for `reports` (None when there are none).

    Raises ValueError naming the report when a kind is malformed or
    repeated, the data is not JSON, or the reports together are too large.
    """
    if not reports:
        return None
    seen: set[str] = set()
    for report in reports:
        if not isinstance(report, Report):
            raise ValueError(f"reports must be store.reports.Report objects, got {report!r}")
        if not _KIND.match(report.kind):
            raise ValueError(
                f"report kind {report.kind!r}: use lowercase words joined by dots, "
                f"e.g. 'generation.cost'"
            )
        if report.kind in seen:
            raise ValueError(f"report kind {report.kind!r} given twice for one commit")
        seen.add(report.kind)
        if not report.title.strip():
            raise ValueError(f"report {report.kind}: the title (the card's heading) is empty")
        if "\n" in report.title:
            raise ValueError(f"report {report.kind}: the title must be one line")
        try:
            _checked(report.data)
        except (TypeError, ValueError) as err:
            raise ValueError(f"report {report.kind}: data is not plain JSON ({err})") from None
    text = json.dumps([r.to_dict() for r in reports], ensure_ascii=False, allow_nan=False)
    size = len(text.encode())
    if size > MAX_REPORTS_BYTES:
        sizes = ", ".join(
            f"{r.kind} {len(json.dumps(r.to_dict(), ensure_ascii=False).encode()):,} B"
            for r in reports
        )
        raise ValueError(
            f"reports are {size:,} bytes together ({sizes}), over the {MAX_REPORTS_BYTES:,}-byte "
            f"limit of a commit's metadata: summarise them, and keep per-item detail in a table"
        )
    return text


def _checked(value: Any) -> None:
    """Raise ValueError or TypeError unless `value` is plain JSON (finite numbers, string keys)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value} is not a JSON number")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"key {key!r} is not a string")
            _checked(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _checked(item)
    elif not (value is None or isinstance(value, str | int | float | bool)):
        raise TypeError(f"{type(value).__name__} is not JSON")


def decode_reports(raw: object) -> tuple[Report, ...]:
    """The reports of one commit entry; an unreadable entry becomes one report saying so."""
    if raw is None:
        return ()
    try:
        if not isinstance(raw, str):
            raise ValueError(f"expected a JSON string, got {type(raw).__name__}")
        items = json.loads(raw)
        if not isinstance(items, list):
            raise ValueError("expected a JSON list of reports")
        return tuple(Report.from_dict(item) for item in items)
    except ValueError as err:  # json.JSONDecodeError is a ValueError
        return (
            Report(
                UNREADABLE_KIND,
                "Unreadable reports",
                {"error": str(err)},
                f"This version's commit carries reports (`{REPORTS_KEY}`) that cannot be "
                f"read: {err}. The rows are not affected.",
            ),
        )
