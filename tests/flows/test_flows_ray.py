"""The generate flow's shard tasks on Ray (`flows.executor: ray`, prefect-ray's RayTaskRunner),
on a local Ray that the runner starts for the run (loopback only). Opt-in: `make test-ray`
installs Ray and prefect-ray; without them the module is skipped."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("ray")
pytest.importorskip("prefect_ray")

from store.store import Store
from tests.flows.test_flows import write_config

pytestmark = pytest.mark.ray


@pytest.mark.usefixtures("prefect_server")
def test_generate_shards_run_as_ray_tasks_exactly_once(tmp_path: Path, tiny_model: Path) -> None:
    import ray

    from flows.config import load_run_config
    from flows.factory import generate, task_runner

    config = write_config(tmp_path, tiny_model, workers=2)
    config.write_text(config.read_text().replace("executor: process", "executor: ray"))
    runner = task_runner(load_run_config(str(config)).flows)
    assert type(runner).__name__ == "RayTaskRunner"

    generated = generate(str(config))
    # Two shards of 4 prompts x 2 samples, each one atomic commit, the same as on processes.
    assert (generated["prompts"], generated["shards"], generated["generated"]) == (8, 2, 16)
    rows = Store(tmp_path / "store").read("gen").to_dicts()
    assert len(rows) == 16 and len({r["sample_id"] for r in rows}) == 16

    # A rerun on Ray skips both committed shards and commits nothing.
    again = generate(str(config))
    assert (again["shards_skipped"], again["generated"]) == (2, 0)
    assert Store(tmp_path / "store").info("gen").rows == 16
    if ray.is_initialized():
        ray.shutdown()
