"""The `r1_recipe` flow: the R1 pipeline, stage after stage (R1 section 2.3).

    stage               what                                      from            on
    pretrain            the toy base model (cached per config)    -               toy corpus
    r1_zero             GRPO, accuracy + format rewards           base            RL prompts
    curated_data        the cold-start set: worked solutions and  R1-Zero         toy tasks
                        R1-Zero's samples that pass the
                        rejection filters
    cold_start          SFT on the cold-start set                 base            cold-start set
    reasoning_rl        GRPO + language-consistency reward        cold start      RL prompts
    rejection_sampling  generate, verify, filter and assemble     reasoning RL    toy prompts
    rejection_sft       SFT on the mixture                        base            mixture
    final_rl            GRPO over every prompt kind               rejection SFT   all kinds
    distill             a dense student on the mixture            -               mixture
    evaluate            held-out accuracy of every model made     -               seed 1000

A stage is an entry of `RECIPE`: a name, what it does, and the function that runs it on the
recipe's state. Every training stage goes through `flows.factory.train` or `rl`, and so through
the trainer's stage functions (`trainer.recipe`), which check the config is that stage and
write the lineage into the checkpoint (config.json `r1f_parent`, `r1f_data`); the state
repeats, per stage, the checkpoint and the table version it started from (`inputs`). A stage
whose config is null is left out and says so; the stages after it start from the newest
checkpoint there is.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from prefect import flow

from flows.config import RunConfig
from flows.factory import (
    _lineage,
    _load,
    _say,
    base_model_dir,
    distill,
    filter_and_assemble,
    generate,
    generation_section,
    rl,
    run_generation,
    train,
    verify,
)
from store.lineage import Lineage, TableRef
from store.store import Store


@dataclass
class RecipeState:
    """What the stages hand on: models made, the newest one, table versions, evaluations."""

    models: dict[str, str] = field(default_factory=dict)  # label -> model directory
    newest: str | None = None  # the checkpoint data is generated from (the teacher)
    versions: dict[str, TableRef] = field(default_factory=dict)  # role -> table version
    evals: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> eval report
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall seconds
    # stage -> what it started from: {"checkpoint": dir, "data": NAME@V}
    inputs: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "models": self.models,
            "newest": self.newest,
            "versions": {k: str(v) for k, v in self.versions.items()},
            "evals": self.evals,
            "seconds": {k: round(v, 1) for k, v in self.seconds.items()},
            "inputs": self.inputs,
        }


StageFn = Callable[[RunConfig, str, RecipeState], None]


@dataclass(frozen=True)
class RecipeStage:
    name: str
    what: str
    run: StageFn | None  # None: the flow cannot run it yet
    where: str = ""  # why not, while it cannot


def _summary(model_dir: Path) -> dict[str, Any]:
    from trainer.train import SUMMARY_FILE

    return dict(json.loads((model_dir / SUMMARY_FILE).read_text()))


def pretrain(cfg: RunConfig, config: str, state: RecipeState) -> None:
    """The toy base, trained once per config and cached (base_dir/<key of its settings>)."""
    from trainer.train import SUMMARY_FILE

    out = base_model_dir(cfg)
    if (out / SUMMARY_FILE).is_file():
        _say(f"pretrain: the toy base is cached in {out} (trained once per config)")
    else:
        _say(f"pretrain: training the toy base ({cfg.recipe.base_config}) into {out}")
        # The base's corpus goes to a store of its own, beside the cached model.
        train(
            cfg.recipe.base_config,
            out=str(out),
            resume=True,
            store=str(Path(cfg.recipe.base_dir) / "store"),
        )
    state.models["base"] = str(out)
    state.newest = str(out)
    state.evals["base"] = _summary(out).get("eval_after") or {}


def r1_zero(cfg: RunConfig, config: str, state: RecipeState) -> None:
    """GRPO from the base with the accuracy and format rewards; the newest checkpoint after."""
    if cfg.recipe.r1_zero_config is None:
        _say("r1_zero: left out (recipe.r1_zero_config is null)")
        return
    _run_rl(cfg, state, "r1_zero", cfg.recipe.r1_zero_config, "r1-zero", state.models["base"])


def _run_rl(
    cfg: RunConfig,
    state: RecipeState,
    label: str,
    config: str,
    out: str,
    checkpoint: str,
    *,
    stage: str | None = None,
) -> None:
    """A GRPO stage through the `rl` flow from `checkpoint`; its checkpoint becomes the newest
    model (`label`), what it started from is recorded under its `stage` (default `label`)."""
    result = rl(
        config,
        out=str(Path(cfg.recipe.runs_dir) / out),
        checkpoint=checkpoint,
        resume=False,
        store=cfg.store.root,
    )
    prompts = result["prompts"]
    state.inputs[stage or label] = {
        "checkpoint": checkpoint,
        "data": f"{prompts['table']}@{prompts['version']}",
    }
    state.models[label] = result["out_dir"]
    state.newest = result["out_dir"]


def _run_sft(
    cfg: RunConfig,
    state: RecipeState,
    label: str,
    config: str,
    out: str,
    checkpoint: str,
    data: TableRef,
) -> None:
    """An SFT stage of the recipe through the `train` flow: `checkpoint` fine-tuned on `data`."""
    result = train(
        config,
        out=str(Path(cfg.recipe.runs_dir) / out),
        resume=False,
        store=cfg.store.root,
        checkpoint=checkpoint,
        source=str(data),
    )
    state.inputs[label] = {"checkpoint": checkpoint, "data": str(data)}
    state.models[label] = result["out_dir"]
    state.newest = result["out_dir"]


def curated_data(cfg: RunConfig, config: str, state: RecipeState) -> None:
    """The cold-start set (R1 section 2.3.1: a small curated set of long chains of thought in
    a readable format, partly collected from R1-Zero): the toy sources' worked solutions
    (backend `reference`) and R1-Zero's samples, each judged, then the reasoning rows that pass
    R1's rejection filters (verified correct, R1 format, readable, no loops) committed as
    `recipe.cold_start_table`, with both judged versions as its parents."""
    from flows.demo import reference_rows
    from generators.tasks import SOURCES
    from store.ingest import import_file
    from store.jsonl import atomic_output
    from store.lineage import Lineage

    sources: list[TableRef] = []
    table = cfg.recipe.reference_table
    if table is None:
        _say("curated data: no worked solutions configured (recipe.reference_table)")
    else:
        tasks = [
            t
            for source in SOURCES.values()
            for t in source.generate(cfg.recipe.reference_per_source, seed=cfg.seed, difficulty=1)
        ]
        path = Path(cfg.recipe.runs_dir) / "reference.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as fh:
            for row in reference_rows(tasks):
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        store = Store.from_config(cfg.store)
        report = import_file(store, path, table, lineage=Lineage(writer="flow r1_recipe"))
        _say(f"curated data: {report.valid} worked solutions ({report.written} new) -> {table}")
        judged = verify(config, table=table)
        state.versions["curated"] = TableRef(table, int(judged["version"]))
        sources.append(state.versions["curated"])
    zero = state.models.get("r1_zero")
    if zero is not None and cfg.generate is not None and cfg.recipe.zero_samples > 0:
        section = replace(
            generation_section(cfg, zero),
            table=cfg.recipe.zero_samples_table,
            prompts=cfg.recipe.zero_prompts,
            sampling=replace(cfg.generate.sampling, n=cfg.recipe.zero_samples),
        )
        generated = run_generation(
            cfg.store, section, cfg.flows, _lineage("flow r1_recipe (R1-Zero samples)", cfg)
        )
        _say(
            f"curated data: {generated['generated']} samples of R1-Zero "
            f"-> {section.table}@{generated['version']}"
        )
        judged = verify(config, table=section.table)
        state.versions["r1_zero_samples"] = TableRef(section.table, int(judged["version"]))
        sources.append(state.versions["r1_zero_samples"])
    if not sources:
        return
    ref, counts = assemble_cold_start(
        Store.from_config(cfg.store),
        sources,
        cfg.recipe.cold_start_table,
        _lineage("flow r1_recipe (cold start)", cfg),
    )
    state.versions["cold_start"] = ref
    _say(
        f"curated data: cold-start set {ref}: "
        + ", ".join(f"{n} of {total} from {src}" for src, (n, total) in counts.items())
    )


def assemble_cold_start(
    store: Store, sources: list[TableRef], table: str, lineage: Lineage
) -> tuple[TableRef, dict[str, tuple[int, int]]]:
    """Commit the reasoning rows of `sources` that pass R1's rejection filters as `table`
    (overwritten: the set is exactly these rows); returns its version and, per source,
    (rows kept, rows read)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from filters.base import apply_filters
    from filters.rejection import default_rejection_filters

    chain = default_rejection_filters(language="en")
    parts: list[pa.Table] = []
    counts: dict[str, tuple[int, int]] = {}
    for ref in sources:
        batches = list(store.iter_batches(ref.table, ref.version))
        data = pa.Table.from_batches(batches) if batches else None
        if data is None or data.num_rows == 0:
            counts[str(ref)] = (0, 0)
            continue
        decided, _ = apply_filters(data, chain, step="cold-start")
        mask = pc.and_(
            pc.equal(decided.column("kept"), True), pc.equal(decided.column("track"), "reasoning")
        )
        kept = pa.Table.from_batches([decided.filter(mask)])
        counts[str(ref)] = (kept.num_rows, data.num_rows)
        parts.append(kept)
    if not parts or not sum(p.num_rows for p in parts):
        raise RuntimeError(
            f"the cold-start set is empty: no reasoning row of {', '.join(map(str, sources))} "
            "passed the rejection filters"
        )
    result = store.commit(
        table,
        pa.concat_tables(parts),
        lineage=replace(lineage, parents=tuple(sources)),
        mode="overwrite",
    )
    return TableRef(table, int(result.version)), counts


