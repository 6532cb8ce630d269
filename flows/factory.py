"""The factory's Prefect flows: each wires stage functions, the logic stays in the stages.

    generate             plan (reads the store) -> one task per pending shard -> the report
    verify               one task around verifiers.judge.judge
    generate_and_verify  the two, as the cron deployment runs them
    filter_and_assemble  one task around the filter run (flows.filter_run.run_filter)
    card                 the version's card rendered from the store, published as artifacts
    train                any trainer stage (pretrain, sft, distill) from its config
    distill              a student on one mixture version; idempotent per version

Every flow takes plain parameters (a run config path, a table, a version), so a deployment
can run it and an event trigger can template its parameters. Fast tests call the stage
functions, or a task's `.fn`, without the engine. Prefect is imported by this module: the CLI
imports it only inside the commands that run flows (`flows.environment` first).

Fan-out (`flows:` in the run config, `FlowsConfig`): shards go to a bounded process pool
(`ProcessPoolTaskRunner(max_workers=workers)`; Prefect's thread pool is unbounded unless
told) or to Ray (`prefect_ray.RayTaskRunner`, `executor: ray`, `ray_address`). Each worker
process builds its backend once (one loaded model per worker) and keeps it for the shards it
is given. The `openai` backend runs its shards on threads of the flow's process, sharing one
client, so that its concurrency and rate limit hold for the run.

Why the shard task has no result cache: the store is the only record of what is done. `plan`
reads it before any task starts and leaves finished shards out; a cached result would answer
"done" for a shard whose samples the store lacks (a prompt that failed, a table rebuilt).
"""

from __future__ import annotations

import atexit
import dataclasses
import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from flows.config import FlowsConfig, RunConfig, load_run_config
from flows.filter_run import FilterRunReport, run_filter
from generators.backends.base import Backend
from generators.backends.config import BackendConfig, backend_identity, make_backend
from generators.generate import (
    COST_KIND,
    GenerateConfig,
    GenerationPlan,
    Shard,
    ShardOutcome,
    add_shard,
    generate_shard,
    new_report,
    plan,
)
from store.config import config_hash
from store.lineage import Lineage, TableRef
from store.store import Store, StoreConfig
from verifiers.judge import JudgeConfig, JudgeReport, judge

# --- run context ----------------------------------------------------------------------------


def _lineage(writer: str, cfg: Any) -> Lineage:
    """The lineage of a flow's commits: the flow run that made them and the config's hash."""
    run_id = flow_run.get_id() if FlowRunContext.get() is not None else None
    return Lineage(writer=writer, flow_run_id=run_id, config_hash=config_hash(cfg))


def _say(message: str) -> None:
    """A line in the flow run's log (shown in the UI and on the console)."""
    if FlowRunContext.get() is not None:
        get_run_logger().info(message)
    else:
        print(message)


def _load(config: str, store: str | None) -> RunConfig:
    cfg = load_run_config(config)
    if store is not None:
        cfg = replace(cfg, store=replace(cfg.store, root=store))
    return cfg


# --- fan-out --------------------------------------------------------------------------------


def task_runner(flows: FlowsConfig, backend: BackendConfig | None = None) -> TaskRunner[Any]:
    """The runner a flow's per-shard tasks go to (see the module docstring)."""
    if backend is not None and backend.kind == "openai":
        return ThreadPoolTaskRunner(max_workers=flows.workers)
    if flows.executor == "ray":
        from prefect_ray import RayTaskRunner

        if flows.ray_address is not None:
            return RayTaskRunner(address=flows.ray_address)
        # A local Ray for the run, on loopback only, without its dashboard or usage report.
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        return RayTaskRunner(
            init_kwargs={
                "num_cpus": flows.workers,
                "include_dashboard": False,
                "_node_ip_address": "127.0.0.1",
            }
        )
    return ProcessPoolTaskRunner(max_workers=flows.workers)


