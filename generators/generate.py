"""The generation stage: prompts in, samples committed to a store table, sharded and exactly-once.

    report = generate(store, cfg, lineage)              # cfg: GenerateConfig (the `generate:` section)
    report.generated, report.shards_skipped, report.completion_tokens
    generation_cost(store, cfg.table)                   # every run's cost, read from the table's log

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
- Before generating, the stage reads the ids already in the table. That, the store's commit
  log, is the only record of what is done: a shard whose samples are all there is skipped
  without a call to the backend; a shard with missing samples generates those prompts again.
  The store's append also skips ids already present, so even two runs racing on one table
  cannot write a sample twice (docs/store.md: one writer per table is still the rule).
- A request that cannot succeed (a prompt over the context length) leaves its samples missing
  and is counted in the report; the next run tries it again. A failure of the backend itself
  (`BackendError`) stops the run; the shards committed so far stay.

Cost accounting: each shard's commit carries, in its lineage (`extra["generation"]`), what
the shard cost: prompts, samples, prompt and completion tokens, finish reasons, failures,
retries, seconds. It is written in the same atomic commit as the samples, so the accounting is
exactly-once too: work lost in a crash is neither in the table nor in the cost.
`generation_cost` adds it up per run for a data card.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa

from generators.backends.base import Backend, Request, Result, Sampling, identity
from generators.backends.config import BackendConfig, make_backend
from generators.templates import TemplateName, render
from store.lineage import Lineage, TableRef
from store.record import SAMPLE_SCHEMA, sample_id_for, validate_sample
from store.store import Store

GENERATION_KEY = "generation"  # the key of a shard's cost in its commit's lineage extras


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
    """What one shard cost; stored in its commit's lineage."""

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


def request_variant(cfg: GenerateConfig, backend: Backend) -> str:
    parts: dict[str, Any] = {"template": cfg.template}
    if cfg.sampling.stop:
        parts["stop"] = list(cfg.sampling.stop)
    if getattr(backend, "mtp", False):
        parts["mtp"] = True
    return json.dumps(parts, sort_keys=True, separators=(",", ":"))


def generate(
    store: Store,
    cfg: GenerateConfig,
    lineage: Lineage,
    *,
    progress: Progress | None = None,
    backend: Backend | None = None,
) -> GenerationReport:
    """Generate `cfg.sampling.n` samples per prompt into `cfg.table`, skipping finished shards.

    `backend`: one already made (a worker reusing a loaded model); by default the stage makes
    the one `cfg.backend` names and closes it at the end.
    """
    started = time.perf_counter()
    prompts, parents = load_prompts(store, cfg.prompts)
    counts = Counter(p.prompt_id for p in prompts)
    repeated = [pid for pid, n in counts.items() if n > 1]
    if repeated:
        raise ValueError(f"prompt_id {repeated[0]!r} appears {counts[repeated[0]]} times")
    owned = backend is None
    if backend is None:
        backend = make_backend(cfg.backend)
    try:
        return _Run(store, cfg, lineage, backend, prompts, parents, progress).run(started)
    finally:
        if owned:
            backend.close()


