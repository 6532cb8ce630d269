"""MTP speculative decoding: the acceptance rule keeps the main model's distribution, greedy
speculative output is greedy output, and batches whose rows accept and reject independently
decode each row as if it were alone."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator

import pytest
import torch

from trainer.generate import GenerationStats, SamplingParams, generate
from trainer.model import Transformer, lm_loss, mtp_depth_losses, tiny
from trainer.speculative import accept_draft, residual_distribution, sample_from
from trainer.tokenizer import R1Tokenizer, train_tokenizer

VOCAB = 48


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------------------------
# The rule on explicit distributions


def test_accept_draft_emits_the_target_distribution() -> None:
    """Draft from q, accept/resample: the emitted token is distributed as p, for a q that
    over- and under-weights tokens and puts mass where p has none and vice versa."""
    p = torch.tensor([0.4, 0.3, 0.2, 0.1, 0.0])
    q = torch.tensor([0.1, 0.5, 0.0, 0.2, 0.2])
    R = 200_000
    gen = torch.Generator().manual_seed(0)
    u = torch.rand(R, 3, generator=gen)
    P, Q = p.expand(R, -1), q.expand(R, -1)
    draft = sample_from(Q, u[:, 0])
    accepted, token = accept_draft(P, Q, draft, u[:, 1], u[:, 2])
    freq = torch.bincount(token, minlength=5).double() / R
    sd = (p.double() * (1 - p.double()) / R).sqrt()
    assert ((freq - p.double()).abs() <= 4 * sd + 1e-12).all(), freq
    assert freq[4] == 0  # never a token the target rules out
    # Acceptance probability is sum_x min(p(x), q(x)) = 0.1 + 0.3 + 0 + 0.1 + 0 = 0.5.
    assert accepted.double().mean().item() == pytest.approx(0.5, abs=4 * math.sqrt(0.25 / R))
    assert torch.equal(token[accepted], draft[accepted])


def test_one_hot_distributions_make_the_rule_greedy() -> None:
    p = torch.eye(6)[[2, 4, 0]]  # target argmax 2, 4, 0
    q = torch.eye(6)[[2, 1, 0]]  # drafts 2, 1, 0
    draft = torch.tensor([2, 1, 0])
    zeros = torch.zeros(3)
    accepted, token = accept_draft(p, q, draft, zeros, zeros)
    assert accepted.tolist() == [True, False, True]
    assert token.tolist() == [2, 4, 0]
    assert torch.equal(
        residual_distribution(p, p), p
    )  # p == q: never rejects; still a distribution


def test_sample_from_skips_zero_probability_tokens() -> None:
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.5, 0.0]] * 4)
    u = torch.tensor([0.0, 0.4999, 0.5, 1 - 2**-24])
    assert sample_from(probs, u).tolist() == [1, 1, 3, 3]


# ----------------------------------------------------------------------------------------------
# End to end on a trained toy model


def skewed_bigram(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each token has two successors, taken with probability 0.75 and 0.25."""
    gen = torch.Generator().manual_seed(seed)
    successors = torch.stack([torch.randperm(VOCAB, generator=gen)[:2] for _ in range(VOCAB)])
    return successors, torch.tensor([0.75, 0.25])


@pytest.fixture(scope="module")
def trained() -> Transformer:
    torch.manual_seed(0)
    successors, probs = skewed_bigram(0)
    gen = torch.Generator().manual_seed(1)
    args = tiny(
        vocab_size=VOCAB,
        dim=64,
        inter_dim=128,
        n_layers=2,
        n_heads=2,
        q_lora_rank=32,
        kv_lora_rank=32,
        qk_nope_head_dim=16,
        qk_rope_head_dim=8,
        v_head_dim=16,
        moe_inter_dim=32,
        n_routed_experts=4,
        n_activated_experts=2,
        n_expert_groups=2,
        n_limited_groups=1,
        max_seq_len=128,
        seq_aux_alpha=0.0,
    )
    model = Transformer(args)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    for _ in range(70):
        seq = torch.empty(16, 25, dtype=torch.long)
        seq[:, 0] = torch.randint(0, VOCAB, (16,), generator=gen)
        for t in range(24):
            pick = torch.multinomial(probs, 16, replacement=True, generator=gen)
            seq[:, t + 1] = successors[seq[:, t], pick]
        out = model(seq[:, :-1], mtp=True)
        targets = seq[:, 1:]
        loss = lm_loss(out.logits, targets) + mtp_depth_losses(out.mtp_logits, targets)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def noisy_draft(trained: Transformer) -> Transformer:
    """The same main model with a worse MTP module: drafts are kept only some of the time."""
    model = Transformer(trained.args).eval()
    model.load_state_dict(trained.state_dict())
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for w in model.mtp[0].parameters():
            if w.dim() == 2:  # projections and experts; norms stay
                w.add_(torch.randn(w.shape, generator=gen) * w.std() * 3)
    return model


@pytest.fixture(scope="module")
def tok() -> R1Tokenizer:
    return R1Tokenizer(train_tokenizer(["toy"], vocab_size=300))