# One backend per worker process, kept for every shard the worker runs (a loaded model, or a
# client with its connection pool and rate limit), closed when the worker exits.
_BACKENDS: dict[str, Backend] = {}


def worker_backend(cfg: BackendConfig) -> Backend:
    key = json.dumps(dataclasses.asdict(cfg), sort_keys=True)
    if key not in _BACKENDS:
        if not _BACKENDS:
            atexit.register(close_backends)
        _BACKENDS[key] = make_backend(cfg)
    return _BACKENDS[key]


def close_backends() -> None:
    while _BACKENDS:
        _, backend = _BACKENDS.popitem()
        backend.close()


# --- generate -------------------------------------------------------------------------------


@task(name="plan", cache_policy=NO_CACHE, persist_result=False)
def plan_task(store_cfg: StoreConfig, cfg: GenerateConfig, run_id: str | None) -> GenerationPlan:
    """Which shards still miss samples (the store says), without loading a model."""
    store = Store.from_config(store_cfg)
    return plan(store, cfg, backend_identity(cfg.backend), run_id=run_id)


@task(
    name="generate-shard",
    task_run_name="shard {shard.index}",
    cache_policy=NO_CACHE,
    persist_result=False,
)
def shard_task(
    store_cfg: StoreConfig,
    cfg: GenerateConfig,
    lineage: Lineage,
    the_plan: GenerationPlan,
    shard: Shard,
) -> ShardOutcome:
    """One shard: its samples and their cost in one store commit."""
    store = Store.from_config(store_cfg)
    return generate_shard(store, cfg, lineage, the_plan, shard, worker_backend(cfg.backend))


def run_generation(
    store_cfg: StoreConfig,
    cfg: GenerateConfig,
    flows_cfg: FlowsConfig,
    lineage: Lineage,
    *,
    runner: TaskRunner[Any] | None = None,
) -> dict[str, Any]:
    """Plan, then one task per pending shard on the configured runner (or `runner`: the
    benchmark runs the shards on one thread of this process, as plain Python would); the
    run's report."""
    import time

    started = time.perf_counter()
    the_plan = plan_task(store_cfg, cfg, lineage.flow_run_id)
    report = new_report(the_plan)
    _say(
        f"generate {cfg.table}: {the_plan.prompts} prompts in {the_plan.shards} shards, "
        f"{the_plan.shards_skipped} already committed, {len(the_plan.pending)} to generate "
        f"with {the_plan.identity}"
    )
    if the_plan.pending:
        runner = runner or task_runner(flows_cfg, cfg.backend)
        with runner:
            futures = [
                runner.submit(
                    shard_task,
                    {
                        "store_cfg": store_cfg,
                        "cfg": cfg,
                        "lineage": lineage,
                        "the_plan": the_plan,
                        "shard": shard,
                    },
                )
                for shard in the_plan.pending
            ]
            for done, future in enumerate(as_completed(futures), 1):
                outcome = future.result()
                add_shard(report, outcome)
                _say(
                    f"  shard {outcome.cost.shard + 1}/{the_plan.shards} -> "
                    f"{cfg.table}@{outcome.version}: {outcome.written} samples, "
                    f"{outcome.cost.completion_tokens:,} tokens ({done}/{len(futures)})"
                )
        close_backends()  # an openai client lives in this process; worker processes are gone
    report.seconds = time.perf_counter() - started
    store = Store.from_config(store_cfg)
    if store.exists(cfg.table):
        report.version = store.latest_version(cfg.table)
        publish_version(store, cfg.table, report.version, since=the_plan.version)
    return report.to_dict()


@flow(name="generate", log_prints=True)
def generate(config: str, model_dir: str | None = None, store: str | None = None) -> dict[str, Any]:
    """Generate the run config's `generate:` section into its table, one task per shard.

    `model_dir` replaces the local or vLLM backend's checkpoint (the recipe generates from the
    newest checkpoint it made; rejection sampling from an RL checkpoint's event).
    """
    cfg = _load(config, store)
    section = generation_section(cfg, model_dir)
    return run_generation(cfg.store, section, cfg.flows, _lineage("flow generate", cfg))


