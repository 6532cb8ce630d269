"""`r1f filter run`: the filter-and-assemble run, wired to a run config.

The `filter:` section of a run config is `FilterRunConfig`. Its schema lives
in `filters.pipeline`, beside the code it configures (as `StoreConfig` lives
in `store`): `filters` may not import `flows`, and `run_filter_pipeline`
takes the typed section. This module re-exports it and does the wiring a
flow does: read the config, open the store, name the writer and the config
hash in the lineage, run, and render the mixture version's card from the
store into `outputs.card_dir` (the run stores its reports with the version;
`filters` does not render cards).

A YAML run config for it::

    name: toy-filter
    seed: 0
    store: {root: work/demo/store}
    filter:
      inputs: [{table: toy-reference}]
      outputs: {candidates: toy-candidates, mixture: toy-mixture, card_dir: work/demo/cards}
      execution: {executor: process, workers: 2}
      decontam: {benchmarks: [filters/data/toy_benchmark.jsonl], n: [8, 13]}
      mixture:
        tracks:
          reasoning: {target: 150}
          non_reasoning: {target: 50}

Every key is described in `docs/mixture.md`. The executor decides where
the per-batch steps run: `local` (this process), `process` (a pool on this
machine) or `ray` (Ray tasks; `pip install -e .[ray]`); the step code is the
same under each.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from data_cards.from_store import write_card_for_version
from filters.pipeline import (
    FilterRunConfig,
    PipelineReport,
    Progress,
    StageTiming,
    run_filter_pipeline,
)
from flows.config import load_run_config
from store.config import config_hash
from store.lineage import Lineage
from store.store import Store

WRITER = "r1f filter run"


@dataclass
class FilterRunReport(PipelineReport):
    """The pipeline's report and where the mixture version's card was rendered."""

    card: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "card": str(self.card) if self.card else None}


def run_filter(
    config_path: str | Path,
    *,
    progress: Progress | None = None,
    store_root: str | None = None,
    flow_run_id: str | None = None,
) -> FilterRunReport:
    """Load a run config, run its `filter:` section against its store, render the card.

    `store_root` replaces the config's `store.root` (the CLI's `--store`);
    the config hash in the lineage is the hash of the config as run, and `flow_run_id` (else
    PREFECT__FLOW_RUN_ID, set in a deployment's process) the flow run that made it. The
    card is `{outputs.card_dir}/{mixture}-v{version}/README.md`, the same
    text `r1f datasets card` and `r1f datasets export` give for that version.
    """
    cfg = load_run_config(config_path)
    if store_root is not None:
        cfg = replace(cfg, store=replace(cfg.store, root=store_root))
    lineage = Lineage(
        writer=WRITER,
        flow_run_id=flow_run_id or os.environ.get("PREFECT__FLOW_RUN_ID"),
        config_hash=config_hash(cfg),
    )
    store = Store.from_config(cfg.store)
    report = run_filter_pipeline(store, cfg.filter, lineage, seed=cfg.seed, progress=progress)
    started = time.perf_counter()
    if progress is not None:
        progress.stage("card", None)
    version = int(report.mixture.version or 0)
    card_dir = Path(cfg.filter.outputs.card_dir) / f"{report.mixture.table}-v{version}"
    card = write_card_for_version(store, report.mixture.table, version, card_dir)
    timing = StageTiming("card", time.perf_counter() - started, report.mixture_rows)
    pipeline = {f.name: getattr(report, f.name) for f in fields(report)}
    pipeline["stages"] = [*report.stages, timing]
    return FilterRunReport(**pipeline, card=card)


__all__ = ["FilterRunConfig", "FilterRunReport", "run_filter"]
