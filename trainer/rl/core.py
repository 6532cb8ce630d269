"""GRPO's math as pure tensor functions: scalars in, tensors out, no config objects.

Shapes: B sequences (n_prompts * G samples, the G samples of a prompt contiguous: sample j of
prompt i is row i * G + j), T response tokens (right-padded), V the vocabulary. `mask` is
(B, T), 1 on response tokens that count and 0 on padding and on samples left out of the loss
(a reward that could not be computed). Every per-token result is (B, T) and is meaningful only
where the mask is 1; reductions always go through the mask.

One GRPO loss, per token, in the form of DeepSeekMath (eq. 3) and R1:

    ratio  = exp(logp - old_logp)                          old: the policy that sampled
    pg     = -min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A)
    loss_t = pg + beta * KL_estimate(logp, ref_logp)       [* ratio: DeepSeek-V3.2, TRL]

then aggregated over tokens and sequences by a named mode (`LOSS_AGGREGATIONS`). The advantage
A of every token of a sample is its reward normalised within its group (`group_advantages`).

What varies between papers is chosen by name or scalar, never by a branch in a trainer:
- advantage scaling: `scale_by_std=True` (GRPO) or False (Dr. GRPO drops the std, which
  up-weights groups whose rewards barely differ);
- the clip range: separate `clip_low` and `clip_high` (DAPO's clip-higher: 0.2 / 0.28);
- the KL estimator (`KL_ESTIMATORS`): k1, k2, k3 (k3 is DeepSeekMath's and R1's);
- loss aggregation (`LOSS_AGGREGATIONS`): `seq-mean-token-mean` (DeepSeekMath / R1: mean over
  each sequence's tokens, then over sequences), `token-mean` (DAPO: every token of the batch
  weighs the same), `seq-mean-token-sum-norm` (Dr. GRPO: each sequence's token sum divided by a
  constant horizon, then the mean over sequences; no length bias).

Several optimisation steps per rollout batch: `old_logp` stays the sampler's log-probs for all
of them, so the ratio is exactly 1 on the first step (the sampler's log-probs equal the
training forward's, see `trainer.rl.rollout`) and measures drift from the sampling policy
after it; `minibatches` splits the batch, and a loss aggregated from a mini-batch's numerator
over the whole batch's denominator (`loss_numerator`, `loss_denominator`) makes the sum of the
mini-batch losses equal to the full-batch loss exactly, whatever the mode.

The reference model is refreshed to the current policy every K updates, as R1 does:
`reference_refresh_due(updates, every)` says when, `copy_weights_(reference, policy)` does it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

# ----------------------------------------------------------------------------------------------
# Advantages


def group_advantages(
    rewards: Tensor,
    group_size: int,
    *,
    valid: Tensor | None = None,
    scale_by_std: bool = True,
    eps: float = 1e-6,
) -> Tensor:
    """Outcome advantages normalised within each group: (B,) rewards -> (B,) float32.

    A_i = (r_i - mean_g) / (std_g + eps) with `scale_by_std` (GRPO), else r_i - mean_g
    (Dr. GRPO). Mean and std are over the group's valid members only; std is the unbiased
    (Bessel) estimate, as torch.std, verl and TRL compute it.

    valid: (B,) bool, False where the reward could not be computed. Such a sample gets
    advantage 0 and takes no part in its group's mean or std: an unknown reward is not a zero
    reward. A group with fewer than two valid members has no baseline (and no std): all its
    advantages are 0. The valid advantages of every group sum to zero (up to rounding).
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards: expected shape (B,), got {tuple(rewards.shape)}")
    if group_size < 1 or rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    if valid is None:
        valid = torch.ones_like(rewards, dtype=torch.bool)
    if valid.shape != rewards.shape:
        raise ValueError(f"valid: expected shape {tuple(rewards.shape)}, got {tuple(valid.shape)}")
    r = rewards.float().view(-1, group_size)  # (n_groups, G)
    ok = valid.view(-1, group_size)  # (n_groups, G)
    r = torch.where(ok, r, 0.0)  # an invalid reward may be NaN: keep it out of every sum
    count = ok.sum(dim=1, keepdim=True)  # (n_groups, 1)
    mean = r.sum(dim=1, keepdim=True) / count.clamp(min=1)  # (n_groups, 1)
    centred = torch.where(ok, r - mean, 0.0)  # (n_groups, G)
    if scale_by_std:
        var = centred.pow(2).sum(dim=1, keepdim=True) / (count - 1).clamp(min=1)
        spread = var.sqrt() + eps
        # A group whose rewards are all equal is centred to zeros; keep them zeros with eps 0.
        centred = centred / torch.where(spread > 0, spread, 1.0)
    has_baseline = count >= 2  # (n_groups, 1)
    return torch.where(ok & has_baseline, centred, 0.0).view(-1)