# `model_dir: "@base"` (in a config, or as a flow parameter): the recipe's toy base.
BASE = "@base"


def generation_section(cfg: RunConfig, model_dir: str | None) -> GenerateConfig:
    """The config's `generate:` section, generating from `model_dir` when given; `@base`
    names the recipe's toy base (trained once, cached under recipe.base_dir)."""
    from store.config import ConfigError

    if cfg.generate is None:
        raise ConfigError("the run config has no generate: section")
    section = cfg.generate
    backend = section.backend
    if model_dir is None:
        local = backend.local if backend.kind == "local" else backend.vllm
        if local is None or local.model_dir != BASE:
            return section
        model_dir = BASE
    if model_dir == BASE:
        model_dir = str(base_model_dir(cfg))
    if backend.kind == "local" and backend.local is not None:
        backend = replace(backend, local=replace(backend.local, model_dir=model_dir))
    elif backend.kind == "vllm" and backend.vllm is not None:
        backend = replace(backend, vllm=replace(backend.vllm, model_dir=model_dir))
    else:
        raise ConfigError("model_dir: the openai backend generates from what its server serves")
    return replace(section, backend=backend)


# --- verify ---------------------------------------------------------------------------------


@task(name="judge", cache_policy=NO_CACHE, persist_result=False)
def judge_task(store_cfg: StoreConfig, table: str, workers: int, lineage: Lineage) -> JudgeReport:
    return judge(Store.from_config(store_cfg), JudgeConfig(table, workers=workers), lineage)


@flow(name="verify", log_prints=True)
def verify(config: str, table: str | None = None, store: str | None = None) -> dict[str, Any]:
    """Judge a table version (`table`, else the config's judge: or generate: table) and commit
    the verdicts; the verifiers run their own worker pools."""
    cfg = _load(config, store)
    if table is None:
        if cfg.judge is not None:
            table = cfg.judge.table
        elif cfg.generate is not None:
            table = cfg.generate.table
        else:
            from store.config import ConfigError

            raise ConfigError("verify: name a table (the config has no judge: or generate:)")
    workers = cfg.judge.workers if cfg.judge is not None else cfg.flows.workers
    report = judge_task(cfg.store, table, workers, _lineage("flow verify", cfg))
    _say(
        f"verify {report.table}@{report.judged_version}: {report.rows} samples, "
        f"{report.changed} with new verdicts -> {report.table}@{report.version}; "
        + "; ".join(
            f"{v}: " + ", ".join(f"{n} {k}" for k, n in c.items())
            for v, c in report.verdicts.items()
        )
    )
    publish_version(
        Store.from_config(cfg.store), report.table, report.version, since=report.judged_version
    )
    return dict(report.to_dict())


@flow(name="generate-and-verify", log_prints=True)
def generate_and_verify(
    config: str, model_dir: str | None = None, store: str | None = None
) -> dict[str, Any]:
    """The scheduled run: generate the config's prompts (finished shards are skipped), then
    judge the table."""
    generated = generate(config, model_dir=model_dir, store=store)
    verified = verify(config, table=generated["table"], store=store)
    return {"generate": generated, "verify": verified}


# --- filter and assemble --------------------------------------------------------------------


@task(name="filter-run", cache_policy=NO_CACHE, persist_result=False)
def filter_task(config: str, store: str | None, flow_run_id: str | None) -> FilterRunReport:
    return run_filter(config, store_root=store, flow_run_id=flow_run_id)


