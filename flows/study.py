"""The toy R1 recipe's comparison study: `r1f recipe --config configs/r1-toy.yaml --out DIR
--seeds N` (docs/results.md). Each seed runs the arms issue 11's four claims compare, from one
shared toy base; `DIR/results.json` and `DIR/results.md` summarise them over the seeds.

    shared        base          the toy base (configs/pretrain-toy.yaml), cached under
                                base_dir/<config hash> as `flows.recipe.pretrain` caches it
                  student_base  a small dense student of our own architecture, pretrained
                                briefly on the same corpus, cached the same way
                  eval_base     held-out evaluation of the base: accuracy_before
    per seed s    r1_zero       GRPO, accuracy + format rewards, from the base (the teacher)
                  language      the same GRPO with the language-consistency reward added
                  rejection     sample the teacher on training prompts (disjoint from the held-out
                                set), verify, filter and assemble (the factory's stage functions);
                                the unfiltered set: as many of the same samples, unjudged
                  sft_filtered  the student base fine-tuned on the filtered mixture
                  sft_unfiltered  ... on the unfiltered set, the same steps
                  student_rl    the student base trained by pure GRPO for as many CPU-seconds as
                                sft_filtered's training took

Every arm is a plain function of plain parameters returning a JSON-able dict (`run_job`), so
it runs in any worker process. A small scheduler (`schedule`) submits the arms whose inputs
are ready, at most `workers` at once, to one of two pools:

- `prefect` (default): a Prefect flow whose arms are tasks on the bounded process pool the
  factory's flows use (`flows.factory.task_runner`), against the embedded server
  (`flows.embedded`), so that the runs show in Prefect's UI;
- `processes`: the same arms on a `concurrent.futures` process pool, without Prefect (no
  server to start: 15-130 s on two cores, which a micro study in a test should not pay).

The arms call the trainer's and the factory's stage functions directly (`train_stage`,
`grpo_stage`, `generators.generate.generate`, `verifiers.judge.judge`,
`filters.pipeline.run_filter_pipeline`), not the factory's flows: a flow called inside a pool
worker would start flow runs (and, without an API, a server) of its own, and its own process
pool beside ours on two cores.
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from filters.pipeline import FilterRunConfig
from generators.generate import GenerateConfig
from generators.tasks.corpus import PromptSetConfig
from store.config import ConfigError, config_from_dict, config_to_dict, load_config
from store.store import StoreConfig
from trainer.config import EvalConfig
from verifiers.judge import JudgeConfig

# --- config ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudySection:
    """Which stage configs the arms run (paths relative to this file), and how."""

    # prefect: arms are Prefect tasks on a process pool; processes: a plain process pool.
    engine: Literal["prefect", "processes"] = "prefect"
    workers: int = 2  # arms at once (one torch thread each)
    base_config: str = field(default="pretrain-toy.yaml", metadata={"path": True})
    # Relative to the working directory, as flows.config.RecipeConfig's: the same cache.
    base_dir: str = "work/base"
    student_base_config: str = field(default="pretrain-student-toy.yaml", metadata={"path": True})
    r1_zero_config: str = field(default="r1-zero-toy.yaml", metadata={"path": True})
    language_config: str = field(default="r1-zero-language-toy.yaml", metadata={"path": True})
    student_sft_config: str = field(default="distill-student-toy.yaml", metadata={"path": True})
    student_rl_config: str = field(default="r1-zero-student-toy.yaml", metadata={"path": True})
    # The training prompts rejection sampling answers (held-out problems left out by text).
    rejection_prompts: PromptSetConfig = field(
        default_factory=lambda: PromptSetConfig(
            table="study-sft-prompts", seed=2, families={"toy-arithmetic": 150}
        )
    )

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")


@dataclass(frozen=True)
class StudyConfig:
    """configs/r1-toy.yaml: the study, plus the factory's own sections for rejection sampling
    (`generate`, `judge`, `filter`; each seed writes its own tables, `NAME-s<seed>`)."""

    generate: GenerateConfig
    filter: FilterRunConfig
    name: str = "r1-toy-study"
    seed: int = 0  # the first seed; N seeds are seed, seed + 1, ...
    store: StoreConfig = field(default_factory=StoreConfig)
    study: StudySection = field(default_factory=StudySection)
    eval: EvalConfig = field(default_factory=EvalConfig)
    judge: JudgeConfig = field(default_factory=lambda: JudgeConfig(table="study-generated"))


def load_study_config(path: str | os.PathLike[str]) -> StudyConfig:
    """The study config, with every stage config it names loaded once (so that a mistake in
    any of them is one line before anything runs)."""
    from flows.train import load_grpo_stage_config, load_stage_config

    cfg = load_config(Path(path), StudyConfig)
    s = cfg.study
    for key in ("base_config", "student_base_config", "student_sft_config"):
        file = getattr(s, key)
        if not Path(file).is_file():
            raise ConfigError(f"{path}: study.{key}: no such file {file}")
        load_stage_config(file)
    from trainer.recipe import check_rl_stage

    for key, stage in (
        ("r1_zero_config", "r1_zero"),
        ("language_config", "reasoning_rl"),
        ("student_rl_config", "r1_zero"),
    ):
        file = getattr(s, key)
        if not Path(file).is_file():
            raise ConfigError(f"{path}: study.{key}: no such file {file}")
        grpo = load_grpo_stage_config(file)
        if grpo.stage != stage:
            raise ConfigError(f"{path}: study.{key}: {file} is stage {grpo.stage}, not {stage}")
        try:
            check_rl_stage(grpo)
        except ValueError as err:
            raise ConfigError(f"{file}: {err}") from None
    if cfg.eval.seed == s.rejection_prompts.seed:
        raise ConfigError(
            f"{path}: study.rejection_prompts.seed equals eval.seed ({cfg.eval.seed}): the "
            "student would train on the held-out problems; give them different seeds"
        )
    if cfg.generate.backend.kind != "local" or cfg.generate.backend.local is None:
        raise ConfigError(f"{path}: generate.backend: the study samples its teacher locally")
    return cfg


class StudyFailed(RuntimeError):
    """No seed finished all its arms: nothing to summarise (arms.json says what failed)."""


# --- jobs and the scheduler -----------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One arm: `kind` names the function (`ARMS`), `params` its plain arguments, `needs` the
    jobs whose results it takes (passed as `inputs`, by job name)."""

    name: str
    kind: str
    params: dict[str, Any]
    needs: tuple[str, ...] = ()


