"""`r1f demo`: the whole R1 recipe through the Prefect flows, at toy scale, on the CPU.

The demo starts Prefect's embedded server (nothing to start by hand; its database stays in
PREFECT_HOME, so the UI can show the runs afterwards), runs the `r1_recipe` flow
(flows/recipe.py: toy base, R1-Zero, the cold-start set and cold start, reasoning RL, rejection
sampling from the reasoning-RL checkpoint, rejection SFT, final RL, distillation,
evaluation), exports the mixture as a release and loads it back with `datasets`, and ends
with a summary table: held-out accuracy of each model, what each stage started from, the
versions made and their sizes, where the card and plots are, and how to open the UI.

Every line of progress is a Prefect log line of the flow run doing the work, so the flow runs
are named as they go ("Beginning flow run 'clever-fox' for flow 'generate'").
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flows.config import RunConfig, load_run_config
from store.config import config_hash

_THINK = re.compile(r"^<think>(.*)</think><answer>(.*)</answer>$", re.DOTALL)

# The models of R1's recipe, in the order of the summary table, and the stage that makes each.
MODELS = (
    ("base", "toy base (pretrained)", "pretrain"),
    ("r1_zero", "R1-Zero (GRPO from the base)", "r1_zero"),
    ("cold_start", "cold start (SFT of the base)", "cold_start"),
    ("reasoning_rl", "reasoning RL", "reasoning_rl"),
    ("rejection_sft", "rejection SFT (of the base)", "rejection_sft"),
    ("r1", "R1 (after final RL)", "final_rl"),
    ("student", "distilled student", "distill"),
)


def reference_rows(tasks: Iterable[Any]) -> list[dict[str, Any]]:
    """Sample rows whose completion is a task's worked solution (no model involved)."""
    rows = []
    for task in tasks:
        match = _THINK.match(task.solution)
        rows.append(
            {
                "prompt_id": task.prompt_id,
                "prompt": task.prompt,
                "completion": task.solution,
                "reasoning": match.group(1) if match else None,
                "answer": match.group(2) if match else None,
                "gold": task.gold,
                "domain": task.domain,
                "track": task.track,
                "source": task.source,
                "language": "en",
                "backend": "reference",
                "sample_index": 0,
                "finish_reason": "stop",
            }
        )
    return rows


def _say(title: str) -> None:
    print(f"\n== {title}", flush=True)


def _release(cfg: RunConfig, table: str, version: int, out: Path) -> tuple[Path, int]:
    """Export the mixture as a release, check it, load it back offline; (dir, rows)."""
    from data_cards.from_store import release_card_writer
    from store.release import export_release, verify_release
    from store.store import Store

    store = Store.from_config(cfg.store)
    release_dir = out / "release"
    shutil.rmtree(release_dir, ignore_errors=True)
    release = export_release(
        store, table, version, release_dir, write_card=release_card_writer(store)
    )
    problems = verify_release(release_dir)
    import datasets

    datasets.disable_progress_bars()
    loaded = datasets.load_dataset(str(release_dir), cache_dir=str(out / "hf-cache"))
    rows = int(loaded["train"].num_rows)
    print(
        f"  {release_dir}: {release.manifest['rows']} rows, manifest "
        f"{'check failed: ' + '; '.join(problems) if problems else 'checked'}, "
        f"datasets.load_dataset: {rows} rows"
    )
    if problems or rows != release.manifest["rows"]:
        raise RuntimeError(f"the release in {release_dir} does not match its manifest")
    return release_dir, rows


def summary_rows(state: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(model, family, greedy, pass@k, R1 format of the samples) for each model of the recipe,
    'not run' where the flow cannot run the stage that makes it, or the config left it out."""
    from flows.recipe import RECIPE

    built = {stage.name for stage in RECIPE if stage.run is not None}
    rows = []
    for label, title, stage in MODELS:
        report = state["evals"].get(label)
        if stage not in built:
            rows.append((title, "", "not run (stage not wired)", "", ""))
        elif label not in state["models"]:
            rows.append((title, "", "not run (left out by the config)", "", ""))
        elif not report:
            rows.append((title, "", "not evaluated", "", ""))
        else:
            for family, score in report.get("families", {}).items():
                rows.append(
                    (
                        title,
                        family,
                        f"{score['greedy']:.0%}",
                        f"{score['pass_at_k']:.0%} (k={report['k']})",
                        f"{score['format_sampled']:.0%}",
                    )
                )
    return rows


def run_demo(config_path: str | Path) -> int:
    from flows.cli.common import print_table
    from flows.embedded import prefect_api

    started = time.perf_counter()
    cfg = load_run_config(config_path)
    out = Path(cfg.demo.out_dir)
    shutil.rmtree(out, ignore_errors=True)  # the demo owns this directory; reruns start clean
    out.mkdir(parents=True)
    print(f"r1f demo: config {config_path} (hash {config_hash(cfg)}), store {cfg.store.root}")
    _say("Prefect (embedded: started for this run, stopped at its end)")
    with prefect_api() as api:
        print(f"  API {api}; PREFECT_HOME {os.environ['PREFECT_HOME']}")
        from flows.recipe import r1_recipe

        _say("The R1 recipe through the flows (flows/recipe.py)")
        state = r1_recipe(str(config_path))
    mixture = state["versions"].get("mixture")
    _say("Release of the mixture: shards + manifest + card, loaded back with `datasets` offline")
    card = None
    if mixture is not None:
        table, version = mixture.split("@")
        release_dir, _ = _release(cfg, table, int(version), out)
        card = release_dir / "README.md"
    _say("Summary")
    made_by = {model_dir: label for label, model_dir in state["models"].items()}
    print_table(
        "Held-out toy problems (task seed 1000, never trained on; answers read leniently)",
        ["model", "family", "greedy", "pass@k", "R1 format"],
        summary_rows(state),
    )
    print_table(
        "What each stage started from (also in its checkpoint's config.json: r1f_parent, r1f_data)",
        ["stage", "checkpoint", "data"],
        [
            (stage, made_by.get(inputs["checkpoint"], inputs["checkpoint"]), inputs["data"])
            for stage, inputs in state["inputs"].items()
        ],
    )
    print_table(
        "Versions made",
        ["role", "version", "rows", "size"],
        _version_rows(cfg, state["versions"]),
    )
    plots = sorted(p.name for p in (card.parent / "plots").glob("*.png")) if card else []
    print(f"card: {card} (plots in {card.parent / 'plots'}: {', '.join(plots)})" if card else "")
    home = os.environ["PREFECT_HOME"]
    print(
        "UI: the runs are in Prefect's database under "
        f"{home}; `PREFECT_HOME={home} prefect server start --host 127.0.0.1` "
        "and open http://127.0.0.1:4200 (or `r1f serve`, which also serves the deployments)"
    )
    times = ", ".join(f"{k} {v:.0f} s" for k, v in state["seconds"].items())
    print(f"\nDemo finished in {time.perf_counter() - started:.0f} s ({times}).")
    return 0


def _version_rows(cfg: RunConfig, versions: dict[str, str]) -> list[tuple[str, str, str, str]]:
    from flows.cli.common import human_bytes
    from store.lineage import TableRef
    from store.store import Store

    store = Store.from_config(cfg.store)
    rows = []
    for role, text in versions.items():
        ref = TableRef.parse(text)
        info = store.info(ref.table, ref.version)
        rows.append((role, text, f"{info.rows:,}", human_bytes(info.bytes)))
    return rows
