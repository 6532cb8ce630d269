"""The generation stage: prompts in, samples committed to a store table, sharded and exactly-once.

    report = generate(store, cfg, lineage)              # cfg: GenerateConfig (the `generate:` section)
    report.generated, report.shards_skipped, report.completion_tokens
    generation_cost(store, cfg.table)                   # every run's cost, from the version's report

It is two functions, so that a flow can run the shards where it likes (one Prefect task per
shard, `flows/generate.py`) and `generate` runs them one after another:

    the_plan = plan(store, cfg, backend_identity(cfg.backend))   # reads the store, loads nothing
    for shard in the_plan.pending:
        generate_shard(store, cfg, lineage, the_plan, shard, backend)   # one commit

How "exactly once" holds:

- A sample's id is known before it is generated: a hash of the prompt id, the backend's
  identity (backend, model id, weights hash), the sampling parameters, the prompt's seed and
  the sample index (`store.record.sample_id_for`). The prompt's seed is derived from the run
  seed, the prompt id and everything else that shapes the request without being a column of
  its own (the template, the stop strings, speculative decoding), so changing any of them makes
  new samples rather than being mistaken for finished ones.
- Prompts are cut into shards of `shard_prompts`, in the order the prompt source gives them.
  Each shard's samples are one store commit: atomic, so a shard is either entirely in the
  table or not at all.
- `plan` reads the ids already in the table. That, the store's commit log, is the only record
  of what is done: a shard whose samples are all there is not pending (no backend call, no
  model loaded); a shard with missing samples generates those prompts again. The store's
  append also skips ids already present, so even two runs racing on one table cannot write a
  sample twice.
- A request that cannot succeed (a prompt over the context length) leaves its samples missing
  and is counted in the report; the next run tries it again. A failure of the backend itself
  (`BackendError`) stops the run; the shards committed so far stay.

Cost accounting: each shard's commit carries the `generation.cost` report (`store.reports`):
every generation run on the table so far, with prompts, samples, prompt and completion tokens,
finish reasons, failures, retries and seconds, this shard included. It is written in the same
atomic commit as the samples, so the accounting is exactly-once too: work lost in a crash is
neither in the table nor in the cost. The commit is conditional on the version the total was
computed from (`Store.commit(expect_version=...)`), so shards committing from parallel
workers keep the total exact. The card of any later version of the table shows it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa

from generators.backends.base import (
    Backend,
    BackendError,
    Identity,
    Request,
    Result,
    Sampling,
    identity_of,
)
from generators.backends.config import BackendConfig, backend_identity, make_backend
from generators.templates import TemplateName, render
from store.lineage import Lineage, TableRef
from store.record import SAMPLE_SCHEMA, sample_id_for, validate_sample
from store.reports import Report
from store.store import Store, StoreConflict

# --- config ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptsConfig:
    """Where the prompts come from: toy task sources, or the distinct prompts of a table."""

    # Task source name -> how many prompts (generators.tasks.SOURCES), in one seeded mixture.
    sources: dict[str, int] = field(default_factory=dict)
    difficulty: int = 1
    seed: int = 0  # the task sources' seed
    # NAME or NAME@VERSION: every distinct prompt_id of that table (e.g. to sample again the
    # prompts of a reference table). The version read is recorded as the commits' parent.
    table: str | None = None

    def __post_init__(self) -> None:
        if bool(self.sources) == (self.table is not None):
            raise ValueError("give either sources: (toy task counts) or table: NAME[@V], not both")
        if self.table is not None:
            TableRef.parse(self.table)  # a malformed reference is a config error
        for name, count in self.sources.items():
            if count < 0:
                raise ValueError(f"sources.{name} must be >= 0, got {count}")


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    max_tokens: int = 256
    stop: list[str] = field(default_factory=list)
    n: int = 1  # samples per prompt
    seed: int = 0  # the run seed: every prompt's seed derives from it and the prompt id

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        self.sampling()  # the remaining checks, with their messages

    def sampling(self) -> Sampling:
        return Sampling(
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            max_tokens=self.max_tokens,
            stop=tuple(self.stop),
        )


@dataclass(frozen=True)
class GenerateConfig:
    """The `generate:` section of a run config."""

    table: str  # the table the samples are committed to
    backend: BackendConfig
    prompts: PromptsConfig
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    template: TemplateName = "chat"
    shard_prompts: int = 64  # prompts per shard: one commit each, one Prefect task each

    def __post_init__(self) -> None:
        from store.store import StoreError, check_table_name

        try:
            check_table_name(self.table)
        except StoreError as err:
            raise ValueError(str(err)) from None
        if self.shard_prompts < 1:
            raise ValueError(f"shard_prompts must be >= 1, got {self.shard_prompts}")


# --- report ---------------------------------------------------------------------------------


class Progress(Protocol):
    """What a caller sees while the run goes (the same shape as the filter run's)."""

    def stage(self, name: str, total: int | None) -> None: ...

    def advance(self, rows: int) -> None: ...


@dataclass
class ShardCost:
    """What one shard cost; added to the `generation.cost` report its commit carries."""

    run_id: str
    shard: int
    shards: int
    prompts: int = 0  # prompts sent
    samples: int = 0  # samples generated
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reasons: Counter[str] = field(default_factory=Counter)
    failed: int = 0  # prompts whose request could not succeed
    failures: Counter[str] = field(default_factory=Counter)  # kind of failure -> prompts
    retries: Counter[str] = field(default_factory=Counter)  # why -> attempts retried
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["seconds"] = round(self.seconds, 3)
        for key in ("finish_reasons", "failures", "retries"):
            data[key] = dict(sorted(getattr(self, key).items()))
        return data


@dataclass
class GenerationReport:
    table: str
    version: int  # the table's version after the run (-1: still no table)
    run_id: str
    backend: str  # identity: name:model@hash
    prompts: int
    shards: int
    shards_skipped: int  # complete before the run: no backend call
    samples_expected: int  # prompts x n
    already_present: int  # of those, in the table before the run
    generated: int  # samples committed by this run
    failed_prompts: int
    failures: Counter[str]
    prompt_tokens: int
    completion_tokens: int
    finish_reasons: Counter[str]
    retries: Counter[str]
    seconds: float
    examples: dict[str, str] = field(default_factory=dict)  # failure kind -> one message

    @property
    def missing(self) -> int:
        """Samples still not in the table (their prompts failed): a rerun tries them again."""
        return self.samples_expected - self.already_present - self.generated

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["missing"] = self.missing
        data["seconds"] = round(self.seconds, 3)
        for key in ("failures", "finish_reasons", "retries"):
            data[key] = dict(sorted(getattr(self, key).items()))
        return data


# --- prompts --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prompt:
    """What generation needs of a task (generators.tasks.Task has these fields)."""

    prompt_id: str
    prompt: str
    gold: str | None
    domain: str
    track: str
    source: str
    language: str | None = "en"


def load_prompts(store: Store, cfg: PromptsConfig) -> tuple[list[Prompt], tuple[TableRef, ...]]:
    """The prompts, in a fixed order, and the table versions they were read from."""
    if cfg.table is None:
        from generators.tasks import generate_mixture

        tasks = generate_mixture(cfg.sources, seed=cfg.seed, difficulty=cfg.difficulty)
        return [
            Prompt(t.prompt_id, t.prompt, t.gold, t.domain, t.track, t.source) for t in tasks
        ], ()
    ref = TableRef.parse(cfg.table)
    version = store.latest_version(ref.table) if ref.version is None else ref.version
    columns = ["prompt_id", "prompt", "gold", "domain", "track", "source", "language"]
    frame = store.read(ref.table, version, columns).unique("prompt_id", keep="first")
    rows = frame.sort("prompt_id").to_dicts()
    return [Prompt(**row) for row in rows], (TableRef(ref.table, version),)


# --- the stage ------------------------------------------------------------------------------


def prompt_seed(run_seed: int, prompt_id: str, variant: str = "") -> int:
    """A prompt's seed: stable across runs and independent of sharding and batching.

    `variant` names whatever else shapes the request (template, stop strings, speculative
    decoding), so that a different request gets a different seed, hence new sample ids.
    """
    digest = hashlib.sha256(f"{run_seed}:{prompt_id}:{variant}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def request_variant(cfg: GenerateConfig, who: Identity) -> str:
    parts: dict[str, Any] = {"template": cfg.template}
    if cfg.sampling.stop:
        parts["stop"] = list(cfg.sampling.stop)
    if who.mtp:
        parts["mtp"] = True
    return json.dumps(parts, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Shard:
    """One shard still to generate: its index among all shards and its prompts that still miss
    samples (a shard's finished prompts are not sent again)."""

    index: int
    prompts: tuple[Prompt, ...]


@dataclass(frozen=True)
class GenerationPlan:
    """What a run has to do, read from the store before any model is loaded.

    Small and picklable: a flow hands each pending shard, with the plan, to a worker.
    """

    table: str
    run_id: str
    identity: Identity
    variant: str  # request_variant: enters every prompt's seed
    parents: tuple[TableRef, ...]  # table versions the prompts were read from
    prompts: int
    shards: int
    pending: tuple[Shard, ...]
    samples_expected: int  # prompts x n
    already_present: int  # of those, in the table when planned
    version: int  # the table's version when planned (-1: no table yet)

    @property
    def shards_skipped(self) -> int:
        return self.shards - len(self.pending)

    @property
    def pending_prompts(self) -> int:
        return sum(len(s.prompts) for s in self.pending)


def _seed(cfg: GenerateConfig, variant: str, prompt: Prompt) -> int:
    return prompt_seed(cfg.sampling.seed, prompt.prompt_id, variant)


def _sample_ids(cfg: GenerateConfig, who: Identity, variant: str, prompt: Prompt) -> list[str]:
    common = {
        **who.columns(),
        "prompt_id": prompt.prompt_id,
        "sampling": cfg.sampling.sampling().record(),
        "seed": _seed(cfg, variant, prompt),
    }
    return [sample_id_for({**common, "sample_index": j}) for j in range(cfg.sampling.n)]


def plan(
    store: Store, cfg: GenerateConfig, who: Identity, *, run_id: str | None = None
) -> GenerationPlan:
    """Which shards still miss samples: the store's table is the only record of what is done.

    `who` is the backend's identity (`backend_identity(cfg.backend)` computes it without
    loading a model), since it enters every sample id.
    """
    prompts, parents = load_prompts(store, cfg.prompts)
    counts = Counter(p.prompt_id for p in prompts)
    repeated = [pid for pid, n in counts.items() if n > 1]
    if repeated:
        raise ValueError(f"prompt_id {repeated[0]!r} appears {counts[repeated[0]]} times")
    variant = request_variant(cfg, who)
    existing: set[str] = set()
    version = -1
    if store.exists(cfg.table):
        version = store.latest_version(cfg.table)
        ids = store.read(cfg.table, version, columns=["sample_id"]).get_column("sample_id")
        existing = set(ids.to_list())
    pending: list[Shard] = []
    already = 0
    size = cfg.shard_prompts
    shards = [prompts[start : start + size] for start in range(0, len(prompts), size)]
    for k, shard in enumerate(shards):
        todo = []
        for prompt in shard:
            present = sum(i in existing for i in _sample_ids(cfg, who, variant, prompt))
            already += present
            if present < cfg.sampling.n:
                todo.append(prompt)
        if todo:
            pending.append(Shard(k, tuple(todo)))
    return GenerationPlan(
        table=cfg.table,
        run_id=run_id or uuid.uuid4().hex,
        identity=who,
        variant=variant,
        parents=parents,
        prompts=len(prompts),
        shards=len(shards),
        pending=tuple(pending),
        samples_expected=len(prompts) * cfg.sampling.n,
        already_present=already,
        version=version,
    )


@dataclass
class ShardOutcome:
    """What `generate_shard` did: the shard's cost, the version its commit made, the rows it
    wrote, and one message per kind of failed request."""

    cost: ShardCost
    version: int  # the table's version after the shard (unchanged when nothing was written)
    written: int
    examples: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cost": self.cost.to_dict(),
            "version": self.version,
            "written": self.written,
            "examples": self.examples,
        }


# A shard's commit builds its running cost total on the version it expects; another writer
# committing first (shards of one run in parallel workers) makes it read again and retry.
MAX_COMMIT_ATTEMPTS = 50


def generate_shard(
    store: Store,
    cfg: GenerateConfig,
    lineage: Lineage,
    plan: GenerationPlan,
    shard: Shard,
    backend: Backend,
    *,
    progress: Callable[[int], None] | None = None,
) -> ShardOutcome:
    """Generate one shard's prompts with `backend` and commit their samples in one commit.

    The commit carries the `generation.cost` report: every run's cost on this table so far,
    this shard included (`cost_report`). Shards of one plan may run in parallel processes:
    each commit is conditional on the version its total was computed from, and retried on
    top of a newer one, so the running total stays exact.
    """
    found = identity_of(backend)
    if found != plan.identity:
        raise BackendError(f"the backend is {found}, but the run was planned for {plan.identity}")
    started = time.perf_counter()
    prompts = list(shard.prompts)
    rendered = [
        render(cfg.template, p.prompt, track=p.track, chat_template=backend.chat_template)
        for p in prompts
    ]
    requests = [
        Request(prompt=r.text, seed=_seed(cfg, plan.variant, p), n=cfg.sampling.n)
        for p, r in zip(prompts, rendered, strict=True)
    ]
    sampling = cfg.sampling.sampling()
    before = Counter(backend.counters)
    results = backend.sample(requests, sampling, progress=progress)
    counters = Counter(backend.counters)
    counters.subtract(before)
    cost = ShardCost(run_id=plan.run_id, shard=shard.index, shards=plan.shards)
    cost.prompts = len(prompts)
    cost.retries = Counter(
        {
            key.removeprefix("retry:"): n
            for key, n in counters.items()
            if key.startswith("retry:") and n
        }
    )
    examples: dict[str, str] = {}
    rows = []
    for prompt, shown, result in zip(prompts, rendered, results, strict=True):
        if result.error is not None:
            kind = result.error.split(":", 1)[0]
            cost.failed += 1
            cost.failures[kind] += 1
            examples.setdefault(kind, f"{prompt.prompt_id}: {result.error}")
            continue
        rows.extend(_rows(cfg, plan, lineage, prompt, shown.prefix, result))
        for output in result.outputs:
            cost.samples += 1
            cost.prompt_tokens += output.prompt_tokens
            cost.completion_tokens += output.completion_tokens
            cost.finish_reasons[output.finish_reason] += 1
    cost.seconds = time.perf_counter() - started
    if not rows:
        version = store.latest_version(cfg.table) if store.exists(cfg.table) else -1
        return ShardOutcome(cost, version, 0, examples)
    shard_lineage = dataclasses.replace(
        lineage,
        parents=plan.parents,
        message=f"generate {cfg.table}: shard {shard.index + 1}/{plan.shards} with {plan.identity}",
    )
    table = pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA)
    for attempt in range(MAX_COMMIT_ATTEMPTS):
        base = store.latest_version(cfg.table) if store.exists(cfg.table) else -1
        previous = store.reports(cfg.table, base).get(COST_KIND) if base >= 0 else None
        report = cost_report(
            previous.report.data if previous else None, cost, plan.identity, base + 1
        )
        try:
            committed = store.commit(
                cfg.table, table, lineage=shard_lineage, reports=[report], expect_version=base
            )
        except StoreConflict:
            # Another shard committed first: back off a little (randomly, so that two losers
            # do not collide again) and total again on top of its version.
            time.sleep(random.uniform(0.0, 0.05 * (attempt + 1)))
            continue
        return ShardOutcome(cost, committed.version, committed.rows_written, examples)
    raise StoreConflict(
        f"{cfg.table}: shard {shard.index} lost {MAX_COMMIT_ATTEMPTS} commit races in a row; "
        "are many writers committing to this table?"
    )


def _rows(
    cfg: GenerateConfig,
    plan: GenerationPlan,
    lineage: Lineage,
    prompt: Prompt,
    prefix: str,
    result: Result,
) -> list[dict[str, Any]]:
    from verifiers.format import parse_r1

    rows = []
    for output in result.outputs:
        text = prefix + output.text
        reasoning, answer = parse_r1(text)
        rows.append(
            validate_sample(
                {
                    **plan.identity.columns(),
                    "prompt_id": prompt.prompt_id,
                    "prompt": prompt.prompt,
                    "completion": text,
                    "reasoning": reasoning,
                    "answer": answer,
                    "gold": prompt.gold,
                    "domain": prompt.domain,
                    "track": prompt.track,
                    "source": prompt.source,
                    "language": prompt.language,
                    "sampling": cfg.sampling.sampling().record(),
                    "seed": _seed(cfg, plan.variant, prompt),
                    "sample_index": output.index,
                    "finish_reason": output.finish_reason,
                    "prompt_tokens": output.prompt_tokens,
                    "completion_tokens": output.completion_tokens,
                    "flow_run_id": lineage.flow_run_id,
                    "config_hash": lineage.config_hash,
                }
            )
        )
    return rows


def new_report(plan: GenerationPlan) -> GenerationReport:
    """A run's report before any shard ran; `add_shard` adds each outcome."""
    return GenerationReport(
        table=plan.table,
        version=plan.version,
        run_id=plan.run_id,
        backend=str(plan.identity),
        prompts=plan.prompts,
        shards=plan.shards,
        shards_skipped=plan.shards_skipped,
        samples_expected=plan.samples_expected,
        already_present=plan.already_present,
        generated=0,
        failed_prompts=0,
        failures=Counter(),
        prompt_tokens=0,
        completion_tokens=0,
        finish_reasons=Counter(),
        retries=Counter(),
        seconds=0.0,
    )


def add_shard(report: GenerationReport, outcome: ShardOutcome) -> None:
    cost = outcome.cost
    report.version = max(report.version, outcome.version)
    report.generated += outcome.written
    report.failed_prompts += cost.failed
    report.failures.update(cost.failures)
    report.prompt_tokens += cost.prompt_tokens
    report.completion_tokens += cost.completion_tokens
    report.finish_reasons.update(cost.finish_reasons)
    report.retries.update(cost.retries)
    for kind, example in outcome.examples.items():
        report.examples.setdefault(kind, example)


def generate(
    store: Store,
    cfg: GenerateConfig,
    lineage: Lineage,
    *,
    progress: Progress | None = None,
    backend: Backend | None = None,
) -> GenerationReport:
    """Generate `cfg.sampling.n` samples per prompt into `cfg.table`, skipping finished shards:
    `plan`, then `generate_shard` for each pending shard, one after another in this process
    (the `generate` flow runs the same two functions, one Prefect task per shard).

    `backend`: one already made (a worker reusing a loaded model); by default the stage makes
    the one `cfg.backend` names, only when a shard is pending, and closes it at the end.
    """
    started = time.perf_counter()
    owned = backend is None
    who = identity_of(backend) if backend is not None else backend_identity(cfg.backend)
    the_plan = plan(store, cfg, who, run_id=lineage.flow_run_id)
    report = new_report(the_plan)
    if progress is not None:
        progress.stage("generate", the_plan.pending_prompts)
    advance = progress.advance if progress is not None else None
    try:
        for shard in the_plan.pending:
            if backend is None:
                backend = make_backend(cfg.backend)
            outcome = generate_shard(
                store, cfg, lineage, the_plan, shard, backend, progress=advance
            )
            add_shard(report, outcome)
    finally:
        if owned and backend is not None:
            backend.close()
    report.seconds = time.perf_counter() - started
    return report


# --- cost -----------------------------------------------------------------------------------

COST_KIND = "generation.cost"  # the store report a shard's commit carries (store.reports)
_TOTALS = ("shards", "prompts", "samples", "prompt_tokens", "completion_tokens", "failed")


@dataclass
class RunCost:
    """One generation run's cost over the shards it committed to a table."""

    run_id: str
    backend: str = ""
    shards: int = 0
    prompts: int = 0
    samples: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failed: int = 0
    retries: int = 0
    seconds: float = 0.0  # summed over shards (parallel workers overlap)
    finish_reasons: Counter[str] = field(default_factory=Counter)
    first_version: int = -1  # the versions its first and last shard commits made
    last_version: int = -1

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["seconds"] = round(self.seconds, 3)
        data["finish_reasons"] = dict(sorted(self.finish_reasons.items()))
        return data

    @staticmethod
    def from_dict(data: dict[str, Any]) -> RunCost:
        known = {f.name for f in dataclasses.fields(RunCost)}
        run = RunCost(**{k: v for k, v in data.items() if k in known})
        run.finish_reasons = Counter(run.finish_reasons)
        return run


def cost_report(previous: Any, shard: ShardCost, who: Identity, version: int) -> Report:
    """The `generation.cost` report of the commit adding `shard` as `version`: the previous
    report's runs (the table's cost so far) plus this shard, with totals and a Markdown table
    for the card.

    `previous` is the data of the report the table's version carried (None for none). The
    report's size grows with runs, not shards or rows.
    """
    runs = [RunCost.from_dict(r) for r in (previous or {}).get("runs", [])]
    run = next((r for r in runs if r.run_id == shard.run_id), None)
    if run is None:
        run = RunCost(run_id=shard.run_id, backend=str(who))
        runs.append(run)
    run.shards += 1
    run.prompts += shard.prompts
    run.samples += shard.samples
    run.prompt_tokens += shard.prompt_tokens
    run.completion_tokens += shard.completion_tokens
    run.failed += shard.failed
    run.retries += sum(shard.retries.values())
    run.seconds += shard.seconds
    run.finish_reasons.update(shard.finish_reasons)
    if run.first_version < 0:
        run.first_version = version
    run.last_version = version
    total: dict[str, Any] = {key: sum(getattr(r, key) for r in runs) for key in _TOTALS}
    total["retries"] = sum(r.retries for r in runs)
    total["seconds"] = round(sum(r.seconds for r in runs), 3)
    total["tokens_per_sample"] = (
        round(total["completion_tokens"] / total["samples"], 2) if total["samples"] else None
    )
    data = {"runs": [r.to_dict() for r in runs], "total": total, "shard": shard.to_dict()}
    return Report(COST_KIND, "Generation cost", data, _cost_markdown(runs, total))


def _cost_markdown(runs: list[RunCost], total: dict[str, Any]) -> str:
    lines = [
        "What generating this table's samples cost, counted once per committed shard (a shard "
        "lost in a crash is neither in the table nor here). Seconds are summed over shards.",
        "",
        "| run | backend | shards | prompts | samples | prompt tokens | completion tokens | "
        "failed prompts | retries | seconds |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| `{r.run_id[:12]}` | `{r.backend}` | {r.shards:,} | {r.prompts:,} | "
            f"{r.samples:,} | {r.prompt_tokens:,} | {r.completion_tokens:,} | {r.failed:,} | "
            f"{r.retries:,} | {r.seconds:,.1f} |"
        )
    lines.append(
        f"| **total** | | {total['shards']:,} | {total['prompts']:,} | {total['samples']:,} | "
        f"{total['prompt_tokens']:,} | {total['completion_tokens']:,} | {total['failed']:,} | "
        f"{total['retries']:,} | {total['seconds']:,.1f} |"
    )
    reasons: Counter[str] = Counter()
    for r in runs:
        reasons.update(r.finish_reasons)
    if reasons:
        lines += [
            "",
            "Finish reasons: " + ", ".join(f"{n:,} {k}" for k, n in sorted(reasons.items())),
        ]
    return "\n".join(lines)


def generation_cost(store: Store, table: str, version: int | None = None) -> list[RunCost]:
    """Every generation run that wrote to `table` up to `version`, oldest first, with its cost,
    read from the `generation.cost` report that describes the version (so it counts exactly
    the shards whose samples are in the table)."""
    found = store.reports(table, version).get(COST_KIND)
    if found is None:
        return []
    return [RunCost.from_dict(r) for r in found.report.data.get("runs", [])]
