"""One training step run two ways, single-process and distributed, for comparing them.

`reference_step` is the plain single-process step on the whole global batch;
`parallel_step` is one rank's share of the same step under `ParallelDims` (run it on every
rank, e.g. through `trainer.parallel.launch.spawn`). Both start from the same seed, take the
same global batch, apply the router-bias update, and return loss, gradients, the
post-update router biases and the expert load. `merge_ranks` puts the ranks' pieces together
(each parameter comes from the rank that holds it; replicas must agree exactly) for a
comparison with the reference. The tests and `bench/pipeline.py` use these.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from trainer.model import ModelArgs, Transformer, add_expert_load, update_router_bias
from trainer.parallel.parallelize import ParallelDims, data_rank, parallelize
from trainer.parallel.pipeline import training_loss


@dataclass
class StepRecord:
    loss: float
    grads: dict[str, Tensor]
    biases: dict[str, Tensor]  # router biases after the balancing update
    load: dict[int, Tensor]  # this process's routing counts per layer (its tokens only)
    all_to_all: dict[str, int] = field(default_factory=dict)
    overlapped_pairs: int = 0
    seconds: list[float] = field(default_factory=list)  # wall time of each timed step


def reference_step(
    args: ModelArgs, seed: int, tokens: Tensor, targets: Tensor, gamma: float
) -> StepRecord:
    """The single-process step: one forward and backward over the whole global batch."""
    torch.manual_seed(seed)
    model = Transformer(args)
    out = model(tokens, mtp=args.n_mtp_depth > 0)
    assert out.aux_loss is not None
    loss = training_loss(out.logits, out.mtp_logits, out.aux_loss, targets, args.mtp_lambda)
    loss.backward()
    load = add_expert_load({}, out.expert_load)
    update_router_bias(model, load, gamma)
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return StepRecord(float(loss.detach()), grads, _biases(model), load)


def shard_loads(
    args: ModelArgs, seed: int, tokens: Tensor, n_shards: int
) -> list[dict[int, Tensor]]:
    """Per data rank, the expert load its slice of the batch produces in the single-process
    model: the routing the all-to-all volume is checked against."""
    torch.manual_seed(seed)
    model = Transformer(args)
    with torch.no_grad():
        return [
            add_expert_load({}, model(shard, mtp=args.n_mtp_depth > 0).expert_load)
            for shard in tokens.chunk(n_shards)
        ]


def parallel_step(
    rank: int,
    world_size: int,
    dims: ParallelDims,
    args: ModelArgs,
    seed: int,
    tokens: Tensor,
    targets: Tensor,
    gamma: float,
    timed_steps: int = 0,
) -> StepRecord:
    """One rank's share of the step on the global batch (every rank gets the whole batch and
    reads its own slice). With `timed_steps`, that many further steps are timed afterwards
    (the returned figures are the first step's)."""
    torch.manual_seed(seed)
    model = Transformer(args)
    pm = parallelize(model, dims)
    n = dims.data_size
    mine = data_rank(pm.mesh)
    local = (tokens.chunk(n)[mine], targets.chunk(n)[mine])
    result = pm.step(*local)
    pm.update_router_bias(result.expert_load, gamma)
    record = StepRecord(
        result.loss,
        pm.full_gradients(),
        _biases(model),
        result.expert_load,
        result.all_to_all,
        result.overlapped_pairs,
    )
    for _ in range(timed_steps):
        for param in pm.parameters():
            param.grad = None
        start = time.perf_counter()
        pm.step(*local)
        record.seconds.append(time.perf_counter() - start)
    return record


def parallel_steps(
    rank: int,
    world_size: int,
    configs: dict[str, ParallelDims],
    args: ModelArgs,
    seed: int,
    tokens: Tensor,
    targets: Tensor,
    gamma: float,
    timed_steps: int = 0,
) -> dict[str, StepRecord]:
    """`parallel_step` for several layouts in the same processes, one after the other (one
    process start for all of them; each builds its own model and mesh)."""
    return {
        name: parallel_step(rank, world_size, dims, args, seed, tokens, targets, gamma, timed_steps)
        for name, dims in configs.items()
    }


def merge_ranks(records: list[StepRecord]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(gradients, biases) of the whole model from every rank's pieces. A tensor held by
    several ranks must be bitwise the same on all of them (data-parallel replicas)."""
    grads: dict[str, Tensor] = {}
    biases: dict[str, Tensor] = {}
    for record in records:
        for into, pieces in ((grads, record.grads), (biases, record.biases)):
            for name, tensor in pieces.items():
                if name in into and not torch.equal(into[name], tensor):
                    raise AssertionError(f"{name} differs between replicas")
                into[name] = tensor
    return grads, biases


def _biases(model: Transformer) -> dict[str, Tensor]:
    return {
        n: b.detach().clone()
        for n, b in model.named_buffers()
        if n.endswith("gate.bias") and b.device.type != "meta"
    }