# ----------------------------------------------------------------------------------------------
# Log-probs, ratio, entropy


def token_logprobs(logits: Tensor, tokens: Tensor) -> Tensor:
    """log softmax(logits) at the chosen tokens, in fp32: (B, T, V), (B, T) -> (B, T).

    logits[:, t] must be the distribution that produced tokens[:, t] (shift before calling).
    """
    logp = logits.float().log_softmax(dim=-1)  # (B, T, V)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of each position's distribution, in fp32: (B, T, V) -> (B, T)."""
    logp = logits.float().log_softmax(dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def policy_ratio(logp: Tensor, old_logp: Tensor) -> Tensor:
    """pi / pi_old per token, (B, T): exp of the log-prob difference (exactly 1 where equal)."""
    return torch.exp(logp - old_logp)


# ----------------------------------------------------------------------------------------------
# The clipped policy objective


class PolicyLoss(NamedTuple):
    loss: Tensor  # (B, T): -min(ratio * A, clip(ratio) * A)
    ratio: Tensor  # (B, T)
    clipped: Tensor  # (B, T) bool: the clipped term is the one in force (no gradient flows)


def clipped_policy_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, clip_low: float, clip_high: float
) -> PolicyLoss:
    """PPO's clipped surrogate with separate low and high clip ranges, per token.

    logp: (B, T) log-probs of the policy being optimised (with gradient); old_logp: (B, T) of
    the policy that sampled; advantages: (B,) one per sample, or (B, T). The ratio is clipped
    to [1 - clip_low, 1 + clip_high]. A token is counted as clipped where the clip removes its
    gradient: ratio above 1 + clip_high with A > 0, or below 1 - clip_low with A < 0.
    """
    if clip_low < 0 or clip_high < 0 or clip_low >= 1:
        raise ValueError(f"clip ranges must be >= 0 (low < 1), got {clip_low}, {clip_high}")
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(-1)  # (B, 1): one advantage for every token
    advantages = advantages.to(logp.dtype)
    ratio = policy_ratio(logp, old_logp)  # (B, T)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip_low, 1.0 + clip_high) * advantages
    loss = -torch.minimum(unclipped, clipped)
    in_force = ((ratio > 1.0 + clip_high) & (advantages > 0)) | (
        (ratio < 1.0 - clip_low) & (advantages < 0)
    )
    return PolicyLoss(loss, ratio, in_force)


# ----------------------------------------------------------------------------------------------
# KL estimators against the reference model


def kl_k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """log(pi / ref): unbiased for KL(pi || ref) under samples of pi, high variance, signed."""
    return logp - ref_logp


def kl_k2(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """(log(pi / ref))^2 / 2: low variance, biased, never negative."""
    return 0.5 * (logp - ref_logp).pow(2)


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """ref/pi - log(ref/pi) - 1: unbiased and never negative (DeepSeekMath eq. 4, R1's KL)."""
    log_ref_over_pi = ref_logp - logp
    return torch.exp(log_ref_over_pi) - log_ref_over_pi - 1.0


# Schulman's three estimators of KL(pi || ref) from tokens sampled by pi, per token (B, T).
KL_ESTIMATORS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "k1": kl_k1,
    "k2": kl_k2,
    "k3": kl_k3,
}


def kl_estimate(logp: Tensor, ref_logp: Tensor, estimator: str) -> Tensor:
    """Per-token KL(pi || ref) estimate by name, (B, T); 0 wherever logp == ref_logp."""
    try:
        fn = KL_ESTIMATORS[estimator]
    except KeyError:
        raise ValueError(
            f"unknown KL estimator {estimator!r}; choose one of {sorted(KL_ESTIMATORS)}"
        ) from None
    return fn(logp, ref_logp)


