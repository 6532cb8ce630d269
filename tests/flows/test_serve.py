"""`r1f serve` against a real Prefect server on 127.0.0.1 (started by the command itself):
a committed mixture version runs the distillation deployment with that version, and the same
event twice trains once; the cron deployment has scheduled runs.

Slow: a real server and the served flow runs (each in its own process) take a minute or two
on two cores."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    api: str
    config: Path
    root: Path


def write_config(tmp_path: Path) -> Path:
    """The factory config, shrunk: a student of two steps, its tokenizer from a tiny base."""
    student = tmp_path / "distill.yaml"
    student.write_text(
        "stage: distill\n"
        f"model: {{kind: hf, hf_config: {REPO / 'configs/students/qwen2-toy.json'}}}\n"
        "data: {source: toy-mixture, seq_len: 512, chat_share: 1.0, loss_on: completion}\n"
        "loop: {steps: 2, rows_per_micro_batch: 2, threads: 1, tensorboard: false, progress: false}\n"
        "eval: {families: [toy-arithmetic], problems: 2, k: 2, max_tokens: 8}\n"
    )
    config = tmp_path / "factory.yaml"
    config.write_text(
        f"store: {{root: {tmp_path / 'store'}}}\n"
        "recipe:\n"
        f"  base_config: {REPO / 'configs/pretrain-toy.yaml'}\n"
        f"  base_dir: {tmp_path / 'base'}\n"
        f"  distill_config: {student}\n"
        f"  runs_dir: {tmp_path / 'runs'}\n"
        "generate:\n"
        "  table: toy-generated\n"
        "  prompts: {sources: {toy-arithmetic: 2}}\n"
        "  sampling: {max_tokens: 4, n: 1}\n"
        f"  backend: {{kind: local, local: {{model_dir: {tmp_path / 'base'}}}}}\n"
    )
    return config


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Served]:
    from flows.config import load_run_config
    from flows.factory import base_model_dir

    tmp_path = tmp_path_factory.mktemp("serve")
    config = write_config(tmp_path)
    # The student borrows the base's tokenizer: a tiny checkpoint stands in for the base.
    shutil.copytree(tiny_model, base_model_dir(load_run_config(config)))
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": "",
        # The scheduler looks for deployments to schedule every few seconds, not every minute.
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
    }
    env.pop("PREFECT_API_URL")
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "serve", "--port", str(port), "--config", config],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{port}/api"
    try:
        from flows.deployments import healthy

        deadline = time.monotonic() + 300  # hang guard: a first start on two busy cores
        while not (healthy(api) and b"serving" in (tmp_path / "serve.log").read_bytes()):
            assert process.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.5)
        # "serving" is printed once every deployment is registered, not before.
        assert deployments_exist(api), (tmp_path / "serve.log").read_text()[-3000:]
        yield Served(api, config, tmp_path)
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C: serving stops, then the server it started
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def client_for(api: str) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api}):
        return get_client(sync_client=True)


SERVED = (
    "generate-and-verify/generate-and-verify",
    "distill/distill-on-new-mixture",
    "rejection-sampling/rejection-sampling-on-rl-checkpoint",
)


def deployments_exist(api: str) -> bool:
    from prefect.exceptions import ObjectNotFound

    with client_for(api) as client:
        try:
            for name in SERVED:
                client.read_deployment_by_name(name)
        except ObjectNotFound:
            return False
    return True


def deployment_runs(api: str, name: str) -> list[Any]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with client_for(api) as client:
        deployment = client.read_deployment_by_name(name)
        return list(
            client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
            )
        )


def wait_for(condition: Any, what: str, timeout: float = 300) -> Any:
    deadline = time.monotonic() + timeout  # hang guard only
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_a_committed_mixture_version_distils_once(served: Served) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.demo import reference_rows
    from flows.factory import distill_out_dir
    from generators.tasks import SOURCES
    from store.events import dataset_version_created
    from store.lineage import Lineage
    from store.record import to_table, validate_sample
    from store.store import Store

    tasks = list(SOURCES["toy-arithmetic"].generate(8, 0))
    rows = to_table([validate_sample(r) for r in reference_rows(tasks)])
    store = Store(served.root / "store")
    with temporary_settings(updates={PREFECT_API_URL: served.api}):
        # The commit announces toy-mixture@0; the deployment's trigger runs distill on it.
        store.commit("toy-mixture", rows, lineage=Lineage(writer="tests"))
    name = "distill/distill-on-new-mixture"
    runs = wait_for(lambda: deployment_runs(served.api, name), "the triggered run", 120)
    assert len(runs) == 1 and runs[0].parameters["version"] == 0
    assert runs[0].parameters["table"] == "toy-mixture"
    done = wait_for(
        lambda: [r for r in deployment_runs(served.api, name) if r.state.is_final()],
        "the distillation",
    )
    assert done[0].state.is_completed(), done[0].state
    student = distill_out_dir(str(served.root / "runs"), "toy-mixture", 0)
    summary = student / "train_summary.json"
    trained_at = summary.stat().st_mtime_ns

    # The same event again (a retried emission): at most one more run, and it trains nothing.
    content_hash = store.content_hash("toy-mixture", 0)
    with temporary_settings(updates={PREFECT_API_URL: served.api}):
        assert dataset_version_created("toy-mixture", 0, content_hash)
    time.sleep(10)  # a trigger fires about a second after its event
    runs = wait_for(
        lambda: (
            (r := deployment_runs(served.api, name)) and all(x.state.is_final() for x in r) and r
        ),
        "every run to finish",
    )
    assert all(r.state.is_completed() for r in runs) and len(runs) <= 2
    assert summary.stat().st_mtime_ns == trained_at
    assert [p.name for p in student.parent.glob("distill-*") if p.is_dir()] == [student.name]


@pytest.mark.slow
def test_the_cron_deployment_has_scheduled_runs(served: Served) -> None:
    runs = wait_for(
        lambda: [
            r
            for r in deployment_runs(served.api, "generate-and-verify/generate-and-verify")
            if r.state.is_scheduled()
        ],
        "scheduled runs",
        120,
    )
    # Cron "0 */6 * * *": every run is on the hour, six hours apart.
    times = sorted(r.expected_start_time for r in runs)
    assert all(t.minute == 0 and t.hour % 6 == 0 for t in times)
    assert all((b - a).total_seconds() == 6 * 3600 for a, b in itertools.pairwise(times))
    assert runs[0].parameters["config"] == str(served.config)


@pytest.mark.slow
def test_distill_trains_once_per_version(tmp_path: Path, tiny_model: Path) -> None:
    """The idempotency the trigger relies on, without Prefect: a second distill of the same
    version returns the finished student untrained; a new version trains a new one."""
    from flows.config import load_run_config
    from flows.demo import reference_rows
    from flows.factory import base_model_dir, distill_out_dir, distill_stage
    from generators.tasks import SOURCES
    from store.lineage import Lineage
    from store.record import to_table, validate_sample
    from store.store import Store

    config = write_config(tmp_path)
    cfg = load_run_config(config)
    shutil.copytree(tiny_model, base_model_dir(cfg))
    store = Store(tmp_path / "store")
    for seed in (0, 1):
        tasks = list(SOURCES["toy-arithmetic"].generate(4, seed))
        rows = to_table([validate_sample(r) for r in reference_rows(tasks)])
        store.commit("toy-mixture", rows, lineage=Lineage(writer="tests"))

    first = distill_stage(cfg, "toy-mixture", 0)
    assert first["trained"] and first["data"]["version"] == 0
    summary = distill_out_dir(cfg.recipe.runs_dir, "toy-mixture", 0) / "train_summary.json"
    trained_at = summary.stat().st_mtime_ns
    again = distill_stage(cfg, "toy-mixture", 0)
    assert not again["trained"] and summary.stat().st_mtime_ns == trained_at
    assert distill_stage(cfg, "toy-mixture", 1)["trained"]