def cold_start(cfg: RunConfig, config: str, state: RecipeState) -> None:
    """SFT of the base on the cold-start set (R1 fine-tunes DeepSeek-V3-Base on it)."""
    data = state.versions.get("cold_start")
    if cfg.recipe.cold_start_config is None:
        _say("cold_start: left out (recipe.cold_start_config is null)")
        return
    if data is None:
        _say("cold_start: left out (no cold-start set was assembled)")
        return
    _run_sft(
        cfg,
        state,
        "cold_start",
        cfg.recipe.cold_start_config,
        "cold-start",
        state.models["base"],
        data,
    )


def reasoning_rl(cfg: RunConfig, config: str, state: RecipeState) -> None:
    """GRPO with the language-consistency reward, from the cold-start checkpoint."""
    if cfg.recipe.reasoning_rl_config is None:
        _say("reasoning_rl: left out (recipe.reasoning_rl_config is null)")
        return
    start = state.models.get("cold_start") or state.models["base"]
    _run_rl(cfg, state, "reasoning_rl", cfg.recipe.reasoning_rl_config, "reasoning-rl", start)


def rejection_sampling(cfg: RunConfig, config: str, state: RecipeState) -> None:
    """Sample from the newest checkpoint, judge the samples, filter and assemble the mixture."""
    generated = generate(config, model_dir=state.newest)
    state.versions["generated"] = TableRef(generated["table"], int(generated["version"]))
    judged = verify(config, table=generated["table"])
    state.versions["generated"] = TableRef(judged["table"], int(judged["version"]))
    mixed = filter_and_assemble(config)
    state.versions["candidates"] = TableRef.parse(mixed["candidates"])
    state.versions["mixture"] = TableRef.parse(mixed["mixture"])


