"""Losses over the model's outputs: pure tensor functions, scalars in, no config objects."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def lm_loss(logits: Tensor, targets: Tensor, ignore_index: int = -100) -> Tensor:
    """Mean next-token cross-entropy. logits: (B, T, V); targets: (B, T), token i + 1 at i."""
    return F.cross_entropy(
        logits.flatten(0, 1).float(), targets.flatten(), ignore_index=ignore_index
    )


def mtp_depth_losses(
    mtp_logits: Sequence[Tensor], targets: Tensor, ignore_index: int = -100
) -> list[Tensor]:
    """Cross-entropy of each MTP depth d: logits (B, T - d, V) against targets[:, d:]
    (the token d + 1 places beyond the next one)."""
    return [lm_loss(logits, targets[:, d:], ignore_index) for d, logits in enumerate(mtp_logits, 1)]


def mtp_loss(
    mtp_logits: Sequence[Tensor], targets: Tensor, lam: float, ignore_index: int = -100
) -> Tensor:
    """L_MTP = lam / D * sum_d L_d (0 without MTP modules)."""
    losses = mtp_depth_losses(mtp_logits, targets, ignore_index)
    if not losses:
        return torch.zeros((), device=targets.device)
    return lam * torch.stack(losses).mean()
