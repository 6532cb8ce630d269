"""The recipe's stages, called directly (no Prefect engine) with micro configs: the cold-start
set is what passes the rejection filters, each training stage starts from the checkpoint and
data R1 says and records them, final RL poses non-reasoning prompts too, and the cached base's
key ignores options left at their defaults."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

import flows.factory
import flows.recipe
from flows.config import load_run_config
from flows.recipe import RECIPE, RecipeState, assemble_cold_start
from flows.train import StageConfig
from store.lineage import Lineage, TableRef
from store.record import to_table, validate_sample
from store.store import Store
from trainer.config import LoopConfig

ROOT = Path(__file__).resolve().parents[2]


# --- the cached base's key ------------------------------------------------------------------


def _run_config(tmp_path: Path, lr: str = "3.0e-3") -> Path:
    base = tmp_path / f"base-{lr}.yaml"
    base.write_text(
        "stage: pretrain\n"
        "corpus: {families: {toy-arithmetic: 30}}\n"
        f"optim: {{lr: {lr}}}\n"
        "loop: {steps: 3}\n"
    )
    config = tmp_path / f"run-{lr}.yaml"
    config.write_text(f"recipe: {{base_config: {base}, base_dir: {tmp_path / 'base'}}}\n")
    return config


@dataclasses.dataclass(frozen=True)
class NewLoop(LoopConfig):
    new_loop_option: int = 7


@dataclasses.dataclass(frozen=True)
class NewStageConfig(StageConfig):
    new_option: str = "default"
    loop: NewLoop = dataclasses.field(default_factory=NewLoop)


def test_base_key_ignores_new_defaulted_options_and_sees_set_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows import train as flows_train
    from store.config import load_config

    key = flows.factory.base_model_dir(load_run_config(_run_config(tmp_path)))

    # A later version of the trainer, with options (at their defaults) it did not have.
    monkeypatch.setattr(
        flows_train, "load_stage_config", lambda path: load_config(Path(path), NewStageConfig)
    )
    assert flows.factory.base_model_dir(load_run_config(_run_config(tmp_path))) == key
    # A value the config sets differently is another base.
    assert flows.factory.base_model_dir(load_run_config(_run_config(tmp_path, "1.0e-3"))) != key
    monkeypatch.undo()
    assert flows.factory.base_model_dir(load_run_config(_run_config(tmp_path, "1.0e-3"))) != key


def test_settings_hash_counts_a_section_present_even_at_defaults() -> None:
    from store.config import settings_hash

    @dataclasses.dataclass(frozen=True)
    class Inner:
        x: int = 1

    @dataclasses.dataclass(frozen=True)
    class Outer:
        inner: Inner | None = None
        y: int = 2

    assert settings_hash(Outer()) != settings_hash(Outer(inner=Inner()))
    assert settings_hash(Outer(inner=Inner())) != settings_hash(Outer(inner=Inner(x=3)))
    assert settings_hash(Outer(y=2)) == settings_hash(Outer())


# --- the cold-start set ---------------------------------------------------------------------


def _sample(i: int, verdict: str, completion: str, track: str = "reasoning") -> dict[str, Any]:
    return validate_sample(
        {
            "prompt": f"Compute {i}+1.",
            "completion": completion,
            "gold": str(i + 1),
            "domain": "math" if track == "reasoning" else "general",
            "track": track,
            "source": "test-sums",
            "language": "en",
            "backend": "test",
            "sample_index": 0,
            "finish_reason": "stop",
            "verdicts": [{"verifier": "math", "verdict": verdict}] if track == "reasoning" else [],
        }
    )


def test_cold_start_set_keeps_what_passes_the_rejection_filters(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    good = "<think>First add the two numbers: {i} plus one is {j}.</think><answer>{j}</answer>"
    rows = [
        _sample(0, "correct", good.format(i=0, j=1)),
        _sample(1, "incorrect", good.format(i=1, j=3)),
        _sample(2, "correct", "the answer is 3"),  # not the R1 format
        _sample(3, "correct", "<think></think><answer>Hello!</answer>", track="non_reasoning"),
    ]
    store.commit("samples", to_table(rows), lineage=Lineage(writer="test"), mode="overwrite")
    store.commit(
        "more",
        to_table([_sample(5, "correct", good.format(i=5, j=6))]),
        lineage=Lineage(writer="test"),
        mode="overwrite",
    )
    sources = [TableRef("samples", 0), TableRef("more", 0)]
    ref, counts = assemble_cold_start(store, sources, "cold", Lineage(writer="test"))
    assert ref == TableRef("cold", 0)
    assert counts == {"samples@0": (1, 4), "more@0": (1, 1)}
    prompts = sorted(store.read("cold", 0, ["prompt"]).get_column("prompt").to_list())
    assert prompts == ["Compute 0+1.", "Compute 5+1."]
    assert store.commit_info("cold", 0).lineage.parents == tuple(sources)
    store.commit(
        "bad",
        to_table([_sample(7, "incorrect", good.format(i=7, j=9))]),
        lineage=Lineage(writer="test"),
        mode="overwrite",
    )
    with pytest.raises(RuntimeError, match="the cold-start set is empty"):
        assemble_cold_start(store, [TableRef("bad", 0)], "cold", Lineage(writer="test"))


# --- the training stages, in R1's order -----------------------------------------------------

LOOP = "steps: 1, checkpoint_every: 0, tensorboard: false, progress: false"
EVAL = "eval: {families: [toy-arithmetic], problems: 1, k: 1, max_tokens: 4}\n"
MICRO = f"loop: {{{LOOP}, rows_per_micro_batch: 2}}\n{EVAL}"
MICRO_RL = (
    "rollout: {prompts_per_step: 2, group_size: 2, max_tokens: 4, max_batch_rows: 4}\n"
    f"loop: {{{LOOP}}}\n{EVAL}"
)


def _micro_configs(tmp_path: Path) -> Path:
    (tmp_path / "cold.yaml").write_text(
        f"extends: {ROOT / 'configs/cold-start-toy.yaml'}\ndata: {{seq_len: 128}}\n{MICRO}"
    )
    (tmp_path / "rsft.yaml").write_text(
        f"extends: {ROOT / 'configs/rejection-sft-toy.yaml'}\ndata: {{seq_len: 128}}\n{MICRO}"
    )
    (tmp_path / "rl.yaml").write_text(
        f"extends: {ROOT / 'configs/reasoning-rl-toy.yaml'}\n"
        "prompt_set: {families: {toy-arithmetic: 4, toy-countdown: 0}}\n" + MICRO_RL
    )
    # Final RL's own families, each shrunk: the non-reasoning ones stay in.
    (tmp_path / "final.yaml").write_text(
        f"extends: {ROOT / 'configs/final-rl-toy.yaml'}\n"
        "prompt_set: {families: {toy-arithmetic: 2, toy-countdown: 0, toy-greeting: 2, "
        "toy-facts: 2, toy-translation: 0, toy-self-cognition: 0}}\n" + MICRO_RL
    )
    config = tmp_path / "run.yaml"
    config.write_text(
        f"store: {{root: {tmp_path / 'store'}}}\n"
        "recipe:\n"
        f"  runs_dir: {tmp_path / 'runs'}\n"
        "  cold_start_config: cold.yaml\n"
        "  reasoning_rl_config: rl.yaml\n"
        "  rejection_sft_config: rsft.yaml\n"
        "  final_rl_config: final.yaml\n"
    )
    return config


def _sft_rows(n: int) -> Any:
    return to_table(
        [
            _sample(
                i, "correct", f"<think>{i} plus one is {i + 1}.</think><answer>{i + 1}</answer>"
            )
            for i in range(n)
        ]
    )


def test_training_stages_start_where_r1_says_and_record_it(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The flows' bodies, without the Prefect engine (each stage function calls the flows).
    monkeypatch.setattr(flows.recipe, "train", flows.factory.train.fn)
    monkeypatch.setattr(flows.recipe, "rl", flows.factory.rl.fn)
    monkeypatch.setattr(flows.factory, "train_task", flows.factory.train_task.fn)
    monkeypatch.setattr(flows.factory, "grpo_task", flows.factory.grpo_task.fn)
    config = _micro_configs(tmp_path)
    cfg = load_run_config(config)
    store = Store(tmp_path / "store")
    lineage = Lineage(writer="test")
    store.commit("toy-cold-start", _sft_rows(6), lineage=lineage, mode="overwrite")
    store.commit("toy-mixture", _sft_rows(8), lineage=lineage, mode="overwrite")

    base = str(tiny_model)
    state = RecipeState(models={"base": base}, newest=base)
    state.versions["cold_start"] = TableRef("toy-cold-start", 0)
    stages = {stage.name: stage.run for stage in RECIPE}
    for name in ("cold_start", "reasoning_rl"):
        stages[name](cfg, str(config), state)  # type: ignore[misc]
    state.versions["mixture"] = TableRef("toy-mixture", 0)  # rejection sampling's, here given
    for name in ("rejection_sft", "final_rl"):
        stages[name](cfg, str(config), state)  # type: ignore[misc]

    runs = tmp_path / "runs"
    assert state.models == {
        "base": base,
        "cold_start": str(runs / "cold-start"),
        "reasoning_rl": str(runs / "reasoning-rl"),
        "rejection_sft": str(runs / "rejection-sft"),
        "r1": str(runs / "final-rl"),
    }
    assert state.newest == str(runs / "final-rl")
    # Cold start and rejection SFT fine-tune the base; the RL stages the stage before them.
    assert state.inputs["cold_start"] == {"checkpoint": base, "data": "toy-cold-start@0"}
    assert state.inputs["reasoning_rl"]["checkpoint"] == str(runs / "cold-start")
    assert state.inputs["rejection_sft"] == {"checkpoint": base, "data": "toy-mixture@0"}
    assert state.inputs["final_rl"]["checkpoint"] == str(runs / "rejection-sft")
    for label, stage in [
        ("cold_start", "cold_start"),
        ("reasoning_rl", "reasoning_rl"),
        ("rejection_sft", "rejection_sft"),
        ("r1", "final_rl"),
    ]:
        written = json.loads((Path(state.models[label]) / "config.json").read_text())
        assert written["r1f_stage"] == stage
        assert written["r1f_parent"]["path"] == state.inputs[stage]["checkpoint"]
        table, version = state.inputs[stage]["data"].split("@")
        assert (written["r1f_data"]["table"], written["r1f_data"]["version"]) == (
            table,
            int(version),
        )
    # Final RL's prompts hold the non-reasoning families as well as the reasoning ones.
    table, version = state.inputs["final_rl"]["data"].split("@")
    tracks = store.read(table, int(version), ["track"]).get_column("track").to_list()
    assert {"reasoning", "non_reasoning"} <= set(tracks)


def test_left_out_stages_say_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(
        "recipe: {cold_start_config: null, reasoning_rl_config: null, rejection_sft_config: null, "
        "final_rl_config: null}\n"
    )
    cfg = load_run_config(config)
    state = RecipeState(models={"base": "b"}, newest="b")
    state.versions["cold_start"] = TableRef("toy-cold-start", 0)
    for stage in RECIPE:
        if stage.name in ("cold_start", "reasoning_rl", "rejection_sft", "final_rl"):
            assert stage.run is not None
            stage.run(cfg, str(config), state)
    out = capsys.readouterr().out
    assert "cold_start: left out (recipe.cold_start_config is null)" in out
    assert "rejection_sft: left out (recipe.rejection_sft_config is null)" in out
    assert state.models == {"base": "b"} and state.newest == "b"
