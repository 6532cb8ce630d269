"""`r1f filter run`: the filter-and-assemble run, wired to a run config.

The `filter:` section of a run config is `FilterRunConfig`. Its schema lives
in `filters.pipeline`, beside the code it configures (as `StoreConfig` lives
in `store`): `filters` may not import `flows`, and `run_filter_pipeline`
takes the typed section. This module re-exports it and does the wiring a
flow does: read the config, open the store, name the writer and the config
hash in the lineage, run.

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
from dataclasses import replace
from pathlib import Path

from filters.pipeline import FilterRunConfig, PipelineReport, Progress, run_filter_pipeline
from flows.config import load_run_config
from store.config import config_hash
from store.lineage import Lineage
from store.store import Store

WRITER = "r1f filter run"


def run_filter(
    config_path: str | Path,
    *,
    progress: Progress | None = None,
    store_root: str | None = None,
) -> PipelineReport:
    """Load a run config and run its `filter:` section against its store.

    `store_root` replaces the config's `store.root` (the CLI's `--store`);
    the config hash in the lineage is the hash of the config as run.
    """
    cfg = load_run_config(config_path)
    if store_root is not None:
        cfg = replace(cfg, store=replace(cfg.store, root=store_root))
    lineage = Lineage(
        writer=WRITER,
        flow_run_id=os.environ.get("PREFECT__FLOW_RUN_ID"),
        config_hash=config_hash(cfg),
    )
    return run_filter_pipeline(
        Store.from_config(cfg.store), cfg.filter, lineage, seed=cfg.seed, progress=progress
    )


__all__ = ["FilterRunConfig", "run_filter"]
