"""Crash test: SIGKILL a real generation process mid-run, rerun, and count every sample.

The generating process is a separate Python interpreter running the stage against the
loopback OpenAI-compatible server (which answers slowly enough for the kill to land between
and inside shards). The parent waits for two shard commits, kills the child with SIGKILL,
then reruns the same config in this process: the table must then hold exactly the expected
samples, each once, with exactly the text the server gives for it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from generators.backends.base import Identity, sample_seed
from generators.backends.loopback import LoopbackServer, expected_completion
from generators.generate import (
    GenerateConfig,
    generate,
    generation_cost,
    load_prompts,
    prompt_seed,
    request_variant,
)
from generators.templates import render
from store.config import config_from_dict
from store.lineage import Lineage
from store.record import sample_id_for
from store.store import Store

REPO = Path(__file__).resolve().parents[2]

CHILD = """
import json, sys
from generators.generate import GenerateConfig, generate
from store.config import config_from_dict
from store.lineage import Lineage
from store.store import Store

cfg = config_from_dict(json.loads(sys.argv[2]), GenerateConfig, source="argv")
generate(Store(sys.argv[1]), cfg, Lineage(writer="crash-test child"))
"""


def commits(root: Path) -> int:
    log = root / "gen" / "_delta_log"
    return len(list(log.glob("*.json"))) if log.is_dir() else 0


def test_sigkill_mid_run_then_rerun_gives_each_sample_exactly_once(tmp_path):
    root = tmp_path / "store"
    with LoopbackServer(seconds_per_token=0.004) as server:
        raw = {
            "table": "gen",
            "backend": {
                "kind": "openai",
                "openai": {"base_url": server.base_url, "model": server.model, "concurrency": 4},
            },
            "prompts": {"sources": {"toy-arithmetic": 24, "toy-greeting": 8}},
            "sampling": {"temperature": 0.8, "max_tokens": 24, "n": 2, "seed": 11},
            "shard_prompts": 4,
        }
        cfg = config_from_dict(raw, GenerateConfig)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(root), json.dumps(raw)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 120  # hang guard: start-up on a loaded machine
            while commits(root) < 2 and child.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert child.poll() is None, child.stdout.read().decode()[-2000:]
            os.kill(child.pid, signal.SIGKILL)
            assert child.wait(timeout=30) == -signal.SIGKILL
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            child.stdout.close()

        store = Store(root)
        before = store.read("gen").height
        assert 0 < before < 64, "the kill did not land mid-run"
        report = generate(store, cfg, Lineage(writer="crash-test rerun"))

    prompts, _ = load_prompts(store, cfg.prompts)
    variant = request_variant(cfg, Identity("openai", "m", None))
    expected = {}
    for p in prompts:
        seed = prompt_seed(cfg.sampling.seed, p.prompt_id, variant)
        shown = render(cfg.template, p.prompt, track=p.track)
        for j in range(cfg.sampling.n):
            sample_id = sample_id_for(
                {
                    "prompt_id": p.prompt_id,
                    "backend": "openai",
                    "model_id": server.model,
                    "model_hash": None,
                    "sampling": cfg.sampling.sampling().record(),
                    "seed": seed,
                    "sample_index": j,
                }
            )
            text = expected_completion(shown.text, sample_seed(seed, j), cfg.sampling.max_tokens)
            expected[sample_id] = shown.prefix + text[0]

    rows = store.read("gen", columns=["sample_id", "completion"]).to_dicts()
    ids = [r["sample_id"] for r in rows]
    assert len(ids) == len(set(ids)) == 64  # none duplicated
    assert set(ids) == set(expected)  # none missing, none extra
    assert all(r["completion"] == expected[r["sample_id"]] for r in rows)
    assert report.already_present == before
    assert report.generated == 64 - before
    assert report.shards_skipped >= 2
    # Two runs in the cost: the killed one counts only the shards it committed.
    killed, rerun = generation_cost(store, "gen")
    assert killed.samples == before and rerun.samples == 64 - before
    assert rerun.run_id == report.run_id