def rejection_sft(cfg: RunConfig, config: str, state: RecipeState) -> None:
    """SFT of the base on the rejection-sampled mixture (R1 section 2.3.3: DeepSeek-V3-Base is
    fine-tuned on the reasoning and non-reasoning data, not the RL checkpoint)."""
    mixture = state.versions.get("mixture")
    if cfg.recipe.rejection_sft_config is None:
        _say("rejection_sft: left out (recipe.rejection_sft_config is null)")
        return
    if mixture is None:
        _say("rejection_sft: left out (no mixture was assembled)")
        return
    _run_sft(
        cfg,
        state,
        "rejection_sft",
        cfg.recipe.rejection_sft_config,
        "rejection-sft",
        state.models["base"],
        mixture,
    )


def final_rl(cfg: RunConfig, config: str, state: RecipeState) -> None:
    """GRPO over every prompt kind (reasoning and non-reasoning toy families) from the
    rejection-SFT checkpoint: the model the recipe calls R1."""
    if cfg.recipe.final_rl_config is None:
        _say("final_rl: left out (recipe.final_rl_config is null)")
        return
    start = state.models.get("rejection_sft") or state.newest or state.models["base"]
    _run_rl(cfg, state, "r1", cfg.recipe.final_rl_config, "final-rl", start, stage="final_rl")


