"""trainer.rl.core against hand-computed values and the formulas it documents."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainer.rl.core import (
    KL_ESTIMATORS,
    LOSS_AGGREGATIONS,
    aggregate_loss,
    clipped_policy_loss,
    copy_weights_,
    entropy_from_logits,
    group_advantages,
    grpo_token_loss,
    kl_estimate,
    loss_denominator,
    loss_numerator,
    masked_mean,
    minibatches,
    policy_ratio,
    reference_refresh_due,
    token_logprobs,
)

# ----------------------------------------------------------------------------------------------
# Advantages


def test_advantages_by_hand() -> None:
    # Group 1: rewards 1, 0, 0, 1 -> mean 0.5, unbiased std sqrt(1/3) = 0.57735.
    # Group 2: 2, 2, 2, 2 -> all advantages 0.
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    a = group_advantages(rewards, 4, eps=0.0)
    s = math.sqrt(1 / 3)
    expected = torch.tensor([0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s, 0, 0, 0, 0])
    torch.testing.assert_close(a, expected)
    # Dr. GRPO: no std, just the centred reward.
    b = group_advantages(rewards, 4, scale_by_std=False)
    torch.testing.assert_close(b, torch.tensor([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]))


def test_advantages_eps_in_the_denominator() -> None:
    a = group_advantages(torch.tensor([3.0, 1.0]), 2, eps=0.5)
    # mean 2, unbiased std sqrt(2) -> (1 / (sqrt 2 + 0.5), -1 / (...))
    d = math.sqrt(2) + 0.5
    torch.testing.assert_close(a, torch.tensor([1 / d, -1 / d]))


@pytest.mark.parametrize("scale", [True, False])
def test_advantages_have_zero_group_mean(scale: bool) -> None:
    g = torch.Generator().manual_seed(0)
    rewards = torch.rand(6 * 8, generator=g) * 3
    valid = torch.rand(6 * 8, generator=g) > 0.2
    a = group_advantages(rewards, 8, valid=valid, scale_by_std=scale)
    sums = torch.where(valid, a, 0.0).view(6, 8).sum(dim=1)
    torch.testing.assert_close(sums, torch.zeros(6), atol=1e-5, rtol=0)
    if scale:  # each group with >= 2 distinct valid rewards has unit (unbiased) std
        for grp, ok in zip(a.view(6, 8), valid.view(6, 8), strict=True):
            assert grp[ok].std().item() == pytest.approx(1.0, abs=1e-4)


def test_invalid_rewards_are_masked_not_zero() -> None:
    # The NaN reward could not be computed: it must not pull the mean down as a 0 would.
    rewards = torch.tensor([1.0, float("nan"), 0.0, 1.0])
    valid = torch.tensor([True, False, True, True])
    a = group_advantages(rewards, 4, valid=valid, scale_by_std=False)
    mean = 2 / 3
    torch.testing.assert_close(a, torch.tensor([1 - mean, 0.0, -mean, 1 - mean]))
    # Counting it as a zero would have given a different baseline (0.5): not what we do.
    assert a[0].item() != pytest.approx(0.5)
    assert torch.isfinite(a).all()


def test_group_without_baseline_gets_zero() -> None:
    rewards = torch.tensor([5.0, 0.0, 1.0, 2.0])
    valid = torch.tensor([True, False, True, True])
    a = group_advantages(rewards, 2, valid=valid)
    assert a[:2].tolist() == [0.0, 0.0]  # one valid member: no baseline
    assert a[2].item() < 0 < a[3].item()


def test_advantage_shape_errors() -> None:
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages(torch.zeros(4), 3)
    with pytest.raises(ValueError, match="shape"):
        group_advantages(torch.zeros(2, 2), 2)


# ----------------------------------------------------------------------------------------------
# Ratio and the clipped objective


def test_ratio_is_exactly_one_before_an_update() -> None:
    logp = torch.randn(4, 7, dtype=torch.float32)
    ratio = policy_ratio(logp, logp.clone())
    assert torch.equal(ratio, torch.ones_like(ratio))
    out = clipped_policy_loss(logp, logp.clone(), torch.tensor([1.0, -1.0, 0.5, 0.0]), 0.2, 0.28)
    assert torch.equal(out.ratio, torch.ones_like(ratio))
    assert not out.clipped.any()
    # With ratio 1 the loss is -A on every token.
    torch.testing.assert_close(out.loss, -torch.tensor([1.0, -1.0, 0.5, 0.0])[:, None].expand(4, 7))


def test_clipped_objective_by_hand() -> None:
    # Four tokens, ratios 1.5, 0.5, 1.5, 0.5; advantages +1, +1, -1, -1; clip 0.2 / 0.3.
    old = torch.zeros(1, 4)
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.5, 0.5]]))
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    out = clipped_policy_loss(logp, old, adv, clip_low=0.2, clip_high=0.3)
    # -min(r A, clip(r) A): +A: -min(1.5, 1.3) = -1.3; -min(0.5, 0.8) = -0.5
    #                       -A: -min(-1.5, -1.3) = 1.5; -min(-0.5, -0.8) = 0.8
    torch.testing.assert_close(out.loss, torch.tensor([[-1.3, -0.5, 1.5, 0.8]]))
    assert out.clipped.tolist() == [[True, False, False, True]]


def test_clip_ranges_are_separate() -> None:
    old = torch.zeros(1, 2)
    logp = torch.log(torch.tensor([[1.25, 0.85]]))
    adv = torch.tensor([1.0, 1.0])[:1]
    # High range 0.3 leaves 1.25 alone; low range 0.1 clips nothing for A > 0.
    out = clipped_policy_loss(logp, old, adv, clip_low=0.1, clip_high=0.3)
    torch.testing.assert_close(out.loss, torch.tensor([[-1.25, -0.85]]))
    # High range 0.2 clips 1.25 to 1.2.
    out = clipped_policy_loss(logp, old, adv, clip_low=0.1, clip_high=0.2)
    torch.testing.assert_close(out.loss, torch.tensor([[-1.2, -0.85]]))


def test_clipped_tokens_carry_no_gradient() -> None:
    old = torch.zeros(1, 3)
    logp = torch.log(torch.tensor([[1.5, 1.0, 0.5]])).requires_grad_()
    out = clipped_policy_loss(logp, old, torch.tensor([1.0]), 0.2, 0.2)
    out.loss.sum().backward()
    assert logp.grad is not None
    # d(-r A)/d logp = -r A where unclipped; 0 where clipped (token 0, ratio 1.5 > 1.2).
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, -1.0, -0.5]]))


def test_gradient_at_ratio_one_is_the_policy_gradient() -> None:
    # On the first update the objective's gradient is -A * grad log pi (REINFORCE with A).
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    out = clipped_policy_loss(logp, logp.detach(), torch.tensor([0.7]), 0.2, 0.2)
    out.loss.sum().backward()
    assert logp.grad is not None
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.7, -0.7]]))


# ----------------------------------------------------------------------------------------------
# KL estimators


@pytest.mark.parametrize("name", sorted(KL_ESTIMATORS))
def test_kl_is_zero_when_policy_equals_reference(name: str) -> None:
    logp = torch.randn(3, 5)
    assert torch.equal(kl_estimate(logp, logp.clone(), name), torch.zeros(3, 5))


def test_kl_estimators_by_hand() -> None:
    logp = torch.tensor([math.log(0.5)])
    ref = torch.tensor([math.log(0.25)])
    d = math.log(2.0)  # log(pi / ref)
    assert kl_estimate(logp, ref, "k1").item() == pytest.approx(d)
    assert kl_estimate(logp, ref, "k2").item() == pytest.approx(0.5 * d * d)
    # ref/pi - log(ref/pi) - 1 = 0.5 + ln 2 - 1
    assert kl_estimate(logp, ref, "k3").item() == pytest.approx(0.5 + d - 1)


def test_kl_estimators_estimate_the_kl() -> None:
    # Samples from pi: the means of k1 and k3 converge to KL(pi || ref); k3 is never negative.
    pi = torch.tensor([0.6, 0.3, 0.1])
    ref = torch.tensor([0.2, 0.5, 0.3])
    exact = (pi * (pi / ref).log()).sum().item()
    g = torch.Generator().manual_seed(0)
    tokens = torch.multinomial(pi, 200_000, replacement=True, generator=g)
    logp, ref_logp = pi.log()[tokens], ref.log()[tokens]
    assert kl_estimate(logp, ref_logp, "k1").mean().item() == pytest.approx(exact, abs=0.01)
    k3 = kl_estimate(logp, ref_logp, "k3")
    assert k3.mean().item() == pytest.approx(exact, abs=0.01)
    assert (k3 >= 0).all()
    assert (kl_estimate(logp, ref_logp, "k2") >= 0).all()


def test_unknown_names_are_refused() -> None:
    with pytest.raises(ValueError, match="k3"):
        kl_estimate(torch.zeros(1), torch.zeros(1), "k4")
    with pytest.raises(ValueError, match="token-mean"):
        aggregate_loss(torch.zeros(1, 1), torch.ones(1, 1), "mean")


# ----------------------------------------------------------------------------------------------
# Loss aggregation

LOSS = torch.tensor([[1.0, 2.0, 3.0, 9.0], [4.0, 9.0, 9.0, 9.0], [9.0, 9.0, 9.0, 9.0]])
MASK = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])  # the third sample is masked out


def test_seq_mean_token_mean_by_hand() -> None:
    # Sequence means 2 and 4; the empty third sequence is not counted: (2 + 4) / 2.
    assert aggregate_loss(LOSS, MASK, "seq-mean-token-mean").item() == pytest.approx(3.0)


def test_token_mean_by_hand() -> None:
    # (1 + 2 + 3 + 4) / 4 tokens
    assert aggregate_loss(LOSS, MASK, "token-mean").item() == pytest.approx(2.5)


def test_seq_mean_token_sum_norm_by_hand() -> None:
    # Sums 6 and 4, each over the horizon 8, averaged over the 2 sequences: (0.75 + 0.5) / 2.
    got = aggregate_loss(LOSS, MASK, "seq-mean-token-sum-norm", horizon=8)
    assert got.item() == pytest.approx(0.625)
    # Horizon defaults to T = 4.
    assert aggregate_loss(LOSS, MASK, "seq-mean-token-sum-norm").item() == pytest.approx(1.25)


@pytest.mark.parametrize("mode", sorted(LOSS_AGGREGATIONS))
def test_aggregations_match_their_formulas(mode: str) -> None:
    g = torch.Generator().manual_seed(1)
    loss = torch.randn(6, 9, generator=g)
    mask = (torch.rand(6, 9, generator=g) > 0.3).long()
    mask[2] = 0
    rows = [i for i in range(6) if mask[i].sum() > 0]
    if mode == "seq-mean-token-mean":
        per = [(loss[i] * mask[i]).sum() / mask[i].sum() for i in rows]
        expected = sum(per) / len(rows)
    elif mode == "token-mean":
        expected = (loss * mask).sum() / mask.sum()
    else:
        expected = sum((loss[i] * mask[i]).sum() / 12.0 for i in rows) / len(rows)
    got = aggregate_loss(loss, mask, mode, horizon=12.0)
    assert got.item() == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize("mode", sorted(LOSS_AGGREGATIONS))
def test_masked_tokens_are_ignored(mode: str) -> None:
    g = torch.Generator().manual_seed(2)
    loss = torch.randn(4, 6, generator=g)
    mask = (torch.rand(4, 6, generator=g) > 0.4).long()
    poisoned = torch.where(mask.bool(), loss, torch.full_like(loss, 1e6))
    assert aggregate_loss(poisoned, mask, mode).item() == pytest.approx(
        aggregate_loss(loss, mask, mode).item()
    )
    # No gradient reaches masked positions.
    leaf = loss.clone().requires_grad_()
    aggregate_loss(leaf, mask, mode).backward()
    assert leaf.grad is not None
    assert (leaf.grad[mask == 0] == 0).all()


@pytest.mark.parametrize("mode", sorted(LOSS_AGGREGATIONS))
def test_minibatch_numerators_sum_to_the_full_loss(mode: str) -> None:
    g = torch.Generator().manual_seed(3)
    loss = torch.randn(10, 5, generator=g)
    mask = (torch.rand(10, 5, generator=g) > 0.3).long()
    full = aggregate_loss(loss, mask, mode, horizon=5)
    denominator = loss_denominator(mask, mode)
    parts = [
        loss_numerator(loss[idx], mask[idx], mode, horizon=5) / denominator
        for idx in minibatches(10, 3, torch.Generator().manual_seed(0))
    ]
    assert sum(parts).item() == pytest.approx(full.item(), rel=1e-6)


def test_empty_mask_gives_zero_not_nan() -> None:
    for mode in LOSS_AGGREGATIONS:
        assert aggregate_loss(torch.ones(2, 3), torch.zeros(2, 3), mode).item() == 0.0
    assert masked_mean(torch.ones(2), torch.zeros(2)).item() == 0.0


def test_one_full_grpo_loss_by_hand() -> None:
    # Two samples of one prompt, rewards 1 and 0: centred +-0.5, unbiased std sqrt(1/2), so
    # advantages +-0.5 / sqrt(1/2) with eps 0; first
    # update (ratio 1), k3 KL with beta 0.5 against a reference 0.1 nats below on every token.
    rewards = torch.tensor([1.0, 0.0])
    adv = group_advantages(rewards, 2, eps=0.0)
    a = 0.5 / math.sqrt(0.5)
    torch.testing.assert_close(adv, torch.tensor([a, -a]))
    logp = torch.full((2, 3), -1.0)
    ref = logp - 0.1
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    pg = clipped_policy_loss(logp, logp.clone(), adv, 0.2, 0.2).loss
    kl = kl_estimate(logp, ref, "k3")
    k3 = math.exp(-0.1) + 0.1 - 1
    loss = aggregate_loss(pg + 0.5 * kl, mask, "seq-mean-token-mean")
    assert loss.item() == pytest.approx(((-a + 0.5 * k3) + (a + 0.5 * k3)) / 2, rel=1e-4)


# ----------------------------------------------------------------------------------------------
# Log-probs, entropy, mini-batches, the reference model


def test_token_logprobs_and_entropy() -> None:
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [1.0, 1e-30, 1e-30]]]))
    lp = token_logprobs(logits, torch.tensor([[1, 0]]))
    torch.testing.assert_close(lp, torch.tensor([[math.log(0.25), 0.0]]))
    h = entropy_from_logits(logits)
    torch.testing.assert_close(h, torch.tensor([[1.5 * math.log(2), 0.0]]), atol=1e-6, rtol=0)


def test_minibatches_cover_the_batch_once() -> None:
    parts = minibatches(10, 4, torch.Generator().manual_seed(5))
    assert [len(p) for p in parts] == [4, 4, 2]
    assert sorted(torch.cat(parts).tolist()) == list(range(10))
    again = minibatches(10, 4, torch.Generator().manual_seed(5))
    assert all(torch.equal(a, b) for a, b in zip(parts, again, strict=True))


def test_reference_refresh_schedule() -> None:
    due = [u for u in range(0, 13) if reference_refresh_due(u, 4)]
    assert due == [4, 8, 12]
    assert not any(reference_refresh_due(u, 0) for u in range(10))


def test_copy_weights_in_place() -> None:
    torch.manual_seed(0)
    policy = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    reference = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    before = reference[0].weight
    policy[1].running_mean += 1.0  # a buffer must follow too
    copy_weights_(reference, policy)
    assert reference[0].weight is before  # same tensor, new values
    for (_, a), (_, b) in zip(
        reference.state_dict().items(), policy.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="differ"):
        copy_weights_(nn.Linear(3, 4), policy)


def test_grpo_token_loss_composes_the_terms() -> None:
    logp = torch.log(torch.tensor([[0.5, 0.25]])).requires_grad_()
    old = torch.log(torch.tensor([[0.25, 0.25]]))
    ref = torch.log(torch.tensor([[0.5, 0.5]]))
    adv = torch.tensor([1.0])
    plain = grpo_token_loss(logp, old, adv, 0.2, 0.28)
    assert torch.equal(plain.kl, torch.zeros(1, 2))
    # Ratio 2 is clipped to 1.28 (A > 0); ratio 1 stays.
    torch.testing.assert_close(plain.loss, torch.tensor([[-1.28, -1.0]]))
    k3 = kl_estimate(logp.detach(), ref, "k3")
    with_kl = grpo_token_loss(logp, old, adv, 0.2, 0.28, ref_logp=ref, beta=0.1)
    torch.testing.assert_close(with_kl.loss, plain.loss + 0.1 * k3)
    weighted = grpo_token_loss(
        logp, old, adv, 0.2, 0.28, ref_logp=ref, beta=0.1, kl_ratio_weighted=True
    )
    torch.testing.assert_close(weighted.loss, plain.loss + 0.1 * k3 * torch.tensor([[2.0, 1.0]]))
    # Where the ratio is exactly 1 the values agree, but the weighted gradient differs.
    (g1,) = torch.autograd.grad(with_kl.loss[0, 1], logp)
    (g2,) = torch.autograd.grad(weighted.loss[0, 1], logp)
    assert g1[0, 1].item() != pytest.approx(g2[0, 1].item())
    with pytest.raises(ValueError, match="ref_logp"):
        grpo_token_loss(logp, old, adv, 0.2, 0.2, beta=0.1)
