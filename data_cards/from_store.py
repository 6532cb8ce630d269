"""Render the card of a store table version: the one place where store metadata meets the renderer."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from data_cards.render import CardMeta, render_card
from data_cards.stats import compute_stats
from store.store import Store


def card_meta_for(
    store: Store,
    name: str,
    version: int,
    *,
    data_files: Mapping[str, str] | None = None,
    extra_sections: Sequence[tuple[str, str]] = (),
    license: str = "other",
    description: str = "",
) -> CardMeta:
    """Everything the card says about where a version came from, read from the table's log."""
    history = [c for c in store.history(name) if c.version <= version]
    this = next(c for c in history if c.version == version)
    lineage: dict[str, Any] = json.loads(this.lineage.to_json()) if this.lineage else {}
    lineage["committed_at"] = this.timestamp.isoformat()
    lineage["operation"] = this.operation
    return CardMeta(
        name=name,
        version=version,
        parent_version=version - 1 if version > 0 else None,
        content_hash=store.content_hash(name, version),
        license=license,
        description=description,
        lineage=lineage,
        history=[
            {
                "version": c.version,
                "timestamp": c.timestamp.isoformat(timespec="seconds"),
                "operation": c.operation,
                "rows_added": c.rows_added,
                "rows_removed": c.rows_removed,
                "writer": c.lineage.writer if c.lineage else None,
            }
            for c in history[:10]
        ],
        data_files=data_files,
        extra_sections=extra_sections,
    )


def write_card_for_version(
    store: Store,
    name: str,
    version: int,
    out_dir: Path,
    *,
    data_files: Mapping[str, str] | None = None,
    extra_sections: Sequence[tuple[str, str]] = (),
) -> Path:
    """Compute the statistics of `name@version` and write its README.md and plots to out_dir."""
    stats = compute_stats(store.scan(name, version))
    meta = card_meta_for(store, name, version, data_files=data_files, extra_sections=extra_sections)
    return render_card(stats, meta, out_dir)
