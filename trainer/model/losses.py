"""Losses over the model's outputs: pure tensor functions, scalars in, no config objects."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Reduction = Literal["mean", "sum"]


def lm_loss(
    logits: Tensor, targets: Tensor, ignore_index: int = -100, reduction: Reduction = "mean"
) -> Tensor:
    """Next-token cross-entropy over the scored targets, their mean (or sum).
    logits: (B, T, V); targets: (B, T), token i + 1 at i, `ignore_index` where unscored."""
    return F.cross_entropy(
        logits.flatten(0, 1).float(),
        targets.flatten(),
        ignore_index=ignore_index,
        reduction=reduction,
    )


def mtp_targets(
    targets: Tensor, depth: int, document_ids: Tensor | None = None, ignore_index: int = -100
) -> Tensor:
    """What MTP depth d is scored against: targets[:, d:] (B, T - d), the token d + 1 places
    beyond position i. With packed rows (document_ids (B, T)), a position whose target lies
    in the next document is `ignore_index`: nothing is ever predicted across a boundary."""
    shifted = targets[:, depth:]
    if document_ids is None:
        return shifted
    same = document_ids[:, depth:] == document_ids[:, :-depth]  # (B, T - d)
    return shifted.masked_fill(~same, ignore_index)


def mtp_depth_losses(
    mtp_logits: Sequence[Tensor],
    targets: Tensor,
    ignore_index: int = -100,
    *,
    document_ids: Tensor | None = None,
    reduction: Reduction = "mean",
) -> list[Tensor]:
    """Cross-entropy of each MTP depth d: logits (B, T - d, V) against `mtp_targets` (the
    token d + 1 places beyond the next one, inside the same document)."""
    return [
        lm_loss(
            logits, mtp_targets(targets, d, document_ids, ignore_index), ignore_index, reduction
        )
        for d, logits in enumerate(mtp_logits, 1)
    ]


def mtp_loss(
    mtp_logits: Sequence[Tensor],
    targets: Tensor,
    lam: float,
    ignore_index: int = -100,
    *,
    document_ids: Tensor | None = None,
) -> Tensor:
    """L_MTP = lam / D * sum_d L_d (0 without MTP modules)."""
    losses = mtp_depth_losses(mtp_logits, targets, ignore_index, document_ids=document_ids)
    if not losses:
        return torch.zeros((), device=targets.device)
    return lam * torch.stack(losses).mean()
