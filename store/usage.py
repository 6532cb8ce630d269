"""Which models were trained on which table versions: one small JSON file per training run,
under `ROOT/_model_usage/`, so `r1f datasets` can answer "which models used this version".

    record_model_use(store, ModelUse(table="toy-mix", version=3, content_hash=..., model=...))
    model_uses(store, "toy-mix", version=3)  # -> [ModelUse(...), ...], oldest first

A record is written to a temporary name and renamed, so a reader never sees half of one;
rerunning the same training into the same directory replaces its record instead of adding a
second. The directory is not a Delta table, so `Store.tables()` never lists it. A record that
cannot be read (hand-edited, truncated by a full disk) is a `StoreError` naming its file.

`r1f datasets usage NAME[@V]` lists the records; `r1f datasets show NAME@V` counts them.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from store.store import Store, StoreError

USAGE_DIR = "_model_usage"


@dataclass(frozen=True)
class ModelUse:
    table: str
    version: int
    content_hash: str
    model: str  # the trained model's directory (or another identifier)
    stage: str  # pretrain, sft, distill, grpo, ...
    steps: int = 0
    config_hash: str | None = None
    recorded_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _usage_root(store: Store) -> str:
    if store.is_remote:
        raise NotImplementedError("model usage records are kept for local stores only")
    return os.path.join(store.root, USAGE_DIR)


def record_model_use(store: Store, use: ModelUse) -> str:
    """Write one record; returns its path."""
    root = _usage_root(store)
    os.makedirs(root, exist_ok=True)
    key = hashlib.sha256(f"{use.table}@{use.version}:{use.model}".encode()).hexdigest()[:24]
    path = os.path.join(root, f"{key}.json")
    tmp = os.path.join(root, f".{key}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(asdict(use), fh, sort_keys=True)
    os.replace(tmp, path)
    return path


def model_uses(store: Store, table: str, version: int | None = None) -> list[ModelUse]:
    """Records of models trained on `table` (at `version`, when given), oldest first."""
    root = _usage_root(store)
    if not os.path.isdir(root):
        return []
    found = []
    for name in sorted(os.listdir(root)):
        if not name.endswith(".json") or name.startswith("."):
            continue
        path = os.path.join(root, name)
        try:
            with open(path, encoding="utf-8") as fh:
                use = ModelUse(**json.load(fh))
        except (OSError, ValueError, TypeError) as err:  # JSONDecodeError is a ValueError
            raise StoreError(
                f"{path}: unreadable model-usage record ({err}); fix or remove the file"
            ) from None
        if use.table == table and (version is None or use.version == version):
            found.append(use)
    return sorted(found, key=lambda u: u.recorded_at)
