"""Lineage: who wrote a table version, from what, with which code.

Each commit to the store carries a `Lineage` as JSON in the Delta commit's
custom metadata (key `r1f.lineage`), so the history of a table answers "which
flow run, config and input versions made this?" without a side database.
Beside it, under `r1f.reports`, the commit carries the stage's reports on
the version (`store.reports`).
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from store.reports import REPORTS_KEY, Report, decode_reports

LINEAGE_KEY = "r1f.lineage"


def _user_at_host() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


@lru_cache(maxsize=1)
def current_code_version() -> str:
    """The project's version: package version plus git commit (and `-dirty`) when in a checkout."""
    try:
        version = metadata.version("r1-factory")
    except metadata.PackageNotFoundError:
        version = "unknown"
    repo = Path(__file__).resolve().parent.parent
    if not (repo / ".git").exists():
        return version
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+g{commit}{'-dirty' if dirty else ''}"


@dataclass(frozen=True)
class TableRef:
    """A table at a version; `version=None` means the latest."""

    table: str
    version: int | None = None

    def __str__(self) -> str:
        return self.table if self.version is None else f"{self.table}@{self.version}"

    @staticmethod
    def parse(text: str) -> TableRef:
        """Parse `NAME` or `NAME@VERSION`."""
        name, sep, ver = text.partition("@")
        if not name:
            raise ValueError(f"{text!r}: expected NAME or NAME@VERSION")
        if not sep:
            return TableRef(name)
        if not ver.isdigit():
            raise ValueError(f"{text!r}: the version after '@' must be a number, e.g. {name}@0")
        return TableRef(name, int(ver))


@dataclass(frozen=True)
class Lineage:
    """What a commit records about its origin."""

    writer: str  # the command or flow that wrote, e.g. "r1f datasets import"
    flow_run_id: str | None = None
    config_hash: str | None = None
    parents: tuple[TableRef, ...] = ()  # input table versions this commit was derived from
    code_version: str = field(default_factory=current_code_version)
    user: str = field(default_factory=_user_at_host)
    message: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        data = asdict(self)
        data["parents"] = [{"table": p.table, "version": p.version} for p in self.parents]
        return json.dumps(data, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> Lineage:
        data = json.loads(text)
        parents = tuple(TableRef(p["table"], p.get("version")) for p in data.pop("parents", []))
        known = {f for f in Lineage.__dataclass_fields__}
        return Lineage(parents=parents, **{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class CommitInfo:
    """One entry of a table's history, as read back from the Delta log."""

    version: int
    timestamp: datetime
    operation: str
    rows_added: int | None
    rows_removed: int | None
    rows_updated: int | None
    lineage: Lineage | None  # None for commits made outside r1f
    mode: str | None = None  # a write's mode as Delta records it: Append, Overwrite, ...
    reports: tuple[Report, ...] = ()  # stored with this commit (store.reports)

    def to_dict(self) -> dict[str, Any]:
        lineage = json.loads(self.lineage.to_json()) if self.lineage else None
        return {
            "version": self.version,
            "timestamp": self.timestamp.isoformat(),
            "operation": self.operation,
            "rows_added": self.rows_added,
            "rows_removed": self.rows_removed,
            "rows_updated": self.rows_updated,
            "mode": self.mode,
            "lineage": lineage,
            # Kinds only: a history listing stays short; `r1f datasets show --json` has the rest.
            "reports": [r.kind for r in self.reports],
        }


def commit_info_from_delta(entry: dict[str, Any]) -> CommitInfo:
    """Build a CommitInfo from one element of `DeltaTable.history()`."""
    metrics = entry.get("operationMetrics") or {}
    raw = entry.get(LINEAGE_KEY)
    added = metrics.get("num_added_rows", metrics.get("num_target_rows_inserted"))
    removed = metrics.get("num_deleted_rows", metrics.get("num_target_rows_deleted"))
    updated = metrics.get("num_updated_rows", metrics.get("num_target_rows_updated"))
    return CommitInfo(
        version=int(entry["version"]),
        timestamp=datetime.fromtimestamp(entry["timestamp"] / 1000, tz=UTC),
        operation=str(entry.get("operation", "?")),
        rows_added=None if added is None else int(added),
        rows_removed=None if removed is None else int(removed),
        rows_updated=None if updated is None else int(updated),
        lineage=Lineage.from_json(raw) if isinstance(raw, str) else None,
        mode=(entry.get("operationParameters") or {}).get("mode"),
        reports=decode_reports(entry.get(REPORTS_KEY)),
    )
