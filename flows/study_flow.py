"""The recipe study as a Prefect flow: each arm a task on the factory's bounded process pool
(`flows.factory.task_runner`), scheduled by `flows.study.schedule` (flows/study.py says why the
arms call stage functions rather than the factory's flows). Imports Prefect: the CLI imports
this module only when the study runs with `study.engine: prefect`."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed

from flows.config import FlowsConfig
from flows.factory import _say, task_runner
from flows.study import Job, Outcome, run_job, schedule


@task(name="study-arm", task_run_name="{name}", cache_policy=NO_CACHE, persist_result=False)
def arm_task(
    name: str, kind: str, params: dict[str, Any], inputs: dict[str, Any]
) -> dict[str, Any]:
    return run_job(kind, params, inputs)


@flow(name="r1-recipe-study", log_prints=True, persist_result=False)
def recipe_study_flow(
    jobs: list[dict[str, Any]], workers: int, arms_file: str, state: dict[str, Any]
) -> dict[str, Any]:
    """Every arm of the study, at most `workers` at once; `arms_file` holds `state` and the
    outcome so far after every arm; returns `Outcome` as a dict."""
    import json
    import time
    from pathlib import Path

    from flows.study import write_atomic

    def progress(outcome: Outcome) -> None:
        state.update(asdict(outcome), last_done=time.time())
        write_atomic(Path(arms_file), json.dumps(state, indent=2) + "\n")

    plan = [Job(j["name"], j["kind"], j["params"], tuple(j["needs"])) for j in jobs]
    runner = task_runner(FlowsConfig(executor="process", workers=workers))
    with runner:

        def submit(job: Job, inputs: dict[str, Any]) -> Any:
            return runner.submit(
                arm_task,
                {"name": job.name, "kind": job.kind, "params": job.params, "inputs": inputs},
            )

        def wait_first(futures: list[Any]) -> Any:
            return next(iter(as_completed(futures)))

        outcome = schedule(plan, submit, wait_first, lambda f: f.result(), workers, _say, progress)
    return asdict(outcome)


def recipe_study(jobs: list[Job], workers: int, arms_file: str, state: dict[str, Any]) -> Outcome:
    done = recipe_study_flow([asdict(j) for j in jobs], workers, arms_file, dict(state))
    return Outcome(**done)
