"""Auxiliary-loss-free load balancing (DeepSeek-V3, section 2.1.2), applied between steps.

Each router keeps a per-expert bias b_i that is added to the scores only when choosing
experts. After a step, every overloaded expert's bias goes down by gamma and every
underloaded one's goes up by gamma (a sign step toward the mean load). Gradients never see
the bias, so balancing does not fight the language-modelling loss the way an auxiliary loss does.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from trainer.model.model import Gate


def max_load_violation(load: Tensor) -> float:
    """MaxVio = (max_i load_i - mean load) / mean load; 0 when perfectly balanced."""
    load = load.float()
    mean = load.mean()
    if mean <= 0:
        return 0.0
    return float((load.max() - mean) / mean)


def expert_load(model: nn.Module) -> dict[str, Tensor]:
    """Tokens routed to each expert since the last bias update, per router (by module name)."""
    return {
        name: module.tokens_per_expert.clone()
        for name, module in model.named_modules()
        if isinstance(module, Gate)
    }


@torch.no_grad()
def update_router_bias(
    model: nn.Module,
    gamma: float,
    *,
    reduce: Callable[[Tensor], Tensor] | None = None,
) -> dict[str, float]:
    """Apply the sign update b_i += gamma * sign(mean load - load_i) to every router and reset
    the counts. Returns each router's MaxVio over the window just closed, for logging.

    reduce: sums the counts over data-parallel ranks (e.g. an all-reduce) so that every rank
    applies the same update; the model knows nothing of ranks.
    """
    violations: dict[str, float] = {}
    for name, gate in model.named_modules():
        if not isinstance(gate, Gate):
            continue
        load = gate.tokens_per_expert
        if reduce is not None:
            load = reduce(load.clone())
        if int(load.sum()) == 0:
            continue
        violations[name] = max_load_violation(load)
        if gate.bias is not None:
            error = load.float().mean() - load.float()
            gate.bias += gamma * error.sign().to(gate.bias.dtype)
        gate.tokens_per_expert.zero_()
    return violations
