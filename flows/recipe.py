"""The `r1_recipe` flow: the R1 pipeline, stage after stage, as far as its stages exist.

R1's order (the seed, section 2.3), and what runs today:

    pretrain            the toy base model                       built (flows.factory.train)
    r1_zero             GRPO from the base                        built (flows.factory.rl over
                                                                  trainer.recipe.r1_zero)
    cold_start          SFT on curated long chains of thought     in trainer.recipe; not wired
    reasoning_rl        GRPO with language consistency            in trainer.recipe; not wired
    curated_data        the task sources' worked solutions        built (stands in for the
                                                                  curated and non-reasoning data)
    rejection_sampling  generate from the newest checkpoint,      built (generate, verify,
                        verify, filter and assemble               filter_and_assemble flows)
    rejection_sft       SFT on that mixture                       in trainer.recipe; not wired
    final_rl            RL on all prompt kinds                    in trainer.recipe; not wired
    distill             a dense student on the mixture            built (flows.factory.distill)
    evaluate            held-out accuracy of every model          built

A stage is an entry of `RECIPE`: a name, what it does, and the function that runs it on the
recipe's state (`None` while the flow cannot run it: the flow lists it as such, nothing
pretends it ran). R1-Zero runs from the base and becomes the newest checkpoint, so rejection
sampling generates from it (R1 collected part of its cold-start data from an R1-Zero-like
model). The trainer has the other stages as functions (trainer.recipe); each joins here as one
function with a toy config of its own (`rl` or `train` from `state.newest`, setting
`state.models[name]` and `state.newest`), and rejection sampling then samples the reasoning-RL
checkpoint with no other change.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow

from flows.config import RunConfig
from flows.factory import (
    _load,
    _say,
    base_model_dir,
    distill,
    filter_and_assemble,
    generate,
    rl,
    train,
    verify,
)
from store.lineage import TableRef
from store.store import Store


@dataclass
class RecipeState:
    """What the stages hand on: models made, the newest one, table versions, evaluations."""

    models: dict[str, str] = field(default_factory=dict)  # label -> model directory
    newest: str | None = None  # the checkpoint data is generated from (the teacher)
    versions: dict[str, TableRef] = field(default_factory=dict)  # role -> table version
    evals: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> eval report
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            "models": self.models,
            "newest": self.newest,
            "versions": {k: str(v) for k, v in self.versions.items()},
            "evals": self.evals,
            "seconds": {k: round(v, 1) for k, v in self.seconds.items()},
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
    """The toy base, trained once per config and cached (base_dir/<config hash>)."""
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
    out = Path(cfg.recipe.runs_dir) / "r1-zero"
    result = rl(
        cfg.recipe.r1_zero_config,
        out=str(out),
        checkpoint=state.models["base"],
        resume=False,
        store=cfg.store.root,
    )
    state.models["r1_zero"] = result["out_dir"]
    state.newest = result["out_dir"]


def curated_data(cfg: RunConfig, config: str, state: RecipeState) -> None:
    """The toy sources' worked solutions as a table (backend `reference`), judged like any
    other: the recipe's curated data until a cold-start set exists."""
    from flows.demo import reference_rows
    from generators.tasks import SOURCES
    from store.ingest import import_file
    from store.lineage import Lineage

    table = cfg.recipe.reference_table
    if table is None:
        _say("curated data: none configured (recipe.reference_table)")
        return
    tasks = [
        t
        for source in SOURCES.values()
        for t in source.generate(cfg.recipe.reference_per_source, seed=cfg.seed, difficulty=1)
    ]
    path = Path(cfg.recipe.runs_dir) / "reference.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    from store.jsonl import atomic_output

    with atomic_output(path) as fh:
        for row in reference_rows(tasks):
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    store = Store.from_config(cfg.store)
    report = import_file(store, path, table, lineage=Lineage(writer="flow r1_recipe"))
    _say(f"curated data: {report.valid} worked solutions ({report.written} new) -> {table}")
    judged = verify(config, table=table)
    state.versions["curated"] = TableRef(table, int(judged["version"]))


def rejection_sampling(cfg: RunConfig, config: str, state: RecipeState) -> None:
    """Sample from the newest checkpoint, judge the samples, filter and assemble the mixture."""
    generated = generate(config, model_dir=state.newest)
    state.versions["generated"] = TableRef(generated["table"], int(generated["version"]))
    judged = verify(config, table=generated["table"])
    state.versions["generated"] = TableRef(judged["table"], int(judged["version"]))
    mixed = filter_and_assemble(config)
    state.versions["candidates"] = TableRef.parse(mixed["candidates"])
    state.versions["mixture"] = TableRef.parse(mixed["mixture"])


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
                f"evaluate {label:<8} {family:<15} greedy {score['greedy']:.0%}, "
                f"pass@{state.evals[label]['k']} {score['pass_at_k']:.0%}"
            )


UNWIRED = "trainer.recipe has it; no toy config wired into this flow yet"
RECIPE: tuple[RecipeStage, ...] = (
    RecipeStage("pretrain", "the toy base model", pretrain),
    RecipeStage("r1_zero", "GRPO from the base: accuracy + format rewards", r1_zero),
    RecipeStage("cold_start", "SFT on a small curated long-CoT set", None, UNWIRED),
    RecipeStage("reasoning_rl", "GRPO with the language-consistency reward", None, UNWIRED),
    RecipeStage("curated_data", "worked solutions of the toy sources, judged", curated_data),
    RecipeStage(
        "rejection_sampling",
        "generate from the newest checkpoint, verify, filter and assemble",
        rejection_sampling,
    ),
    RecipeStage("rejection_sft", "SFT on the rejection-sampled mixture", None, UNWIRED),
    RecipeStage("final_rl", "RL on every prompt kind", None, UNWIRED),
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
