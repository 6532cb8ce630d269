"""Auxiliary-loss-free load balancing (DeepSeek-V3, section 2.1.2), applied between steps.

Each router keeps a per-expert bias b_i that is added to the scores only when choosing
experts. After a step, every overloaded expert's bias goes down by gamma and every
underloaded one's goes up by gamma (a sign step toward the mean load). Gradients never see
the bias, so balancing does not fight the language-modelling loss the way an auxiliary loss does.

Load statistics are explicit: a training forward returns the tokens each MoE layer sent to
each expert (`ModelOutput.expert_load`, keyed by layer id); the loop sums them over the
micro-batches of a step (`add_expert_load`) and hands the total to `update_router_bias`.
Nothing is counted as a side effect, so activation recomputation or sampling from the
training model cannot count a token twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import cast

import torch
from torch import Tensor, nn

from trainer.model.model import Block, Gate, MoE, MTPModule, Transformer


def max_load_violation(load: Tensor) -> float:
    """MaxVio = (max_i load_i - mean load) / mean load; 0 when perfectly balanced."""
    load = load.float()
    mean = load.mean()
    if mean <= 0:
        return 0.0
    return float((load.max() - mean) / mean)


def routers(model: Transformer) -> dict[int, Gate]:
    """Every router of the model by layer id (blocks 0..n_layers-1, MTP module k at
    n_layers + k): the keys of `ModelOutput.expert_load`."""
    gates: dict[int, Gate] = {}
    blocks = [*model.layers, *(cast(MTPModule, m).block for m in model.mtp)]
    for layer, block in enumerate(blocks):
        ffn = cast(Block, block).ffn
        if isinstance(ffn, MoE):
            gates[layer] = ffn.gate
    return gates


def add_expert_load(total: dict[int, Tensor], load: Mapping[int, Tensor]) -> dict[int, Tensor]:
    """Sum one forward's expert load into `total` (in place; returned for chaining)."""
    for layer, counts in load.items():
        counts = counts.detach()
        total[layer] = total[layer] + counts if layer in total else counts.clone()
    return total


@torch.no_grad()
def update_gate_bias(gate: Gate, load: Tensor, gamma: float) -> float:
    """b_i += gamma * sign(mean load - load_i) for one router; returns its MaxVio."""
    if gate.bias is not None:
        error = load.float().mean() - load.float()
        gate.bias += gamma * error.sign().to(gate.bias.dtype)
    return max_load_violation(load)


@torch.no_grad()
def update_router_bias(
    model: nn.Module,
    load: Mapping[int, Tensor],
    gamma: float,
    *,
    reduce: Callable[[Tensor], Tensor] | None = None,
) -> dict[int, float]:
    """Apply the sign update to every router that routed tokens in `load` (layer id -> (E,)
    counts, summed over the step's forwards). Returns each router's MaxVio over the step,
    for logging.

    reduce: sums the counts over data-parallel ranks (e.g. an all-reduce) so that every rank
    applies the same update; the model knows nothing of ranks.
    """
    if not isinstance(model, Transformer):
        raise TypeError(f"update_router_bias needs a Transformer, got {type(model).__name__}")
    gates = routers(model)
    violations: dict[int, float] = {}
    for layer, counts in sorted(load.items()):
        if layer not in gates:
            raise KeyError(f"expert load for layer {layer}, which has no router")
        if reduce is not None:
            counts = reduce(counts.clone())
        if int(counts.sum()) == 0:
            continue
        violations[layer] = update_gate_bias(gates[layer], counts, gamma)
    return violations