@dataclass
class Outcome:
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # job -> error line
    skipped: dict[str, str] = field(default_factory=dict)  # job -> the failed job it needed


Submit = Callable[[Job, dict[str, Any]], Any]  # (job, inputs) -> a future
WaitFirst = Callable[[list[Any]], Any]  # futures -> one that is done
Result = Callable[[Any], dict[str, Any]]  # a done future -> its result (raises its error)


def schedule(
    jobs: Sequence[Job],
    submit: Submit,
    wait_first: WaitFirst,
    result: Result,
    workers: int,
    say: Callable[[str], None] = print,
    progress: Callable[[Outcome], None] | None = None,
) -> Outcome:
    """Run `jobs` respecting `needs`, at most `workers` at once, in list order among the
    ready ones (put the critical path first). A failed job fails nothing else but its
    dependents, which are skipped: the seeds that finished still count. `progress` sees the
    outcome so far after every finished or failed job."""
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise ValueError("job names must be unique")
    known = set(names)
    for j in jobs:
        unknown = [n for n in j.needs if n not in known]
        if unknown:
            raise ValueError(f"job {j.name} needs unknown {unknown}")
    out = Outcome()
    pending = list(jobs)
    running: dict[int, tuple[Any, Job, float]] = {}
    while pending or running:
        for job in list(pending):
            lost = [n for n in job.needs if n in out.failed or n in out.skipped]
            if lost:
                pending.remove(job)
                out.skipped[job.name] = lost[0]
                say(f"skip {job.name}: {lost[0]} did not finish")
        for job in list(pending):
            if len(running) >= workers:
                break
            if all(n in out.results for n in job.needs):
                pending.remove(job)
                inputs = {n: out.results[n] for n in job.needs}
                future = submit(job, inputs)
                running[id(future)] = (future, job, time.perf_counter())
                say(f"start {job.name}")
        if not running:
            if pending:  # nothing runs and nothing can start: a cycle
                raise ValueError(f"jobs wait on each other: {[j.name for j in pending]}")
            break
        done = wait_first([f for f, _, _ in running.values()])
        _, job, started = running.pop(id(done))
        try:
            out.results[job.name] = result(done)
            say(f"done  {job.name} ({time.perf_counter() - started:.0f} s)")
        except Exception as err:  # one arm's failure must not lose the others
            line = (str(err).strip().splitlines() or [""])[0][:300]
            out.failed[job.name] = f"{type(err).__name__}: {line}"
            say(f"FAILED {job.name}: {out.failed[job.name]}")
        if progress is not None:
            progress(out)
    return out


