"""Training steps through the loop's own `train_step`, in one process and distributed, for
comparing them (the tests and `bench/pipeline.py` use this).

`loop_steps(rank, world_size, case)` runs `case.steps` optimizer steps of a DeepSeek-V3 model
exactly as `run_training` does (`place` -> `distribute` -> `build_optimizer` /
`build_scheduler` -> `BatchStream` over packed documents -> `train_step`), on one process when
the case's layout is one process, else as one rank of the group (start it on every rank, e.g.
through `trainer.parallel.launch.spawn`). It returns what a comparison needs: each step's
logged record, the first step's gradients (after clipping, as the optimizer saw them), the
weights and router biases after the last step, and the first step's expert traffic.
`merge_ranks` puts the ranks' pieces together (each tensor from the rank that holds it;
replicas must agree bit for bit).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from trainer.adapters import DeepSeekV3Model
from trainer.config import LoopConfig, OptimConfig, ParallelConfig, TrainConfig
from trainer.data import Document, PackedDataset
from trainer.model import ModelArgs, Transformer
from trainer.optim import build_optimizer, build_scheduler
from trainer.parallel.training import DistributedModel
from trainer.placement import place
from trainer.train import train_step


@dataclass(frozen=True)
class StepCase:
    """A model, packed documents and a loop configuration: what every layout trains."""

    args: ModelArgs
    documents: Sequence[Document]
    seq_len: int
    loop: LoopConfig
    optim: OptimConfig
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    seed: int = 0
    steps: int = 1
    timed_steps: int = 0  # further steps, timed, after the compared ones

    def under(self, parallel: ParallelConfig) -> StepCase:
        return replace(self, parallel=parallel)

    def config(self) -> TrainConfig:
        return TrainConfig(seed=self.seed, loop=self.loop, optim=self.optim, parallel=self.parallel)


@dataclass
class StepRecord:
    records: list[dict[str, Any]]  # each step's StepResult.record(), wall clock left out
    grads: dict[str, Tensor]  # after the first step's clipping; this rank's tensors
    weights: dict[str, Tensor]  # parameters and buffers after the last step; this rank's
    # This rank's first-step micro-batches (inputs, document ids): what its routing came from,
    # and the targets each of them scores.
    batches: list[tuple[Tensor, Tensor]] = field(default_factory=list)
    scored: list[int] = field(default_factory=list)
    all_to_all: dict[str, int] = field(default_factory=dict)  # the first step's, this rank's
    layers: list[int] = field(default_factory=list)  # MoE layers this rank runs
    overlapped_pairs: int = 0
    seconds: list[float] = field(default_factory=list)  # wall time of each timed step


def random_documents(
    n: int, vocab: int, *, seed: int, min_len: int = 4, max_len: int = 40
) -> list[Document]:
    """Documents of random tokens and lengths; about half score only their second half (SFT's
    completion-only loss), so rows and micro-batches score different numbers of tokens."""
    g = torch.Generator().manual_seed(seed)
    docs = []
    for _ in range(n):
        length = int(torch.randint(min_len, max_len + 1, (1,), generator=g))
        ids = torch.randint(1, vocab, (length,), generator=g).tolist()
        prompt = length // 2 if int(torch.randint(0, 2, (1,), generator=g)) else 0
        docs.append(Document(ids, [False] * prompt + [True] * (length - prompt)))
    return docs


def loop_steps(rank: int, world_size: int, case: StepCase) -> StepRecord:
    """Train `case` for its steps through the loop's `train_step` (see the module docstring)."""
    cfg = case.config()
    placement = place(cfg)
    torch.manual_seed(case.seed)
    model = placement.distribute(DeepSeekV3Model(Transformer(case.args)))
    optimizer = build_optimizer(
        model.module,
        lr=case.optim.lr,
        weight_decay=case.optim.weight_decay,
        betas=(case.optim.beta1, case.optim.beta2),
        eps=case.optim.eps,
    )
    scheduler = build_scheduler(
        optimizer,
        warmup_steps=case.optim.warmup_steps,
        total_steps=case.steps + case.timed_steps,
        min_lr_ratio=case.optim.min_lr_ratio,
    )
    dataset = PackedDataset(case.documents, case.seq_len, case.seed, pad_id=0)
    stream = placement.stream(dataset, case.loop.rows_per_micro_batch, None)
    model.module.train()
    record = StepRecord([], {}, {})
    for step in range(case.steps + case.timed_steps):
        micro = [stream.next() for _ in range(case.loop.grad_accum)]
        started = time.perf_counter()
        result = train_step(
            model, micro, optimizer, scheduler, step=step, grad_clip=case.optim.grad_clip
        )
        if step >= case.steps:
            record.seconds.append(time.perf_counter() - started)
            continue
        logged = {**result.record(), **result.violations}
        record.records.append({k: v for k, v in logged.items() if k not in _WALL_CLOCK})
        if step == 0:
            record.grads = _gradients(model)
            record.batches = [(b.inputs, b.document_ids) for b in micro]
            record.scored = [b.scored_tokens for b in micro]
            if isinstance(model, DistributedModel) and model.last_step is not None:
                record.all_to_all = model.last_step.all_to_all
                record.layers = sorted(model.last_step.expert_load)
                record.overlapped_pairs = model.last_step.overlapped_pairs
        if step == case.steps - 1:
            record.weights = _weights(model)
    return record


_WALL_CLOCK = {"seconds", "tokens_per_s"}


def loop_steps_many(
    rank: int, world_size: int, cases: dict[str, StepCase]
) -> dict[str, StepRecord]:
    """`loop_steps` for several cases in the same processes, one after the other (one
    process start for all of them; each builds its own model and mesh)."""
    return {name: loop_steps(rank, world_size, case) for name, case in cases.items()}


def _gradients(model: Any) -> dict[str, Tensor]:
    if isinstance(model, DistributedModel):
        assert model.parallel is not None
        return model.parallel.full_gradients()
    return {
        n: p.grad.detach().clone() for n, p in model.base.named_parameters() if p.grad is not None
    }


def _weights(model: Any) -> dict[str, Tensor]:
    if isinstance(model, DistributedModel):
        assert model.parallel is not None
        return model.parallel.full_state()
    return {n: t.detach().clone() for n, t in model.base.state_dict().items()}


def merge_ranks(records: Sequence[StepRecord]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(gradients, weights) of the whole model from every rank's pieces. A tensor held by
    several ranks must be bitwise the same on all of them (data-parallel replicas)."""
    grads: dict[str, Tensor] = {}
    weights: dict[str, Tensor] = {}
    for record in records:
        for into, pieces in ((grads, record.grads), (weights, record.weights)):
            for name, tensor in pieces.items():
                if name in into and not torch.equal(into[name], tensor):
                    raise AssertionError(f"{name} differs between replicas")
                into[name] = tensor
    return grads, weights


def routing_load(
    args: ModelArgs, seed: int, batches: Sequence[tuple[Tensor, Tensor]]
) -> dict[int, Tensor]:
    """The expert load the single-process model (before any step) routes `batches` to: what
    a rank's all-to-all volume is checked against."""
    from trainer.model import add_expert_load

    torch.manual_seed(seed)
    model = Transformer(args).train()
    load: dict[int, Tensor] = {}
    with torch.no_grad():
        for inputs, documents in batches:
            out = model(inputs, document_ids=documents, mtp=args.n_mtp_depth > 0)
            add_expert_load(load, out.expert_load)
    return load