@flow(name="filter-and-assemble", log_prints=True)
def filter_and_assemble(config: str, store: str | None = None) -> dict[str, Any]:
    """Filter, dedup, decontaminate and assemble the mixture (the config's `filter:`); the
    mixture version's card is rendered from the store and published as artifacts."""
    cfg = _load(config, store)
    report = filter_task(config, store, _lineage("flow filter_and_assemble", cfg).flow_run_id)
    for step in report.steps:
        _say(f"  {step.step:<16} kept {step.kept:>5} of {step.rows_in}")
    _say(f"filter and assemble: {report.candidates}, {report.mixture} ({report.mixture_rows} rows)")
    st = Store.from_config(cfg.store)
    ref = report.mixture
    publish_version(st, ref.table, int(ref.version or 0), card_file=report.card)
    return dict(report.to_dict())


# --- card -----------------------------------------------------------------------------------


@flow(name="card", log_prints=True)
def card(config: str, table: str, version: int | None = None, store: str | None = None) -> str:
    """Render a version's card from the store into the filter outputs' card_dir and publish it
    (summary, diff against the previous version, cost) as artifacts; returns the card's path."""
    from data_cards.from_store import write_card_for_version

    cfg = _load(config, store)
    st = Store.from_config(cfg.store)
    version = st.latest_version(table) if version is None else version
    out = Path(cfg.filter.outputs.card_dir) / f"{table}-v{version}"
    path = write_card_for_version(st, table, version, out)
    publish_version(st, table, version, card_file=path)
    _say(f"card of {table}@{version}: {path}")
    return str(path)


# --- artifacts ------------------------------------------------------------------------------


def _artifact_key(table: str, what: str) -> str:
    # Prefect's artifact keys: lowercase letters, digits and dashes.
    return f"{table}-{what}".replace("_", "-").lower()


def publish_version(
    store: Store,
    table: str,
    version: int,
    *,
    since: int | None = None,
    card_file: Path | None = None,
) -> None:
    """Publish a table version as Prefect artifacts of the current flow run: its card summary,
    its diff against `since` (default: the previous version), and its generation cost, so
    that the UI shows the dataset versions beside the runs. Outside a flow run: nothing."""
    if FlowRunContext.get() is None:
        return
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    from data_cards.from_store import card_text_for_version
    from store.diff import diff_versions

    text = (
        card_file.read_text()
        if card_file is not None
        else card_text_for_version(store, table, version)
    )
    # The front matter is for the Hub; the UI shows the Markdown after it.
    body = text.split("\n---\n", 1)[1] if text.startswith("---\n") else text
    create_markdown_artifact(
        key=_artifact_key(table, "card"),
        markdown=body,
        description=f"card of {table}@{version}",
    )
    base = version - 1 if since is None or since < 0 or since >= version else since
    if base >= 0:
        diff = diff_versions(store, table, base, version)
        rows = [
            {"": "rows", f"@{base}": diff.old_rows, f"@{version}": diff.new_rows},
            {"": "added", f"@{base}": "", f"@{version}": diff.added},
            {"": "removed", f"@{base}": "", f"@{version}": diff.removed},
            {"": "changed", f"@{base}": "", f"@{version}": diff.changed},
        ]
        create_table_artifact(
            key=_artifact_key(table, "diff"),
            table=rows,
            description=f"{table}@{base} -> {table}@{version}",
        )
    cost = store.reports(table, version).get(COST_KIND)
    if cost is not None:
        runs = cost.report.data.get("runs", [])
        create_table_artifact(
            key=_artifact_key(table, "cost"),
            table=[{k: v for k, v in run.items() if k != "finish_reasons"} for run in runs],
            description=f"generation cost of {table}@{version} (stored with @{cost.version})",
        )


# --- training -------------------------------------------------------------------------------


@task(name="train-stage", cache_policy=NO_CACHE, persist_result=False)
def train_task(cfg: Any, out_dir: str, resume: bool) -> dict[str, Any]:
    from flows.train import train_stage

    return train_stage(cfg, out_dir=out_dir, resume=resume, say=_say).to_dict()


