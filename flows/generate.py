"""Sample completions for task prompts from a checkpoint and commit them to the store, resumably.

A sample's id is a hash of its prompt id, the generator's identity (backend,
model id, weights hash), the sampling parameters, the seed and the sample
index: all known before generating. So a rerun first asks the table which
ids it already has and generates only the missing prompts; chunks are
committed as they finish, and a run killed half-way loses at most one chunk.
Each prompt's seed is derived from the run seed and the prompt id, so a
prompt's samples do not depend on which chunk or batch it landed in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa

from store.lineage import Lineage
from store.record import SAMPLE_SCHEMA, sample_id_for, validate_sample
from store.store import Store


class TaskLike(Protocol):
    """What generation needs of a task (generators.tasks.Task has it); read-only."""

    @property
    def prompt_id(self) -> str: ...
    @property
    def prompt(self) -> str: ...
    @property
    def gold(self) -> str: ...
    @property
    def domain(self) -> str: ...
    @property
    def track(self) -> str: ...
    @property
    def source(self) -> str: ...


@dataclass(frozen=True)
class GenerationReport:
    table: str
    prompts: int
    generated: int  # samples generated in this run
    already_present: int  # samples the table had before the run
    version: int  # the table's version after the run (-1: nothing written yet)


def prompt_seed(run_seed: int, prompt_id: str) -> int:
    """A per-prompt seed, stable across runs and independent of batching."""
    digest = hashlib.sha256(f"{run_seed}:{prompt_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def generate_into_store(
    store: Store,
    table: str,
    backend: Any,  # generators.backends.local.LocalBackend or any backend with the same surface
    tasks: Sequence[TaskLike],
    *,
    temperature: float,
    top_p: float = 1.0,
    max_tokens: int = 256,
    n: int = 1,
    seed: int = 0,
    lineage: Lineage,
    chunk_prompts: int = 64,
    progress: Callable[[int], None] | None = None,
) -> GenerationReport:
    """Generate `n` samples per task prompt into `table`, skipping samples already there."""
    from trainer.generate import SamplingParams
    from trainer.tokenizer import generation_prefix
    from verifiers.format import parse_r1

    sampling = {"temperature": temperature, "top_p": top_p, "top_k": None, "max_tokens": max_tokens}
    identity = {
        "backend": backend.name,
        "model_id": backend.model_id,
        "model_hash": backend.model_hash,
    }

    def ids_for(task: TaskLike) -> list[str]:
        common = {**identity, "prompt_id": task.prompt_id, "sampling": sampling}
        seed_ = prompt_seed(seed, task.prompt_id)
        return [sample_id_for({**common, "seed": seed_, "sample_index": j}) for j in range(n)]

    existing: set[str] = set()
    if store.exists(table):
        existing = set(store.read(table, columns=["sample_id"]).get_column("sample_id").to_list())
    todo = [t for t in tasks if not set(ids_for(t)) <= existing]
    already = sum(n for t in tasks) - sum(n for t in todo)
    generated = 0
    version = store.latest_version(table) if store.exists(table) else -1
    for start in range(0, len(todo), chunk_prompts):
        chunk = todo[start : start + chunk_prompts]
        params = [
            SamplingParams(
                temperature=temperature,
                top_p=top_p,
                max_tokens=max_tokens,
                n=n,
                seed=prompt_seed(seed, t.prompt_id),
            )
            for t in chunk
        ]
        think = [t.track == "reasoning" for t in chunk]
        outputs: list[tuple[int, list[Any]]] = []
        # The chat template pre-fills `<think>` (or an empty think block); batches share it.
        for flag in (True, False):
            picked = [i for i, th in enumerate(think) if th == flag]
            if not picked:
                continue
            results = backend.generate(
                [chunk[i].prompt for i in picked], [params[i] for i in picked], think=flag
            )
            outputs.extend(zip(picked, results, strict=True))
        rows = []
        for i, samples in sorted(outputs, key=lambda pair: pair[0]):
            task = chunk[i]
            prefix = generation_prefix(think[i])
            for j, completion in enumerate(samples):
                text = prefix + completion.text
                reasoning, answer = parse_r1(text)
                rows.append(
                    validate_sample(
                        {
                            **identity,
                            "prompt_id": task.prompt_id,
                            "prompt": task.prompt,
                            "completion": text,
                            "reasoning": reasoning,
                            "answer": answer,
                            "gold": task.gold,
                            "domain": task.domain,
                            "track": task.track,
                            "source": task.source,
                            "language": "en",
                            "sampling": sampling,
                            "seed": params[i].seed,
                            "sample_index": j,
                            "finish_reason": completion.finish_reason,
                            "prompt_tokens": completion.prompt_tokens,
                            "completion_tokens": completion.completion_tokens,
                            "flow_run_id": lineage.flow_run_id,
                            "config_hash": lineage.config_hash,
                        }
                    )
                )
        result = store.commit(
            table, pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA), lineage=lineage
        )
        version = result.version
        generated += result.rows_written
        if progress:
            progress(len(chunk))
    return GenerationReport(table, len(tasks), generated, already, version)
