"""The router: group-limited top-k, bias-only-for-choice, loss-free balancing, balance loss."""

from __future__ import annotations

import itertools

import pytest
import torch

from trainer.model import (
    Gate,
    MoE,
    Transformer,
    add_expert_load,
    debug,
    max_load_violation,
    routers,
    update_gate_bias,
    update_router_bias,
)
from trainer.model.model import sequence_balance_loss


def brute_force_choice(choice: list[float], n_groups: int, topk_groups: int, k: int) -> set[int]:
    """Try every set of `topk_groups` groups; keep the one whose groups have the best sum of
    top-2 scores; then the k best experts inside it."""
    per_group = len(choice) // n_groups
    groups = [choice[g * per_group : (g + 1) * per_group] for g in range(n_groups)]
    rating = [sum(sorted(g, reverse=True)[:2]) for g in groups]
    best = max(
        itertools.combinations(range(n_groups), topk_groups),
        key=lambda s: sum(rating[g] for g in s),
    )
    allowed = [e for g in best for e in range(g * per_group, (g + 1) * per_group)]
    return set(sorted(allowed, key=lambda e: choice[e], reverse=True)[:k])


def make_gate(seed: int, **overrides: object) -> Gate:
    torch.manual_seed(seed)
    gate = Gate(debug(**overrides))
    torch.nn.init.normal_(gate.weight, std=0.5)
    assert gate.bias is not None
    gate.bias.normal_(0.0, 0.3)
    return gate.eval()