# ----------------------------------------------------------------------------------------------
# The per-token GRPO loss


class GRPOTokenLoss(NamedTuple):
    loss: Tensor  # (B, T): clipped policy loss + beta * KL term
    ratio: Tensor  # (B, T): pi / pi_old
    clipped: Tensor  # (B, T) bool
    kl: Tensor  # (B, T): the KL estimate (before beta and any ratio weighting); 0 if beta is 0


def grpo_token_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    clip_low: float,
    clip_high: float,
    *,
    ref_logp: Tensor | None = None,
    beta: float = 0.0,
    kl_estimator: str = "k3",
    kl_ratio_weighted: bool = False,
) -> GRPOTokenLoss:
    """The GRPO loss of every token, (B, T), before aggregation:
    -min(r A, clip(r) A) + beta * KL, with the KL estimated by name against the reference.

    kl_ratio_weighted: multiply the KL term by the ratio pi / pi_old (DeepSeek-V3.2's unbiased
    reverse-KL gradient for tokens sampled by pi_old; TRL 1.16's default). Off, it is the
    DeepSeekMath / R1 form. The ratio is differentiable, so this changes the gradient even
    where the ratio is exactly 1.
    """
    policy = clipped_policy_loss(logp, old_logp, advantages, clip_low, clip_high)
    if beta == 0:
        return GRPOTokenLoss(policy.loss, policy.ratio, policy.clipped, torch.zeros_like(logp))
    if ref_logp is None:
        raise ValueError("beta > 0 needs the reference model's log-probs (ref_logp)")
    kl = kl_estimate(logp, ref_logp, kl_estimator)
    penalty = kl * policy.ratio if kl_ratio_weighted else kl
    return GRPOTokenLoss(policy.loss + beta * penalty, policy.ratio, policy.clipped, kl)


# ----------------------------------------------------------------------------------------------
# Loss aggregation
#
# Every mode is numerator / denominator. The numerator is a sum over sequences, so it splits
# over mini-batches; the denominator is computed once from the whole batch's mask. Dividing
# each mini-batch's numerator by the whole batch's denominator and summing the results gives
# the full-batch loss exactly (gradient accumulation without a per-mode correction).


def _sequence_token_counts(mask: Tensor) -> Tensor:
    return mask.float().sum(dim=-1)  # (B,)


def _seq_mean_token_mean_numerator(loss: Tensor, mask: Tensor, horizon: float) -> Tensor:
    m = mask.float()
    per_sequence = (loss * m).sum(dim=-1) / _sequence_token_counts(m).clamp(min=1.0)  # (B,)
    return per_sequence.sum()


def _token_mean_numerator(loss: Tensor, mask: Tensor, horizon: float) -> Tensor:
    return (loss * mask.float()).sum()


def _seq_mean_token_sum_norm_numerator(loss: Tensor, mask: Tensor, horizon: float) -> Tensor:
    return (loss * mask.float()).sum() / horizon


def _sequences(mask: Tensor) -> Tensor:
    # A sequence with no token in the loss (all padding, or a masked sample) is not counted.
    return (_sequence_token_counts(mask) > 0).sum().float()


def _tokens(mask: Tensor) -> Tensor:
    return mask.float().sum()


@dataclass(frozen=True)
class Aggregation:
    """loss = numerator(per-token loss, mask, horizon) / denominator(mask of the whole batch)."""

    numerator: Callable[[Tensor, Tensor, float], Tensor]
    denominator: Callable[[Tensor], Tensor]
    formula: str


LOSS_AGGREGATIONS: dict[str, Aggregation] = {
    "seq-mean-token-mean": Aggregation(
        _seq_mean_token_mean_numerator,
        _sequences,
        "mean over sequences of (sum_t l_it m_it / sum_t m_it)",
    ),
    "token-mean": Aggregation(
        _token_mean_numerator,
        _tokens,
        "sum_it l_it m_it / sum_it m_it",
    ),
    "seq-mean-token-sum-norm": Aggregation(
        _seq_mean_token_sum_norm_numerator,
        _sequences,
        "mean over sequences of (sum_t l_it m_it / horizon)",
    ),
}


def _aggregation(mode: str) -> Aggregation:
    try:
        return LOSS_AGGREGATIONS[mode]
    except KeyError:
        raise ValueError(
            f"unknown loss aggregation {mode!r}; choose one of {sorted(LOSS_AGGREGATIONS)}"
        ) from None


