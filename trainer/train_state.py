"""Training checkpoints: the model in the Hugging Face layout plus everything a run needs to
continue exactly where it stopped. Nothing here is pickled.

    RUN/checkpoints/step-00000100/
        config.json, model.safetensors, tokenizer files   the model (loads as any checkpoint)
        optimizer.safetensors                              AdamW moments and step counts
        rng.safetensors                                    torch CPU (and CUDA) generator states
        trainer_state.json                                 step, schedule, data position,
                                                           Python RNG, optimizer param groups,
                                                           what the run trained on

A checkpoint is written into `RUN/checkpoints/.partial-step-N-PID`, every file flushed to disk,
then renamed to `step-N` (and the directory entry flushed): a run killed at any moment leaves
either the complete checkpoint or none, never half of one. `latest_checkpoint` takes the
highest complete step; leftovers of a killed write are removed by `remove_partials`.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file, save_file

from trainer.data import DataState

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
RNG_FILE = "rng.safetensors"
_STEP_DIR = re.compile(r"^step-(\d{8})$")


class StatefulOptimizer(Protocol):
    """What checkpoints need of an optimizer (a torch optimizer is one; a distributed run
    passes a view that lays its state out as one process would hold it)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class ResumePoint:
    """What `load_training_state` restored besides the tensors it loaded in place."""

    path: Path
    step: int  # optimizer steps done
    data: DataState
    metadata: dict[str, Any]


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """The complete checkpoint with the most steps under RUN/checkpoints, or None."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return None
    steps = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name))]
    return max(steps)[1] if steps else None


def remove_partials(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Delete what killed checkpoint writes left (`.partial-*`); returns what was removed."""
    root = Path(run_dir) / CHECKPOINTS
    removed = sorted(root.glob(".partial-*")) if root.is_dir() else []
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def save_training_checkpoint(
    run_dir: str | os.PathLike[str],
    step: int,
    *,
    save_model: Callable[[Path], None],
    optimizer: StatefulOptimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    data: DataState,
    metadata: Mapping[str, Any],
    keep: int = 2,
) -> Path:
    """Write checkpoint `step` atomically and keep only the newest `keep` ones.

    save_model(dir) writes the model's Hugging Face files into dir (the model adapter's
    `save`). metadata: JSON-able facts about the run (config, data source, parent)."""
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step)
    partial = root / f".partial-{step_dir_name(step)}-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        save_model(partial)
        tensors, opt_meta = _optimizer_tensors(optimizer)
        save_file(tensors, str(partial / OPTIMIZER_FILE))
        save_file(_rng_tensors(), str(partial / RNG_FILE))
        state = {
            "step": step,
            "data": data.to_dict(),
            "scheduler": scheduler.state_dict(),
            "optimizer": opt_meta,
            "python_rng": _python_rng_state(),
            "metadata": dict(metadata),
        }
        (partial / STATE_FILE).write_text(json.dumps(state, indent=2, default=_json_default))
        _fsync_tree(partial)
        if final.exists():  # a rerun of the same step (resumed after a kill): replace it
            shutil.rmtree(final)
        partial.rename(final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    for old in _complete_steps(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_training_state(
    path: str | os.PathLike[str],
    *,
    optimizer: StatefulOptimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> ResumePoint:
    """Restore optimizer, schedule and RNG states from a checkpoint (the model's weights are
    loaded by the caller, from the same directory); returns step, data position, metadata."""
    root = Path(path)
    state = json.loads((root / STATE_FILE).read_text())
    optimizer.load_state_dict(_optimizer_state(load_file(str(root / OPTIMIZER_FILE)), state))
    scheduler.load_state_dict(state["scheduler"])
    _restore_rng(load_file(str(root / RNG_FILE)), state["python_rng"])
    return ResumePoint(
        root, int(state["step"]), DataState.from_dict(state["data"]), state["metadata"]
    )


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    state = json.loads((Path(path) / STATE_FILE).read_text())
    return dict(state["metadata"])


# ----------------------------------------------------------------------------------------------
# Optimizer state as tensors + JSON


def _optimizer_tensors(optimizer: StatefulOptimizer) -> tuple[dict[str, torch.Tensor], Any]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_state(
    tensors: Mapping[str, torch.Tensor], state: Mapping[str, Any]
) -> dict[str, Any]:
    meta = state["optimizer"]
    per_param: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        per_param.setdefault(int(index), {})[key] = value
    for index, values in meta["scalars"].items():
        per_param.setdefault(int(index), {}).update(values)
    return {"state": per_param, "param_groups": meta["param_groups"]}


# ----------------------------------------------------------------------------------------------
# Random number generators


def _rng_tensors() -> dict[str, torch.Tensor]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s.cpu()
    return tensors


def _python_rng_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _restore_rng(tensors: Mapping[str, torch.Tensor], python_state: list[Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    version, internal, gauss = python_state
    random.setstate((version, tuple(internal), gauss))


# ----------------------------------------------------------------------------------------------
# Files


def _complete_steps(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if _STEP_DIR.match(p.name))


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with path.open("rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