@flow(name="train", log_prints=True)
def train(
    config: str,
    out: str | None = None,
    resume: bool = True,
    store: str | None = None,
    checkpoint: str | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """Run one trainer stage (pretrain, sft, distill, and the recipe's SFT stages cold_start
    and rejection_sft) from its config; the trainer announces the checkpoint
    (`model.checkpoint.created`). `store` replaces the config's store root, `checkpoint` the
    checkpoint it starts from, `source` the table version it trains on (the recipe passes the
    ones its earlier stages made)."""
    from flows.train import load_stage_config

    cfg = load_stage_config(config)
    if store is not None:
        cfg = replace(cfg, store=replace(cfg.store, root=store))
    if checkpoint is not None:
        cfg = replace(cfg, model=replace(cfg.model, checkpoint=checkpoint))
    if source is not None:
        cfg = replace(cfg, data=replace(cfg.data, source=source))
    out_dir = out or cfg.out_dir
    started = f" from {cfg.model.checkpoint}" if cfg.model.checkpoint else ""
    on = f" on {cfg.data.source}" if cfg.corpus is None and cfg.data.source else ""
    _say(f"train {cfg.stage}: {config}{started}{on} -> {out_dir}")
    return train_task(cfg, str(out_dir), resume)


@task(name="grpo-stage", cache_policy=NO_CACHE, persist_result=False)
def grpo_task(cfg: Any, out_dir: str, resume: bool) -> dict[str, Any]:
    from flows.train import grpo_stage

    return grpo_stage(cfg, out_dir=out_dir, resume=resume, say=_say).to_dict()


@flow(name="rl", log_prints=True)
def rl(
    config: str,
    out: str | None = None,
    checkpoint: str | None = None,
    resume: bool = True,
    store: str | None = None,
) -> dict[str, Any]:
    """Run one GRPO stage of the recipe (r1_zero, reasoning_rl, final_rl; trainer.recipe) from
    its config: `checkpoint` replaces the checkpoint it starts from (the recipe passes the one
    its previous stage made), `store` the store its prompt table goes to."""
    from flows.train import load_grpo_stage_config

    cfg = load_grpo_stage_config(config)
    if checkpoint is not None:
        cfg = replace(cfg, model=replace(cfg.model, checkpoint=checkpoint))
    if store is not None:
        cfg = replace(cfg, store=replace(cfg.store, root=store))
    out_dir = out or cfg.out_dir
    _say(f"rl {cfg.stage}: {config} from {cfg.model.checkpoint} -> {out_dir}")
    result = grpo_task(cfg, str(out_dir), resume)
    # The GRPO loop does not announce its checkpoint (the SFT loop does): announce it here, so
    # that a reasoning-RL checkpoint triggers rejection sampling (prefect.yaml).
    from store.events import checkpoint_created

    made = Path(result["out_dir"]).resolve()
    checkpoint_created(made.name, str(made), cfg.stage, int(result["steps"]))
    return result


@contextmanager
def exclusive(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` (waiting for it): two runs for one version
    never train at once; the second finds the first's result."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def distill_out_dir(runs_dir: str, table: str, version: int) -> Path:
    return Path(runs_dir) / f"distill-{table}-v{version}"


def distill_stage(
    cfg: RunConfig, table: str, version: int, *, teacher: str | None = None
) -> dict[str, Any]:
    """Distil a student on `table@version` (the recipe's `distill_config`), once per version.

    Idempotent: the student of a version lives in its own directory; a run that finds the
    finished student (its `train_summary.json` naming this version) returns it untrained, and
    a lock makes a second run for the same version wait for the first. So a trigger fired
    twice for one mixture version trains once.
    """
    from flows.train import load_stage_config, train_stage
    from store.config import ConfigError
    from trainer.train import SUMMARY_FILE

    if cfg.recipe.distill_config is None:
        raise ConfigError("recipe.distill_config: name the student's training config")
    out = distill_out_dir(cfg.recipe.runs_dir, table, version)
    with exclusive(out.with_name(out.name + ".lock")):
        summary_file = out / SUMMARY_FILE
        if summary_file.is_file():
            done = json.loads(summary_file.read_text())
            if done.get("data", {}).get("version") == version:
                _say(f"distill {table}@{version}: already done in {out}; not training again")
                return {**done, "trained": False}
        stage = load_stage_config(cfg.recipe.distill_config)
        tokenizer = teacher or str(base_model_dir(cfg))
        stage = replace(
            stage,
            store=cfg.store,
            data=replace(stage.data, source=f"{table}@{version}"),
            model=replace(stage.model, tokenizer=tokenizer),
        )
        _say(f"distill {table}@{version} -> {out} (tokenizer of {tokenizer})")
        summary = train_stage(stage, out_dir=out, resume=True, say=_say).to_dict()
        return {**summary, "trained": True}


@task(name="distill-student", cache_policy=NO_CACHE, persist_result=False)
def distill_task(cfg: RunConfig, table: str, version: int, teacher: str | None) -> dict[str, Any]:
    return distill_stage(cfg, table, version, teacher=teacher)


@flow(name="distill", log_prints=True)
def distill(
    config: str,
    table: str,
    version: int,
    teacher: str | None = None,
    store: str | None = None,
) -> dict[str, Any]:
    """Distil the recipe's student on one mixture version; what the `distill-on-new-mixture`
    deployment runs when a mixture version is announced (idempotent per version)."""
    cfg = _load(config, store)
    result = distill_task(cfg, table, version, teacher)
    if FlowRunContext.get() is not None:
        from prefect.artifacts import create_markdown_artifact

        after = (result.get("eval_after") or {}).get("families", {})
        lines = [
            f"Student distilled on `{table}@{version}` ({'trained' if result['trained'] else 'already trained; not retrained'}).",
            "",
            "| family | greedy | pass@k |",
            "|---|---:|---:|",
            *(
                f"| {name} | {s['greedy']:.1%} | {s['pass_at_k']:.1%} |"
                for name, s in after.items()
            ),
        ]
        create_markdown_artifact(
            key=_artifact_key(f"distill-{table}", "student"), markdown="\n".join(lines)
        )
    return result


# --- the recipe's base ----------------------------------------------------------------------


def base_model_dir(cfg: RunConfig) -> Path:
    """Where the recipe's toy base lives: base_dir/<key of its config> (trained once).

    The key hashes the base config's fields that differ from their defaults
    (`store.config.settings_hash`), not the whole resolved config: an option added to the
    trainer later, with a default, keeps the cached base (eight minutes of pretraining), while
    any value the config sets differently trains a new one.
    """
    from flows.train import load_stage_config
    from store.config import settings_hash

    base = load_stage_config(cfg.recipe.base_config)
    root = Path(cfg.recipe.base_dir)
    base = replace(base, store=replace(base.store, root=str(root / "store")))
    return root / settings_hash(base)


def ref_of(result: dict[str, Any]) -> TableRef:
    return TableRef(result["table"], int(result["version"]))


__all__ = [
    "base_model_dir",
    "card",
    "distill",
    "distill_stage",
    "filter_and_assemble",
    "generate",
    "generate_and_verify",
    "publish_version",
    "rl",
    "run_generation",
    "task_runner",
    "train",
    "verify",
]


# --- rejection sampling ---------------------------------------------------------------------


@flow(name="rejection-sampling", log_prints=True)
def rejection_sampling(
    config: str, model_dir: str | None = None, store: str | None = None
) -> dict[str, Any]:
    """Sample from a checkpoint (`model_dir`: a new RL checkpoint, when its event triggers
    this), judge the samples, filter and assemble the mixture."""
    done = generate_and_verify(config, model_dir=model_dir, store=store)
    mixed = filter_and_assemble(config, store=store)
    return {**done, "filter_and_assemble": mixed}
