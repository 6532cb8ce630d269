"""Where a training process stands: alone, or one rank of a distributed run.

`run_training` asks `place(cfg)` once and goes through the answer wherever one process and
many differ: which share of each batch to read (`stream`), how to spread the model
(`distribute`), how to gather it whole for saving and evaluation (`whole_model`), the
optimizer state in the single-process layout for checkpoints (`optimizer_state`), and who
writes (`rank` 0). `SingleProcess` does nothing of the sort; the distributed placement is
`trainer.parallel.training.Distributed` (docs/parallel.md), imported only when the config's
`parallel` section asks for more than one process.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

import torch

from trainer.adapters import TrainableModel
from trainer.config import TrainConfig
from trainer.data import BatchStream, DataState, PackedDataset
from trainer.train_state import StatefulOptimizer


class Placement(Protocol):
    """Where this process stands in a run: alone (`SingleProcess`), or one rank of a
    distributed run (`trainer.parallel.training.Distributed`)."""

    rank: int  # rank 0 writes every file, log line and progress line, and evaluates

    def barrier(self) -> None: ...

    def stream(
        self, dataset: PackedDataset, rows_per_micro_batch: int, state: DataState | None
    ) -> BatchStream:
        """This process's share of each micro-batch of `rows_per_micro_batch` rows (the
        global count), from a saved position."""
        ...

    def distribute(self, model: TrainableModel) -> TrainableModel: ...

    def whole_model(self, model: TrainableModel) -> TrainableModel | None:
        """The model as one process holds it, on rank 0 (None on the others); every rank
        must call it (the pieces are gathered)."""
        ...

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> StatefulOptimizer:
        """The optimizer's state in the single-process layout: `state_dict()` (every rank
        calls it; complete on rank 0) and `load_state_dict()` (on every rank)."""
        ...


class SingleProcess:
    """A run in one process: nothing to share or gather."""

    rank = 0

    def barrier(self) -> None:
        return None

    def stream(
        self, dataset: PackedDataset, rows_per_micro_batch: int, state: DataState | None
    ) -> BatchStream:
        return BatchStream(dataset, rows_per_micro_batch, state=state)

    def distribute(self, model: TrainableModel) -> TrainableModel:
        return model

    def whole_model(self, model: TrainableModel) -> TrainableModel | None:
        return model

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> StatefulOptimizer:
        return optimizer


def place(cfg: TrainConfig) -> Placement:
    """This process's placement: alone, or (with `cfg.parallel` asking for several processes)
    a rank of the process group the launcher started, which must be as large."""
    import torch.distributed as dist

    from trainer.train import TrainError

    joined = dist.is_available() and dist.is_initialized()
    world = dist.get_world_size() if joined else 1
    try:
        parallel = cfg.parallel.for_processes(world)
    except ValueError as err:
        how = f"; launch with `r1f train {cfg.stage} --nproc N`" if world == 1 else ""
        raise TrainError(f"parallel: {world} process(es): {err}{how}") from None
    if world == 1:
        return SingleProcess()
    from trainer.parallel.training import Distributed

    return Distributed(replace(cfg, parallel=parallel))


@dataclass(frozen=True)
class SavedState:
    """An optimizer state already gathered (`Placement.optimizer_state(...).state_dict()`,
    which every rank must call) for rank 0 to write."""

    state: dict[str, Any]

    def state_dict(self) -> dict[str, Any]:
        return self.state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        raise TypeError("a saved state is only written")
