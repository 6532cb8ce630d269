"""AdamW with decoupled weight decay on matrices only, and a warm-up + cosine schedule.

    opt = build_optimizer(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95))
    sched = build_scheduler(opt, warmup_steps=20, total_steps=500, min_lr_ratio=0.1)

Separate functions, so every training loop of the project (pretraining, SFT, distillation,
GRPO) builds the same optimizer and schedule the same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR


def parameter_groups(
    named: Iterable[tuple[str, nn.Parameter]], weight_decay: float
) -> list[dict[str, object]]:
    """Matrices (linear weights, embeddings) decay; vectors (norm gains, biases) do not: decaying
    a norm gain toward 0 only shrinks the activations it scales."""
    decay: list[nn.Parameter] = []
    keep: list[nn.Parameter] = []
    for _, p in named:
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 else keep).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": keep, "weight_decay": 0.0},
    ]


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """AdamW over the model's trainable parameters (the router bias is a buffer: not here).
    `foreach=False`: one tensor at a time gives the same bits however parameters are grouped,
    which keeps resumed runs equal to uninterrupted ones."""
    groups = parameter_groups(model.named_parameters(), weight_decay)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, foreach=False)


def lr_multiplier(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """The schedule's factor on the peak lr for optimizer step `step` (0-based): linear warm-up
    over `warmup_steps` (the first step already moves, at 1/warmup of the peak), then a cosine
    from 1 to `min_lr_ratio` at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / span, 1.0)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int, min_lr_ratio: float
) -> LambdaLR:
    """A LambdaLR over `lr_multiplier`; step it once after each optimizer step. Its state is
    the step count, so a resumed schedule continues exactly."""
    return LambdaLR(
        optimizer, lambda step: lr_multiplier(step, warmup_steps, total_steps, min_lr_ratio)
    )


def clip_grad_norm(parameters: Iterable[nn.Parameter], max_norm: float) -> float:
    """The global gradient norm before clipping; clips to `max_norm` when it is > 0."""
    params = [p for p in parameters if p.grad is not None]
    if max_norm > 0:
        return float(nn.utils.clip_grad_norm_(params, max_norm, foreach=False))
    norms = torch.stack([p.grad.detach().norm() for p in params if p.grad is not None])
    return float(norms.norm())