@pytest.mark.parametrize(
    ("experts", "groups", "kept", "k"), [(16, 4, 2, 4), (32, 8, 3, 6), (8, 1, 1, 2)]
)
def test_group_limited_selection_equals_brute_force(
    experts: int, groups: int, kept: int, k: int
) -> None:
    gate = make_gate(
        0,
        n_routed_experts=experts,
        n_expert_groups=groups,
        n_limited_groups=kept,
        n_activated_experts=k,
    )
    x = torch.randn(200, gate.weight.shape[1])
    with torch.no_grad():
        _, indices, scores = gate(x)
    assert gate.bias is not None
    choice = (scores + gate.bias).tolist()
    for row, chosen in zip(choice, indices.tolist(), strict=True):
        assert set(chosen) == brute_force_choice(row, groups, kept, k)
    # The chosen experts of a token come from at most `kept` groups.
    assert all(len(set(r)) <= kept for r in (indices // (experts // groups)).tolist())


def test_bias_changes_selection_but_not_gating_weights() -> None:
    gate = make_gate(1)
    assert gate.bias is not None
    x = torch.randn(64, gate.weight.shape[1])
    with torch.no_grad():
        gate.bias.zero_()
        _, before, _ = gate(x)
        gate.bias[3] = 10.0  # expert 3 now wins every token's choice
        weights, indices, scores = gate(x)
    assert (indices == 3).any(dim=-1).all()
    assert not torch.equal(before, indices)
    # Weights: the chosen experts' *unbiased* sigmoid scores, normalised, times route_scale.
    picked = scores.gather(1, indices)
    expected = picked / picked.sum(-1, keepdim=True) * gate.route_scale
    assert torch.allclose(weights, expected)
    assert torch.allclose(scores, torch.sigmoid(x @ gate.weight.T))
    assert weights.sum(-1).allclose(torch.full((64,), gate.route_scale))


def test_bias_is_a_buffer_outside_autograd() -> None:
    gate = make_gate(2)
    assert "bias" in dict(gate.named_buffers())
    assert "bias" not in dict(gate.named_parameters())
    x = torch.randn(8, gate.weight.shape[1], requires_grad=True)
    weights, _, _ = gate.train()(x)
    weights.sum().backward()
    assert gate.weight.grad is not None
    assert gate.bias is not None and gate.bias.grad is None


def test_balancing_reduces_max_load_violation_on_a_skewed_stream() -> None:
    torch.manual_seed(3)
    args = debug(n_routed_experts=16, n_expert_groups=4, n_limited_groups=2, n_activated_experts=4)
    moe = MoE(args).train()
    gate = moe.gate
    torch.nn.init.normal_(gate.weight, std=0.2)
    # A skewed stream: every token leans the same way, so a few experts win nearly always.
    lean = torch.randn(args.dim) * 2

    def load_of(indices: torch.Tensor) -> torch.Tensor:
        return torch.bincount(indices.flatten(), minlength=args.n_routed_experts)

    violations = []
    with torch.no_grad():
        _, _, load = moe(torch.randn(4, 64, args.dim) + lean)  # the whole layer reports it
        violations.append(update_gate_bias(gate, load, gamma=0.01))
        for _ in range(300):
            _, indices, _ = gate(torch.randn(256, args.dim) + lean)  # the router decides
            violations.append(update_gate_bias(gate, load_of(indices), gamma=0.01))
    first, last = violations[0], sum(violations[-20:]) / 20
    print(f"MaxVio on a skewed stream: {first:.2f} at the start, {last:.2f} after 300 updates")
    assert first > 1.0
    assert last < 0.3 * first


def test_load_is_returned_not_accumulated() -> None:
    """A forward reports its own load and leaves no counter behind: running it twice (as
    activation recomputation does) cannot count a token twice."""
    torch.manual_seed(0)
    args = debug()
    model = Transformer(args).train()
    tokens = torch.randint(0, args.vocab_size, (2, 12))
    first = model(tokens, mtp=True).expert_load
    second = model(tokens, mtp=True).expert_load
    assert sorted(first) == sorted(routers(model)) == [1, 2, 3, 4]  # 2 MoE blocks + 2 MTP
    for layer, counts in first.items():
        assert torch.equal(counts, second[layer])
        tokens_seen = 2 * (12 - max(0, layer - args.n_layers + 1))
        assert int(counts.sum()) == tokens_seen * args.n_activated_experts
    total = add_expert_load(add_expert_load({}, first), second)
    assert torch.equal(total[1], 2 * first[1])
    before = {k: g.bias.clone() for k, g in routers(model).items() if g.bias is not None}
    violations = update_router_bias(model, total, gamma=0.5)
    assert sorted(violations) == [1, 2, 3, 4]
    for layer, gate in routers(model).items():
        assert gate.bias is not None
        moved = gate.bias - before[layer]
        expected = 0.5 * (total[layer].float().mean() - total[layer].float()).sign()
        assert torch.equal(moved, expected)
    with pytest.raises(KeyError, match="layer 0"):
        update_router_bias(model, {0: total[1]}, gamma=0.1)


def test_max_load_violation() -> None:
    assert max_load_violation(torch.tensor([5, 5, 5, 5])) == 0.0
    assert max_load_violation(torch.tensor([10, 0, 5, 5])) == pytest.approx(1.0)
    assert max_load_violation(torch.zeros(4)) == 0.0


def test_sequence_balance_loss_hand_computed() -> None:
    # 1 sequence, 2 tokens, 4 experts, top-1. Token 0 -> expert 0, token 1 -> expert 0.
    scores = torch.tensor([[0.8, 0.2, 0.5, 0.5], [0.6, 0.2, 0.1, 0.1]])
    indices = torch.tensor([[0], [0]])
    probs = scores / scores.sum(-1, keepdim=True)
    p0 = probs[:, 0].mean()
    f0 = 4 / (1 * 2) * 2  # E / (k T) * count
    expected = 0.01 * f0 * p0
    assert torch.allclose(sequence_balance_loss(scores, indices, 1, 0.01), expected)
    # Perfectly balanced routing with uniform scores gives exactly alpha.
    uniform = torch.full((4, 4), 0.5)
    spread = torch.tensor([[0], [1], [2], [3]])
    assert torch.allclose(sequence_balance_loss(uniform, spread, 1, 0.01), torch.tensor(0.01))


def test_padding_is_not_load() -> None:
    """With a padding mask the forward counts expert load and the balance loss over real
    tokens only: a right-padded batch reports what its sequences report when run alone."""
    torch.manual_seed(0)
    args = debug(seq_aux_alpha=0.01)
    model = Transformer(args).train()
    lengths = [9, 12, 5]
    tokens = torch.randint(0, args.vocab_size, (3, 12))
    real = torch.arange(12)[None, :] < torch.tensor(lengths)[:, None]  # (3, 12)
    padded = model(tokens, key_padding_mask=real)
    alone = [model(tokens[i : i + 1, :n]) for i, n in enumerate(lengths)]
    for layer, counts in padded.expert_load.items():
        expected = sum(out.expert_load[layer] for out in alone)
        assert torch.equal(counts, expected)
        assert int(counts.sum()) == sum(lengths) * args.n_activated_experts
    unmasked = model(tokens).expert_load
    assert int(unmasked[1].sum()) == 3 * 12 * args.n_activated_experts  # padding counted
    assert padded.aux_loss is not None
    expected_aux = sum(out.aux_loss for out in alone if out.aux_loss is not None) / 3
    assert torch.allclose(padded.aux_loss, expected_aux, atol=1e-7)
    # An all-True mask is the same as no mask.
    everything = model(tokens, key_padding_mask=torch.ones(3, 12, dtype=torch.bool))
    assert everything.aux_loss is not None and torch.allclose(
        everything.aux_loss, model(tokens).aux_loss, atol=1e-7
    )
