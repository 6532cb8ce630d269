"""Crash test of the generation flow: SIGKILL the flow's process (and its worker processes)
mid-run, rerun the flow: the table holds exactly the samples of an uninterrupted run, each
once, with the same text.

The killed flow runs in its own interpreter against the session's Prefect server, with its
shards on a process pool of one worker, so the kill lands between shard commits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from store.lineage import Lineage
from store.store import Store

REPO = Path(__file__).resolve().parents[2]

CHILD = """
import sys
from flows.factory import generate
generate(sys.argv[1])
"""


def commits(root: Path) -> int:
    log = root / "gen" / "_delta_log"
    return len(list(log.glob("*.json"))) if log.is_dir() else 0


@pytest.mark.slow
def test_sigkill_the_generation_flow_then_rerun(
    tmp_path: Path, tiny_model: Path, prefect_server: str
) -> None:
    from flows.config import load_run_config
    from flows.factory import generate
    from generators.generate import generate as generate_stage

    root = tmp_path / "store"
    config = tmp_path / "run.yaml"
    config.write_text(
        f"""
store: {{root: {root}}}
flows: {{executor: process, workers: 1}}
generate:
  table: gen
  shard_prompts: 2
  prompts: {{sources: {{toy-arithmetic: 10, toy-greeting: 6}}, seed: 0}}
  sampling: {{temperature: 1.0, max_tokens: 16, n: 2, seed: 3}}
  backend: {{kind: local, local: {{model_dir: {tiny_model}, threads: 1}}}}
"""
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_API_URL": prefect_server}
    log = tmp_path / "child.log"  # a file, not a pipe: a full pipe would stall the child
    with log.open("wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(config)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the flow and its pool's workers: one group to kill
        )
    try:
        deadline = time.monotonic() + 300  # hang guard: start-up on a loaded machine
        while commits(root) < 1 and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert child.poll() is None, log.read_text()[-3000:]
        os.killpg(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()

    store = Store(root)
    before = store.read("gen").height
    assert 0 < before < 32, "the kill did not land mid-run"

    report = generate(str(config))
    assert report["already_present"] == before
    assert report["generated"] == 32 - before
    assert report["shards_skipped"] >= 1

    # The same config, uninterrupted, through the plain stage into a store of its own.
    cfg = load_run_config(config)
    assert cfg.generate is not None
    clean = Store(tmp_path / "clean")
    generate_stage(clean, cfg.generate, Lineage(writer="tests"))
    expected = {
        r["sample_id"]: r["completion"]
        for r in clean.read("gen", columns=["sample_id", "completion"]).to_dicts()
    }
    rows = store.read("gen", columns=["sample_id", "completion"]).to_dicts()
    ids = [r["sample_id"] for r in rows]
    assert len(ids) == len(set(ids)) == len(expected) == 32  # none duplicated
    assert set(ids) == set(expected)  # none missing, none extra
    assert all(r["completion"] == expected[r["sample_id"]] for r in rows)
