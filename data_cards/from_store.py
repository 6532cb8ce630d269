"""The card of a store table version: the one place where the store meets the renderer.

A version's card is a function of (store, table, version) alone: its rows,
its commit log (lineage, history) and the reports stored with it
(`store.reports`). `r1f datasets card`, `r1f datasets export` (the
release's README.md), `r1f filter run` and the demo all call
`write_card_for_version`, so the same version gives the same bytes
wherever its card is shown.

The card always describes the version as released: its front matter names
the release's shards (`store.release.DATA_FILES`), so the README of a
release loads with `datasets.load_dataset(DIR)`, and a card rendered
outside a release is that same text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from data_cards.render import CardMeta, card_text, render_card
from data_cards.stats import CardStats, compute_stats
from store.release import DATA_FILES, CardWriter
from store.store import Store


def card_meta_for(store: Store, name: str, version: int) -> CardMeta:
    """Everything the card says about a version that its rows do not, read from the table's log."""
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
        data_files=DATA_FILES,
        reports=store.reports(name, version),
    )


def card_for_version(store: Store, name: str, version: int) -> tuple[CardStats, CardMeta]:
    """The statistics and metadata the card of `name@version` is rendered from."""
    return compute_stats(store.scan(name, version)), card_meta_for(store, name, version)


def card_text_for_version(store: Store, name: str, version: int) -> str:
    """The README.md text of `name@version`'s card (without writing the plots)."""
    return card_text(*card_for_version(store, name, version))


def write_card_for_version(store: Store, name: str, version: int, out_dir: Path) -> Path:
    """Write the card of `name@version` (README.md and plots) to out_dir; return the README."""
    stats, meta = card_for_version(store, name, version)
    return render_card(stats, meta, Path(out_dir))


def release_card_writer(store: Store) -> CardWriter:
    """The `write_card` hook of `store.release.export_release`: the version's card, as above."""

    def write(staging: Path, manifest: dict[str, Any]) -> Path:
        return write_card_for_version(store, manifest["name"], manifest["version"], staging)

    return write