def loss_numerator(
    loss: Tensor, mask: Tensor, mode: str, *, horizon: float | None = None
) -> Tensor:
    """The part of mode's loss contributed by these sequences (a scalar that sums over
    mini-batches). loss, mask: (B, T). horizon: the constant of `seq-mean-token-sum-norm`
    (the longest response allowed); defaults to T, which is right only when every mini-batch
    is padded to the same T."""
    if loss.shape != mask.shape:
        raise ValueError(f"loss {tuple(loss.shape)} and mask {tuple(mask.shape)} differ in shape")
    h = float(mask.shape[-1] if horizon is None else horizon)
    if not h > 0 or not math.isfinite(h):
        raise ValueError(f"horizon must be a positive number, got {horizon}")
    return _aggregation(mode).numerator(loss, mask, h)


def loss_denominator(mask: Tensor, mode: str) -> Tensor:
    """What mode divides by, from the mask of the whole batch (B, T); at least 1."""
    return _aggregation(mode).denominator(mask).clamp(min=1.0)


def aggregate_loss(
    loss: Tensor, mask: Tensor, mode: str, *, horizon: float | None = None
) -> Tensor:
    """Per-token loss (B, T) -> scalar, by the named mode (`LOSS_AGGREGATIONS`)."""
    return loss_numerator(loss, mask, mode, horizon=horizon) / loss_denominator(mask, mode)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of values where mask is 1 (0 when the mask is empty): for metrics."""
    m = mask.float()
    return (values.float() * m).sum() / m.sum().clamp(min=1.0)


# ----------------------------------------------------------------------------------------------
# Several updates per rollout batch, and the reference model


def minibatches(batch_size: int, minibatch_size: int, generator: torch.Generator) -> list[Tensor]:
    """A seeded permutation of range(batch_size) cut into index tensors of minibatch_size
    (the last one shorter when it does not divide): one pass over a rollout batch."""
    if batch_size < 1 or minibatch_size < 1:
        raise ValueError(f"batch and mini-batch sizes must be >= 1: {batch_size}, {minibatch_size}")
    order = torch.randperm(batch_size, generator=generator)
    return list(order.split(minibatch_size))


def reference_refresh_due(updates: int, every: int) -> bool:
    """Whether the reference model becomes the current policy after `updates` optimizer
    updates, refreshing every `every` updates (R1 refreshes it periodically); 0 never."""
    if every < 0 or updates < 0:
        raise ValueError(f"updates and every must be >= 0, got {updates}, {every}")
    return every > 0 and updates > 0 and updates % every == 0


@torch.no_grad()
def copy_weights_(target: nn.Module, source: nn.Module) -> None:
    """Make target's parameters and buffers equal to source's, in place (same architecture).

    In place, so the target's tensors keep their identity (a decode engine or optimizer built
    on the target sees the change through version counters, not stale copies)."""
    src: dict[str, Tensor] = {**dict(source.named_parameters()), **dict(source.named_buffers())}
    dst: dict[str, Tensor] = {**dict(target.named_parameters()), **dict(target.named_buffers())}
    if src.keys() != dst.keys():
        missing, extra = sorted(src.keys() - dst.keys()), sorted(dst.keys() - src.keys())
        raise ValueError(f"models differ: only in source {missing[:5]}, only in target {extra[:5]}")
    for name, tensor in dst.items():
        if tensor.shape != src[name].shape:
            raise ValueError(f"{name}: shape {tuple(tensor.shape)} vs {tuple(src[name].shape)}")
        tensor.copy_(src[name])


__all__ = [
    "KL_ESTIMATORS",
    "LOSS_AGGREGATIONS",
    "Aggregation",
    "GRPOTokenLoss",
    "PolicyLoss",
    "aggregate_loss",
    "clipped_policy_loss",
    "copy_weights_",
    "entropy_from_logits",
    "group_advantages",
    "grpo_token_loss",
    "kl_estimate",
    "kl_k1",
    "kl_k2",
    "kl_k3",
    "loss_denominator",
    "loss_numerator",
    "masked_mean",
    "minibatches",
    "policy_ratio",
    "reference_refresh_due",
    "token_logprobs",
]