PROMPTS = [[5], [7, 3], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13], [40, 41, 42, 43, 44, 45]]
GREEDY = SamplingParams(temperature=0, max_tokens=30, ignore_eos=True, logprobs=True)


@pytest.mark.parametrize("which", ["trained", "noisy_draft"])
def test_greedy_speculative_equals_greedy(
    which: str, request: pytest.FixtureRequest, tok: R1Tokenizer
) -> None:
    model = request.getfixturevalue(which)
    plain = generate(model, tok, PROMPTS, GREEDY)
    stats = GenerationStats()
    spec = generate(model, tok, PROMPTS, GREEDY, mtp=True, stats=stats)
    for a, b in zip(plain, spec, strict=True):
        assert b[0].token_ids == a[0].token_ids
        assert a[0].logprobs is not None and b[0].logprobs is not None
        assert max(abs(x - y) for x, y in zip(a[0].logprobs, b[0].logprobs, strict=True)) < 1e-4
        assert b[0].finish_reason == "length" and b[0].completion_tokens == 30
    assert stats.accepted > 0
    # Each forward yields the draft when kept plus one token; the last forward's extra
    # tokens beyond max_tokens are dropped, so slightly fewer.
    assert 1 + stats.acceptance_rate - 0.1 < stats.tokens_per_forward <= 1 + stats.acceptance_rate
    if which == "trained":
        assert stats.acceptance_rate > 0.8
    else:
        # Rows of one batch accepted and rejected independently: the shift path ran.
        assert 0.2 < stats.acceptance_rate < 0.8


def test_speculative_rows_sample_the_same_alone_or_in_a_batch(
    noisy_draft: Transformer, tok: R1Tokenizer
) -> None:
    params = [
        SamplingParams(temperature=0.9, top_p=0.95, max_tokens=20, ignore_eos=True, seed=i, n=2)
        for i in range(len(PROMPTS))
    ]
    stats = GenerationStats()
    together = generate(noisy_draft, tok, PROMPTS, params, mtp=True, stats=stats)
    alone = generate(noisy_draft, tok, PROMPTS[2:3], params[2:3], mtp=True)
    assert [c.token_ids for c in alone[0]] == [c.token_ids for c in together[2]]
    assert 0 < stats.accepted < stats.drafted
    # Mixed greedy and sampled rows in one batch: the greedy row is still exactly greedy.
    mixed = generate(noisy_draft, tok, PROMPTS[:2], [GREEDY, params[1]], mtp=True)
    assert mixed[0][0].token_ids == generate(noisy_draft, tok, PROMPTS[:1], GREEDY)[0][0].token_ids


def exact_marginals(
    model: Transformer, prompt: list[int], T: float, depth: int
) -> list[dict[int, float]]:
    """P(token k = x) for k < depth under plain sampling at temperature T, by enumerating
    continuations (branches below 1e-5 are dropped: < 1e-3 of the mass)."""
    marginals: list[dict[int, float]] = [{} for _ in range(depth)]
    frontier = [(list(prompt), 1.0)]
    with torch.no_grad():
        for k in range(depth):
            grown = []
            for seq, mass in frontier:
                p = (model(torch.tensor([seq])).logits[0, -1] / T).softmax(-1)
                for x in (p * mass > 1e-5).nonzero().flatten().tolist():
                    marginals[k][x] = marginals[k].get(x, 0.0) + mass * float(p[x])
                    grown.append(([*seq, x], mass * float(p[x])))
            frontier = grown
    return marginals


@pytest.mark.parametrize("mtp", [False, True], ids=["plain", "speculative"])
def test_sampled_tokens_follow_the_models_distribution(
    noisy_draft: Transformer, tok: R1Tokenizer, mtp: bool
) -> None:
    """Chi-square goodness of fit of the first three tokens' marginals against the exact ones:
    speculative sampling must not change the distribution (tokens 2 and 3 come from accepted
    drafts, residual resamples and bonus tokens)."""
    T, n, depth = 1.0, 1500, 3
    exact = exact_marginals(noisy_draft, PROMPTS[1], T, depth)
    params = SamplingParams(temperature=T, max_tokens=depth, ignore_eos=True, n=n, seed=11)
    stats = GenerationStats()
    outs = generate(noisy_draft, tok, PROMPTS[1:2], params, mtp=mtp, stats=stats)
    if mtp:
        assert 0 < stats.accepted < stats.drafted
    for k in range(depth):
        counts = Counter(c.token_ids[k] for c in outs[0])
        cells = [x for x, p in exact[k].items() if p * n >= 5]
        observed = [counts[x] for x in cells] + [n - sum(counts[x] for x in cells)]
        expected = [exact[k][x] * n for x in cells] + [n - sum(exact[k][x] * n for x in cells)]
        chi2 = sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True) if e > 0)
        df = len(cells)
        assert chi2 < df + 4 * math.sqrt(2 * df) + 8, (k, chi2, df)