def run_job(kind: str, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """Run one arm in this process (a pool worker): one torch thread, the arm's function."""
    import torch

    torch.set_num_threads(1)
    return ARMS[kind](params, inputs)


def run_processes(
    jobs: Sequence[Job],
    workers: int,
    say: Callable[[str], None],
    progress: Callable[[Outcome], None] | None = None,
) -> Outcome:
    """The arms on a plain process pool (spawned workers: no torch state forked)."""
    import concurrent.futures as cf
    import multiprocessing

    with cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:

        def submit(job: Job, inputs: dict[str, Any]) -> Any:
            return pool.submit(run_job, job.kind, job.params, inputs)

        def wait_first(futures: list[Any]) -> Any:
            done, _ = cf.wait(futures, return_when=cf.FIRST_COMPLETED)
            return next(iter(done))

        return schedule(jobs, submit, wait_first, lambda f: f.result(), workers, say, progress)


# --- the arms -------------------------------------------------------------------------------


def _cpu() -> float:
    """CPU-seconds of this process and of its children that have exited (the math
    verifier's worker processes, when the pool has been closed)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _eval_config(params: Mapping[str, Any]) -> EvalConfig:
    return config_from_dict(params["eval"], EvalConfig, source="study eval")


def evaluate_dir(model_dir: str | Path, eval_cfg: EvalConfig) -> dict[str, Any]:
    """Held-out evaluation of a checkpoint directory of ours (`trainer.evaluate`)."""
    from flows.train import toy_problems
    from trainer.checkpoint import load_checkpoint
    from trainer.evaluate import evaluate, sampler_for
    from trainer.tokenizer import R1Tokenizer

    problems = toy_problems(
        eval_cfg.families, eval_cfg.problems, eval_cfg.seed, eval_cfg.difficulty
    )
    model, _ = load_checkpoint(Path(model_dir))
    report = evaluate(
        sampler_for(model.eval(), R1Tokenizer.from_dir(Path(model_dir))),
        problems,
        k=eval_cfg.k,
        temperature=eval_cfg.temperature,
        max_tokens=eval_cfg.max_tokens,
        seed=eval_cfg.seed,
    )
    return report.to_dict()


def arm_pretrain(params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """A base trained once per config: base_dir/<config hash>, the key and layout of
    `flows.recipe.pretrain` (`flows.factory.base_model_dir`), so `r1f demo` and the study
    share the cache."""
    from flows.config import RecipeConfig, RunConfig
    from flows.factory import base_model_dir
    from flows.train import load_stage_config, train_stage
    from trainer.train import SUMMARY_FILE

    run_cfg = RunConfig(
        recipe=RecipeConfig(base_config=params["config"], base_dir=params["base_dir"])
    )
    out = base_model_dir(run_cfg)
    if (out / SUMMARY_FILE).is_file():
        return {"dir": str(out), "cached": True}
    started, cpu = time.perf_counter(), _cpu()
    stage = load_stage_config(params["config"])
    store = str(Path(params["base_dir"]) / "store")
    stage = replace(stage, store=replace(stage.store, root=store))
    train_stage(stage, out_dir=out, resume=True, say=_quiet)
    return {
        "dir": str(out),
        "cached": False,
        "seconds": time.perf_counter() - started,
        "cpu_seconds": _cpu() - cpu,
    }


def arm_eval(params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    model_dir = inputs[params["model"]]["dir"]
    return {"dir": model_dir, "eval": evaluate_dir(model_dir, _eval_config(params))}


def arm_grpo(params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """A GRPO stage from `inputs[start]`'s checkpoint with the run's seed, its prompt table in
    the study's store; CPU-seconds of the training alone, then the held-out evaluation."""
    from flows.train import grpo_stage, load_grpo_stage_config

    cfg = load_grpo_stage_config(params["config"])
    start = inputs[params["start"]]["dir"]
    cfg = replace(
        cfg,
        seed=int(params["seed"]),
        model=replace(cfg.model, checkpoint=start),
        store=replace(cfg.store, root=params["store"]),
        loop=replace(cfg.loop, progress=False),  # two arms at once would interleave bars
    )
    budget = None
    if params.get("budget_from"):
        budget = float(inputs[params["budget_from"]]["cpu_seconds"])
    started, cpu = time.perf_counter(), _cpu()
    summary = grpo_stage(
        cfg, out_dir=params["out"], resume=False, say=_quiet, evaluate=False, cpu_budget=budget
    )
    cpu_seconds, seconds = _cpu() - cpu, time.perf_counter() - started
    return {
        "dir": str(summary.out_dir),
        "steps": summary.steps,
        "trend": rollout_trend(summary.out_dir),
        "cpu_seconds": cpu_seconds,
        "cpu_budget": budget,
        "seconds": seconds,
        "final": summary.final,
        "eval": evaluate_dir(summary.out_dir, _eval_config(params)),
    }


TREND_KEYS = ("response_length", "format_rate", "accuracy", "mixed_language_rate")


def rollout_trend(run_dir: str | Path, n: int = 5) -> dict[str, float]:
    """Means of the rollouts' response length, format rate, accuracy and mixed-language rate
    over the first and the last `n` steps of a GRPO run (`<key>.first`, `<key>.last`)."""
    import math

    from trainer.metrics import read_metrics

    records = read_metrics(run_dir, "train")
    out: dict[str, float] = {}
    for key in TREND_KEYS:
        values = [float(r[key]) for r in records if key in r and math.isfinite(float(r[key]))]
        if values:
            out[f"{key}.first"] = sum(values[:n]) / len(values[:n])
            out[f"{key}.last"] = sum(values[-n:]) / len(values[-n:])
    return out


def arm_sft(params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """SFT (the distill stage) of the student base on a table version of the rejection arm."""
    from flows.train import load_stage_config
    from trainer.train import run_training

    cfg = load_stage_config(params["config"])
    data = inputs[params["data_from"]][params["data_key"]]
    cfg = replace(
        cfg,
        seed=int(params["seed"]),
        model=replace(cfg.model, checkpoint=inputs[params["start"]]["dir"]),
        data=replace(cfg.data, source=data),
        store=replace(cfg.store, root=params["store"]),
        loop=replace(cfg.loop, progress=False),
    )
    started, cpu = time.perf_counter(), _cpu()
    summary = run_training(cfg, out_dir=params["out"], resume=False, say=_quiet)
    cpu_seconds, seconds = _cpu() - cpu, time.perf_counter() - started
    return {
        "dir": str(summary.out_dir),
        "data": data,
        "steps": summary.steps,
        "cpu_seconds": cpu_seconds,
        "seconds": seconds,
        "final_loss": summary.final_loss,
        "eval": evaluate_dir(summary.out_dir, _eval_config(params)),
    }


def arm_rejection(params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """Rejection sampling from the teacher with the factory's stage functions: generate the
    training prompts' samples into `<generate.table>-s<seed>`, judge them, filter and assemble
    the mixture (`<filter.outputs.mixture>-s<seed>`); then the unfiltered control: as many of
    the same generated samples, drawn uniformly with the seed, before any verdict or filter
    (`<table>-unfiltered-s<seed>`)."""
    import random

    from filters.pipeline import InputTable, run_filter_pipeline
    from generators.generate import generate
    from store.lineage import Lineage
    from store.store import Store
    from verifiers.judge import judge

    cfg = config_from_dict(params["study"], StudyConfig, source="study config")
    seed = int(params["seed"])
    store = Store.from_config(cfg.store)
    lineage = Lineage(writer=f"r1f recipe (seed {seed})", config_hash=params["config_hash"])
    suffix = f"-s{seed}"
    teacher = inputs[params["teacher"]]["dir"]
    gen = cfg.generate
    assert gen.backend.local is not None
    gen = replace(
        gen,
        table=gen.table + suffix,
        prompts=replace(gen.prompts, table=params["prompts"], sources={}),
        sampling=replace(gen.sampling, seed=seed),
        backend=replace(gen.backend, local=replace(gen.backend.local, model_dir=teacher)),
    )
    started, cpu = time.perf_counter(), _cpu()
    made = generate(store, gen, lineage)
    generated_version = store.latest_version(gen.table)
    judged = judge(store, replace(cfg.judge, table=f"{gen.table}@{generated_version}"), lineage)
    filt = cfg.filter
    filt = replace(
        filt,
        inputs=[InputTable(gen.table, judged.version)],
        outputs=replace(
            filt.outputs,
            candidates=filt.outputs.candidates + suffix,
            mixture=filt.outputs.mixture + suffix,
        ),
    )
    report = run_filter_pipeline(store, filt, lineage, seed=seed)
    mixture = report.mixture
    rows = int(report.mixture_rows)
    raw = store.read(gen.table, generated_version)
    chosen = sorted(random.Random(seed).sample(range(raw.height), min(rows, raw.height)))
    unfiltered_table = f"{gen.table}-unfiltered"
    committed = store.commit(
        unfiltered_table,
        raw[chosen].to_arrow(),
        lineage=replace(
            lineage, message=f"{len(chosen)} samples of {gen.table}@{generated_version}, unjudged"
        ),
        mode="overwrite",
    )
    math_verdicts = judged.verdicts.get("math", {})
    return {
        "mixture": f"{mixture.table}@{mixture.version}",
        "unfiltered": f"{unfiltered_table}@{committed.version}",
        "generated": raw.height,
        "generated_table": f"{gen.table}@{generated_version}",
        "mixture_rows": rows,
        "unfiltered_rows": len(chosen),
        "teacher_correct_share": math_verdicts.get("correct", 0) / max(raw.height, 1),
        "generation_seconds": made.seconds,
        "seconds": time.perf_counter() - started,
        "cpu_seconds": _cpu() - cpu,
    }


def _quiet(line: str) -> None:
    """The stages' progress lines are left out: two arms at once would interleave them."""


ARMS: dict[str, Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]] = {
    "pretrain": arm_pretrain,
    "eval": arm_eval,
    "grpo": arm_grpo,
    "sft": arm_sft,
    "rejection": arm_rejection,
}


# --- the study ------------------------------------------------------------------------------


def plan_jobs(cfg: StudyConfig, seeds: Sequence[int], out: Path, prompts: str) -> list[Job]:
    """Every arm of the study, the critical path first (bases, then each seed's teacher, its
    rejection sampling and students; the language arm last)."""
    s = cfg.study
    store = str(cfg.store.root)
    ev = config_to_dict(cfg.eval)
    study = config_to_dict(cfg)
    from store.config import config_hash

    jobs = [
        Job("base", "pretrain", {"config": s.base_config, "base_dir": s.base_dir}),
        Job("student_base", "pretrain", {"config": s.student_base_config, "base_dir": s.base_dir}),
    ]
    per_seed: list[list[Job]] = []
    for seed in seeds:
        d = out / "runs" / f"s{seed}"

        def common(name: str, seed: int = seed, d: Path = d) -> dict[str, Any]:
            return {"seed": seed, "store": store, "eval": ev, "out": str(d / name)}

        per_seed.append(
            [
                Job(
                    f"r1_zero/s{seed}",
                    "grpo",
                    {**common("r1-zero"), "config": s.r1_zero_config, "start": "base"},
                    ("base",),
                ),
                Job(
                    f"rejection/s{seed}",
                    "rejection",
                    {
                        "seed": seed,
                        "study": study,
                        "config_hash": config_hash(cfg),
                        "prompts": prompts,
                        "teacher": f"r1_zero/s{seed}",
                    },
                    (f"r1_zero/s{seed}",),
                ),
                Job(
                    f"sft_filtered/s{seed}",
                    "sft",
                    {
                        **common("student-filtered"),
                        "config": s.student_sft_config,
                        "start": "student_base",
                        "data_from": f"rejection/s{seed}",
                        "data_key": "mixture",
                    },
                    ("student_base", f"rejection/s{seed}"),
                ),
                Job(
                    f"student_rl/s{seed}",
                    "grpo",
                    {
                        **common("student-rl"),
                        "config": s.student_rl_config,
                        "start": "student_base",
                        "budget_from": f"sft_filtered/s{seed}",
                    },
                    ("student_base", f"sft_filtered/s{seed}"),
                ),
                Job(
                    f"sft_unfiltered/s{seed}",
                    "sft",
                    {
                        **common("student-unfiltered"),
                        "config": s.student_sft_config,
                        "start": "student_base",
                        "data_from": f"rejection/s{seed}",
                        "data_key": "unfiltered",
                    },
                    ("student_base", f"rejection/s{seed}"),
                ),
                Job(
                    f"language/s{seed}",
                    "grpo",
                    {**common("language"), "config": s.language_config, "start": "base"},
                    ("base",),
                ),
            ]
        )
    # Priority among the ready arms. The teachers first (all else waits on them), then seed
    # by seed, so that complete seeds come in one after another (a study cut short still has
    # whole seeds), except that each seed's language run is moved one seed earlier: a long
    # GRPO run last would leave one worker idle at the end (measured: six minutes, when the
    # language runs came last).
    rest = [j for arms in per_seed for j in arms] + [
        Job("eval_base", "eval", {"model": "base", "eval": ev}, ("base",)),
        Job("eval_student_base", "eval", {"model": "student_base", "eval": ev}, ("student_base",)),
    ]
    position = {seed: i for i, seed in enumerate(seeds)}
    within = ("rejection", "language", "sft_filtered", "student_rl", "sft_unfiltered")

    def priority(job: Job) -> tuple[int, int, int]:
        kind, _, seed = job.name.partition("/s")
        if kind == "r1_zero":
            return (0, position[int(seed)], 0)
        if kind.startswith("eval"):
            return (1, 0, 0)
        at = position[int(seed)] - (1 if kind == "language" else 0)
        return (2, at, within.index(kind))

    return jobs + sorted(rest, key=priority)


def prepare_tables(cfg: StudyConfig) -> str:
    """Tables the arms share, built once before any arm starts (two arms building one table
    at once would race): the corpus of the bases, the RL prompts of every GRPO config, and the
    rejection-sampling prompts; returns the last one's version (`NAME@V`)."""
    from flows.train import load_grpo_stage_config, load_stage_config, toy_problems
    from generators.tasks.corpus import corpus_table, prompt_table
    from store.lineage import Lineage
    from store.store import Store

    lineage = Lineage(writer="r1f recipe")
    base_store = Store.from_config(StoreConfig(root=str(Path(cfg.study.base_dir) / "store")))
    for path in (cfg.study.base_config, cfg.study.student_base_config):
        stage = load_stage_config(path)
        if stage.corpus is not None:
            corpus_table(base_store, stage.corpus, lineage)
    store = Store.from_config(cfg.store)
    for path in (cfg.study.r1_zero_config, cfg.study.language_config, cfg.study.student_rl_config):
        grpo = load_grpo_stage_config(path)
        if grpo.prompt_set is not None:
            held = toy_problems(
                grpo.eval.families, grpo.eval.problems, grpo.eval.seed, grpo.eval.difficulty
            )
            prompt_table(
                store,
                replace(grpo.prompt_set, exclude_prompts=sorted({p.prompt for p in held})),
                lineage,
            )
    held = toy_problems(cfg.eval.families, cfg.eval.problems, cfg.eval.seed, cfg.eval.difficulty)
    rejection = replace(
        cfg.study.rejection_prompts, exclude_prompts=sorted({p.prompt for p in held})
    )
    return str(prompt_table(store, rejection, lineage))


def accuracy(report: Mapping[str, Any]) -> float:
    """Greedy held-out accuracy averaged over the families."""
    fams = report["families"].values()
    return sum(f["greedy"] for f in fams) / len(fams)


def _family_mean(report: Mapping[str, Any], key: str) -> float:
    fams = report["families"].values()
    return sum(f[key] for f in fams) / len(fams)


def seed_figures(results: Mapping[str, dict[str, Any]], seed: int) -> dict[str, float] | None:
    """results.json's per-seed keys from the arms of one seed; None if an arm is missing."""
    names = ("r1_zero", "language", "sft_filtered", "sft_unfiltered", "student_rl")
    arms = {n: results.get(f"{n}/s{seed}") for n in names}
    if any(v is None for v in arms.values()):
        return None
    ev = {n: v["eval"] for n, v in arms.items() if v is not None}
    return {
        "r1_zero.accuracy_after": accuracy(ev["r1_zero"]),
        "r1_zero.format_rate_after": _family_mean(ev["r1_zero"], "format_sampled"),
        "distillation.student_distilled": accuracy(ev["sft_filtered"]),
        "distillation.student_rl": accuracy(ev["student_rl"]),
        "language.mixed_rate_without": _family_mean(ev["r1_zero"], "mixed_language_sampled"),
        "language.mixed_rate_with": _family_mean(ev["language"], "mixed_language_sampled"),
        "language.accuracy_without": accuracy(ev["r1_zero"]),
        "language.accuracy_with": accuracy(ev["language"]),
        "filtering.student_filtered": accuracy(ev["sft_filtered"]),
        "filtering.student_unfiltered": accuracy(ev["sft_unfiltered"]),
    }


def seed_detail(results: Mapping[str, dict[str, Any]], seed: int) -> dict[str, float]:
    """Per-family greedy and pass@k of every model, CPU-seconds and steps of the student arms,
    mixture sizes: the detail table's rows for one seed."""
    out: dict[str, float] = {}
    for arm in ("r1_zero", "language", "sft_filtered", "sft_unfiltered", "student_rl"):
        r = results[f"{arm}/s{seed}"]
        for fam, score in r["eval"]["families"].items():
            out[f"{arm}.{fam}.greedy"] = score["greedy"]
            out[f"{arm}.{fam}.pass@{r['eval']['k']}"] = score["pass_at_k"]
        out[f"{arm}.cpu_seconds"] = r["cpu_seconds"]
        out[f"{arm}.steps"] = r["steps"]
        for key, value in r.get("trend", {}).items():
            out[f"{arm}.rollouts.{key}"] = value
    rej = results[f"rejection/s{seed}"]
    out["rejection.teacher_correct_share"] = rej["teacher_correct_share"]
    out["rejection.mixture_rows"] = rej["mixture_rows"]
    out["rejection.cpu_seconds"] = rej["cpu_seconds"]
    return out


def summarize(
    outcome: Outcome, seeds: Sequence[int], seconds: float, meta: dict[str, Any]
) -> dict[str, Any]:
    """results.json from the finished arms: the seeds whose arms all finished (the others
    listed in meta as incomplete, never averaged in)."""
    from flows.results import assemble

    done: list[int] = []
    rows: list[dict[str, float]] = []
    detail: dict[str, list[float]] = {}
    for seed in seeds:
        figures = seed_figures(outcome.results, seed)
        if figures is None:
            continue
        done.append(seed)
        rows.append(figures)
        for k, v in seed_detail(outcome.results, seed).items():
            detail.setdefault(k, []).append(v)
    shared = {"r1_zero.accuracy_before": accuracy(outcome.results["eval_base"]["eval"])}
    student = outcome.results.get("eval_student_base")
    if student is not None:
        shared["distillation.student_before"] = accuracy(student["eval"])
    for label, job in (("base", "eval_base"), ("student_base", "eval_student_base")):
        if job not in outcome.results:
            continue
        report = outcome.results[job]["eval"]
        for fam, score in report["families"].items():
            meta.setdefault(label, {})[fam] = {
                "greedy": score["greedy"],
                f"pass@{report['k']}": score["pass_at_k"],
                "format_sampled": score["format_sampled"],
                "mixed_language_sampled": score["mixed_language_sampled"],
            }
    meta["seeds_requested"] = list(seeds)
    meta["seeds_incomplete"] = [s for s in seeds if s not in done]
    return assemble(
        rows,
        shared,
        seeds=done,
        seconds=seconds,
        extra_per_seed=detail,
        meta=meta,
    )


def write_atomic(path: Path, text: str) -> None:
    """`text` replaces `path` whole or not at all (`store.jsonl.atomic_output`)."""
    from store.jsonl import atomic_output

    with atomic_output(path) as fh:
        fh.write(text)


def run_study(
    config: str | os.PathLike[str],
    out: str | os.PathLike[str],
    seeds: int,
    *,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The whole study: shared tables, the arms on the pool, results.json, plots, results.md.
    `DIR/arms.json` is rewritten after every arm, so that `finish_study(DIR)` can summarise the
    seeds that finished if the run is stopped (the others are listed as incomplete)."""
    started = time.perf_counter()
    cfg = load_study_config(config)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = replace(cfg, store=replace(cfg.store, root=str(out_dir / "store")))
    seed_list = [cfg.seed + i for i in range(seeds)]
    state: dict[str, Any] = {
        "config": str(config),
        "seeds": seed_list,
        "engine": cfg.study.engine,
        "workers": cfg.study.workers,
        "started": time.time(),
        "load_average_start": list(os.getloadavg()),
    }
    arms_file = out_dir / ARMS_FILE

    def progress(outcome: Outcome) -> None:
        state.update(
            results=outcome.results,
            failed=outcome.failed,
            skipped=outcome.skipped,
            last_done=time.time(),
        )
        write_atomic(arms_file, json.dumps(state, indent=2) + "\n")

    prompts = prepare_tables(cfg)
    jobs = plan_jobs(cfg, seed_list, out_dir, prompts)
    say(
        f"r1f recipe: {len(jobs)} arms for seeds {seed_list}, {cfg.study.workers} at once "
        f"({cfg.study.engine}); store {cfg.store.root}; progress in {arms_file}"
    )
    if cfg.study.engine == "prefect":
        outcome = run_prefect(jobs, cfg.study.workers, say, str(arms_file), state)
    else:
        outcome = run_processes(jobs, cfg.study.workers, say, progress)
    progress(outcome)
    results = finish_study(out_dir, seconds=time.perf_counter() - started)
    say(f"results: {out_dir / 'results.json'}, {out_dir / 'results.md'}")
    return results


ARMS_FILE = "arms.json"


def finish_study(out_dir: str | os.PathLike[str], seconds: float | None = None) -> dict[str, Any]:
    """results.json, the plots and results.md from `out_dir/arms.json`: the seeds whose arms
    all finished; `seconds` defaults to the time from the start to the last finished arm."""
    out_dir = Path(out_dir)
    arms_file = out_dir / ARMS_FILE
    state = json.loads(arms_file.read_text())
    outcome = Outcome(
        results=state.get("results", {}),
        failed=state.get("failed", {}),
        skipped=state.get("skipped", {}),
    )
    seed_list = list(state["seeds"])
    complete = [s for s in seed_list if seed_figures(outcome.results, s) is not None]
    if "eval_base" not in outcome.results or not complete:
        raise StudyFailed(
            f"no seed finished every arm, so there are no results (see {arms_file}): "
            + "; ".join(f"{k}: {v}" for k, v in outcome.failed.items())
        )
    if seconds is None:
        seconds = float(state.get("last_done", time.time())) - float(state["started"])
    base_arm = outcome.results["base"]
    meta = {
        "config": state["config"],
        "engine": state["engine"],
        "workers": state["workers"],
        "base_cached": base_arm["cached"],
        "base_pretrain_seconds": base_arm.get("seconds"),
        "student_base_cached": outcome.results.get("student_base", {}).get("cached"),
        "student_base_pretrain_seconds": outcome.results.get("student_base", {}).get("seconds"),
        "load_average_start": state["load_average_start"],
        "load_average_end": list(os.getloadavg()),
        "failed": outcome.failed,
        "skipped": outcome.skipped,
    }
    results = summarize(outcome, seed_list, seconds, meta)
    write_atomic(out_dir / "results.json", json.dumps(results, indent=2) + "\n")
    from flows.study_plots import plot_study

    plots = plot_study(outcome.results, results, out_dir)
    page = render_page(results, state["config"], out_dir, len(seed_list), plots)
    write_atomic(out_dir / "results.md", page)
    return results


def _loads(values: Sequence[float] | None) -> str:
    return ", ".join(f"{v:.2f}" for v in values) if values else "?"


METHOD = (
    "## How the figures are made",
    "",
    "- **Seeds.** Every per-seed arm runs with the seed (GRPO's rollouts and prompt order, the "
    "teacher's sampling, SFT's data order, the unfiltered draw); the toy base and the student "
    "base are shared by all seeds (pretrained once, cached), so `accuracy_before` has no spread.",
    "- **Accuracy** is held-out greedy accuracy (task seed 1000, never trained on; answers read "
    "leniently, `trainer.evaluate`) averaged over the families; every model is scored on the "
    "same problems by the same function. Per family and pass@k are in the detail table.",
    "- **R1-Zero**: GRPO from the base with accuracy + format rewards (the R1-Zero config's "
    "hyperparameters); it is also the language comparison's arm *without* the reward and the "
    "teacher of rejection sampling. The format rate is over the k sampled answers.",
    "- **Language**: the same GRPO, same seed, prompts and steps, with the language-consistency "
    "reward added (configs/r1-zero-language-toy.yaml extends the R1-Zero config and adds the "
    "reward alone). The mixed-language rate is the share of the held-out "
    "sampled chains of thought that `verifiers.language.detect_mixed_language` calls mixed "
    "against English.",
    "- **Rejection sampling** (the factory's stage functions: generate, judge, filter and "
    "assemble): the seed's R1-Zero checkpoint answers training prompts (task seed 2, held-out "
    "prompts left out by text), the samples are judged (format, math), then rejection, "
    "decontamination, dedup, per-prompt selection and the mixture (no repeats).",
    "- **Filtering**: the unfiltered student is trained on exactly as many rows as the "
    "filtered mixture holds, drawn uniformly from the same generated samples before any "
    "verdict, with the same SFT config and the same number of steps.",
    "- **Distillation against RL**: one small dense student base (our architecture, every "
    "layer dense, narrower, no MTP) pretrained briefly on the base's corpus; distilled = SFT on "
    "the filtered mixture; RL = pure GRPO (accuracy + format) from the same student base, "
    "stopped once its steps have used as many CPU-seconds as the whole SFT run did (both "
    "figures in the detail table: `sft_filtered.cpu_seconds`, `student_rl.cpu_seconds`, the "
    "latter including RL's set-up, so RL gets a little more compute, not less).",
)


def render_page(
    results: Mapping[str, Any],
    config: str | os.PathLike[str],
    out_dir: Path,
    seeds: int,
    plots: Iterable[str],
) -> str:
    from flows.results import render_markdown

    meta = results.get("meta", {})
    cached = (
        "cached (trained before, reused)"
        if meta.get("base_cached")
        else (
            f"not cached: pretrained in this run ({meta.get('base_pretrain_seconds') or 0:.0f} s)"
        )
    )
    header = [
        "```",
        f"r1f recipe --config {config} --out {out_dir} --seeds {seeds}",
        "```",
        "",
        f"- Toy base: {cached}; student base: "
        + (
            "cached"
            if meta.get("student_base_cached")
            else f"pretrained in this run ({meta.get('student_base_pretrain_seconds') or 0:.0f} s)"
        )
        + ".",
        f"- Load average (1, 5, 15 min) at the start {_loads(meta.get('load_average_start'))}, "
        f"at the end {_loads(meta.get('load_average_end'))} (2 cores); {meta.get('workers')} "
        f"arms at once ({meta.get('engine')}).",
    ]
    for label, name in (("base", "the toy base"), ("student_base", "the student base")):
        families = meta.get(label) or {}
        if families:
            header.append(
                f"- Held-out figures of {name} (shared by every seed): "
                + "; ".join(
                    f"{fam} greedy {100 * f['greedy']:.0f}%, "
                    + ", ".join(f"{k} {100 * v:.1f}%" for k, v in f.items() if k != "greedy")
                    for fam, f in families.items()
                )
                + "."
            )
    header += ["", *METHOD]
    if meta.get("seeds_incomplete"):
        header.append(
            f"- **Incomplete seeds (left out of every figure):** {meta['seeds_incomplete']}; "
            f"failed arms: {meta.get('failed')}"
        )
    return render_markdown(results, header=header, plots=list(plots))


def run_prefect(
    jobs: Sequence[Job],
    workers: int,
    say: Callable[[str], None],
    arms_file: str,
    state: dict[str, Any],
) -> Outcome:
    """The arms as Prefect tasks on the factory's bounded process pool, inside one flow run,
    against the configured API or an embedded server; `arms_file` is rewritten (`state` plus
    the outcome so far) after every arm."""
    from flows.embedded import prefect_api

    with prefect_api(say):
        from flows.study_flow import recipe_study

        return recipe_study(list(jobs), workers, arms_file, state)