def distill_student(cfg: RunConfig, config: str, state: RecipeState) -> None:
    mixture = state.versions.get("mixture")
    if mixture is None or mixture.version is None:
        _say("distill: no mixture was assembled; skipped")
        return
    if cfg.recipe.distill_config is None:
        _say("distill: no student configured (recipe.distill_config); skipped")
        return
    result = distill(config, table=mixture.table, version=mixture.version, teacher=state.newest)
    state.models["student"] = result["out_dir"]


def evaluate(cfg: RunConfig, config: str, state: RecipeState) -> None:
    """Held-out accuracy of every model the recipe made: each training run evaluated its model
    on the same held-out problems (task seed 1000, never trained on) when it finished."""
    for label, model_dir in state.models.items():
        summary = _summary(Path(model_dir))
        state.evals[label] = summary.get("eval_after") or {}
        for family, score in state.evals[label].get("families", {}).items():
            _say(
                f"evaluate {label:<13} {family:<15} greedy {score['greedy']:.0%}, "
                f"pass@{state.evals[label]['k']} {score['pass_at_k']:.0%}"
            )


RECIPE: tuple[RecipeStage, ...] = (
    RecipeStage("pretrain", "the toy base model", pretrain),
    RecipeStage("r1_zero", "GRPO from the base: accuracy + format rewards", r1_zero),
    RecipeStage(
        "curated_data",
        "the cold-start set: worked solutions + R1-Zero's samples that pass the filters",
        curated_data,
    ),
    RecipeStage("cold_start", "SFT of the base on the cold-start set", cold_start),
    RecipeStage(
        "reasoning_rl",
        "GRPO with the language-consistency reward, from the cold-start checkpoint",
        reasoning_rl,
    ),
    RecipeStage(
        "rejection_sampling",
        "generate from the newest checkpoint, verify, filter and assemble",
        rejection_sampling,
    ),
    RecipeStage("rejection_sft", "SFT of the base on the rejection-sampled mixture", rejection_sft),
    RecipeStage("final_rl", "GRPO over every prompt kind, from the rejection-SFT model", final_rl),
    RecipeStage("distill", "a dense student fine-tuned on the mixture", distill_student),
    RecipeStage("evaluate", "held-out accuracy of every model made", evaluate),
)


@flow(name="r1-recipe", log_prints=True)
def r1_recipe(config: str, store: str | None = None) -> dict[str, Any]:
    """Run every stage of `RECIPE` the flow can run, in order; list the others as not run."""
    cfg = _load(config, store)
    state = RecipeState()
    for stage in RECIPE:
        if stage.run is None:
            _say(f"== {stage.name}: not run ({stage.where}): {stage.what}")
            continue
        _say(f"== {stage.name}: {stage.what}")
        started = time.perf_counter()
        stage.run(cfg, config, state)
        state.seconds[stage.name] = time.perf_counter() - started
    return state.to_dict()