class _Run:
    def __init__(
        self,
        store: Store,
        cfg: GenerateConfig,
        lineage: Lineage,
        backend: Backend,
        prompts: list[Prompt],
        parents: tuple[TableRef, ...],
        progress: Progress | None,
    ) -> None:
        self.store, self.cfg, self.backend, self.prompts = store, cfg, backend, prompts
        self.lineage, self.parents, self.progress = lineage, parents, progress
        self.run_id = lineage.flow_run_id or uuid.uuid4().hex
        self.sampling = cfg.sampling.sampling()
        self.identity = {
            "backend": backend.name,
            "model_id": backend.model_id,
            "model_hash": backend.model_hash,
        }
        self.variant = request_variant(cfg, backend)

    def seed(self, prompt: Prompt) -> int:
        return prompt_seed(self.cfg.sampling.seed, prompt.prompt_id, self.variant)

    def ids(self, prompt: Prompt) -> list[str]:
        common = {
            **self.identity,
            "prompt_id": prompt.prompt_id,
            "sampling": self.sampling.record(),
            "seed": self.seed(prompt),
        }
        return [sample_id_for({**common, "sample_index": j}) for j in range(self.cfg.sampling.n)]

    def shards(self) -> Iterator[list[Prompt]]:
        size = self.cfg.shard_prompts
        for start in range(0, len(self.prompts), size):
            yield self.prompts[start : start + size]

    def run(self, started: float) -> GenerationReport:
        cfg, store = self.cfg, self.store
        existing: set[str] = set()
        if store.exists(cfg.table):
            ids = store.read(cfg.table, columns=["sample_id"]).get_column("sample_id")
            existing = set(ids.to_list())
        shards = list(self.shards())
        pending: list[tuple[int, list[Prompt]]] = []
        already = 0
        for k, shard in enumerate(shards):
            todo = []
            for prompt in shard:
                present = sum(i in existing for i in self.ids(prompt))
                already += present
                if present < cfg.sampling.n:
                    todo.append(prompt)
            if todo:
                pending.append((k, todo))
        del existing
        report = GenerationReport(
            table=cfg.table,
            version=store.latest_version(cfg.table) if store.exists(cfg.table) else -1,
            run_id=self.run_id,
            backend=identity(self.backend),
            prompts=len(self.prompts),
            shards=len(shards),
            shards_skipped=len(shards) - len(pending),
            samples_expected=len(self.prompts) * cfg.sampling.n,
            already_present=already,
            generated=0,
            failed_prompts=0,
            failures=Counter(),
            prompt_tokens=0,
            completion_tokens=0,
            finish_reasons=Counter(),
            retries=Counter(),
            seconds=0.0,
        )
        if self.progress is not None:
            self.progress.stage("generate", sum(len(todo) for _, todo in pending))
        for k, todo in pending:
            cost, version, written = self.shard(k, len(shards), todo, report.examples)
            report.version = version
            report.generated += written
            report.failed_prompts += cost.failed
            report.failures.update(cost.failures)
            report.prompt_tokens += cost.prompt_tokens
            report.completion_tokens += cost.completion_tokens
            report.finish_reasons.update(cost.finish_reasons)
            report.retries.update(cost.retries)
        report.seconds = time.perf_counter() - started
        return report

    def shard(
        self, k: int, shards: int, prompts: list[Prompt], examples: dict[str, str]
    ) -> tuple[ShardCost, int, int]:
        """Generate one shard's prompts and commit their samples; (cost, version, rows written)."""
        started = time.perf_counter()
        rendered = [
            render(
                self.cfg.template, p.prompt, track=p.track, chat_template=self.backend.chat_template
            )
            for p in prompts
        ]
        requests = [
            Request(prompt=r.text, seed=self.seed(p), n=self.cfg.sampling.n)
            for p, r in zip(prompts, rendered, strict=True)
        ]
        before = Counter(self.backend.counters)
        advance = self.progress.advance if self.progress is not None else None
        results = self.backend.sample(requests, self.sampling, progress=advance)
        counters = Counter(self.backend.counters)
        counters.subtract(before)
        cost = ShardCost(run_id=self.run_id, shard=k, shards=shards, prompts=len(prompts))
        cost.retries = Counter(
            {
                key.removeprefix("retry:"): n
                for key, n in counters.items()
                if key.startswith("retry:") and n
            }
        )
        rows = []
        for prompt, shown, result in zip(prompts, rendered, results, strict=True):
            if result.error is not None:
                kind = result.error.split(":", 1)[0]
                cost.failed += 1
                cost.failures[kind] += 1
                examples.setdefault(kind, f"{prompt.prompt_id}: {result.error}")
                continue
            rows.extend(self.rows(prompt, shown.prefix, result))
            for output in result.outputs:
                cost.samples += 1
                cost.prompt_tokens += output.prompt_tokens
                cost.completion_tokens += output.completion_tokens
                cost.finish_reasons[output.finish_reason] += 1
        cost.seconds = time.perf_counter() - started
        version = (
            self.store.latest_version(self.cfg.table) if self.store.exists(self.cfg.table) else -1
        )
        if not rows:
            return cost, version, 0
        lineage = dataclasses.replace(
            self.lineage,
            parents=self.parents,
            message=f"generate {self.cfg.table}: shard {k + 1}/{shards} with {identity(self.backend)}",
            extra={**self.lineage.extra, GENERATION_KEY: cost.to_dict()},
        )
        table = pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA)
        committed = self.store.commit(self.cfg.table, table, lineage=lineage)
        return cost, committed.version, committed.rows_written

    def rows(self, prompt: Prompt, prefix: str, result: Result) -> list[dict[str, Any]]:
        from verifiers.format import parse_r1

        rows = []
        for output in result.outputs:
            text = prefix + output.text
            reasoning, answer = parse_r1(text)
            rows.append(
                validate_sample(
                    {
                        **self.identity,
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
                        "sampling": self.sampling.record(),
                        "seed": self.seed(prompt),
                        "sample_index": output.index,
                        "finish_reason": output.finish_reason,
                        "prompt_tokens": output.prompt_tokens,
                        "completion_tokens": output.completion_tokens,
                        "flow_run_id": self.lineage.flow_run_id,
                        "config_hash": self.lineage.config_hash,
                    }
                )
            )
        return rows


# --- cost -----------------------------------------------------------------------------------


@dataclass
class RunCost:
    """One generation run's cost over the shards it committed to a table."""

    run_id: str
    shards: int = 0
    prompts: int = 0
    samples: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failed: int = 0
    retries: int = 0
    seconds: float = 0.0
    finish_reasons: Counter[str] = field(default_factory=Counter)
    versions: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["seconds"] = round(self.seconds, 3)
        data["finish_reasons"] = dict(sorted(self.finish_reasons.items()))
        return data


def generation_cost(store: Store, table: str, version: int | None = None) -> list[RunCost]:
    """Every generation run that wrote to `table` up to `version`, oldest first, with its cost,
    read from the commits' lineage (so it counts exactly the shards that are in the table)."""
    upto = store.latest_version(table) if version is None else version
    runs: dict[str, RunCost] = {}
    for commit in sorted(store.history(table), key=lambda c: c.version):
        if commit.version > upto or commit.lineage is None:
            continue
        shard = commit.lineage.extra.get(GENERATION_KEY)
        if not isinstance(shard, dict):
            continue
        run = runs.setdefault(shard["run_id"], RunCost(run_id=shard["run_id"]))
        run.shards += 1
        run.prompts += shard["prompts"]
        run.samples += shard["samples"]
        run.prompt_tokens += shard["prompt_tokens"]
        run.completion_tokens += shard["completion_tokens"]
        run.failed += shard["failed"]
        run.retries += sum(shard["retries"].values())
        run.seconds += shard["seconds"]
        run.finish_reasons.update(shard["finish_reasons"])
        run.versions.append(commit.version)
    return list(runs.values())
