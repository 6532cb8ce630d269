"""trainer.rl.rollout: the sampler's log-probs are the training forward's, and rollouts see the
policy as it is after every update."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
import torch

from trainer.generate import DecodeEngine, SamplingParams, generate
from trainer.model import Gate, ModelArgs, Transformer, debug, tiny
from trainer.rl.core import clipped_policy_loss, group_advantages
from trainer.rl.rollout import PolicySampler, collate, logprob_gap, response_logprobs
from trainer.tokenizer import R1Tokenizer, train_tokenizer

WORDS = [
    *("the", "cat", "sat", "on", "a", "mat", "and", "then", "ran"),
    *("far", "away", "from", "home", "to", "see", "what", "was", "there"),
]
# The check the issue asks for: sampler and training forward within 1e-5 in fp32.
LOGPROB_TOL = 1e-5


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tok() -> R1Tokenizer:
    texts = [" ".join(WORDS[i:] + WORDS[:i]) + f" {i}+{i}={2 * i}." for i in range(len(WORDS))]
    return R1Tokenizer(train_tokenizer(texts * 4, vocab_size=320))


def make_model(args: ModelArgs, seed: int = 0) -> Transformer:
    """A model whose logits are spread (init 0.08) and whose routing depends on the router
    bias, so that a wrong MoE path or a stale bias would show."""
    torch.manual_seed(seed)
    model = Transformer(args)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, Gate) and module.bias is not None:
                module.bias.uniform_(-0.05, 0.05)
    return model


@pytest.fixture(scope="module")
def prompts(tok: R1Tokenizer) -> list[list[int]]:
    ids = tok.encode(" ".join(WORDS * 6))
    # Ragged, and long enough in total that the prefill dispatches tokens to experts (the
    # engine's sparse MoE path) while decoding runs its dense path.
    return [ids[:1], ids[3:9], ids[10:55], ids[5:30]]


@pytest.mark.parametrize(
    ("args", "mtp"),
    [
        (tiny(init_std=0.08), False),
        (tiny(init_std=0.08), True),
        (debug(init_std=0.08), False),
    ],
    ids=["tiny", "tiny-mtp-speculative", "debug-yarn"],
)
def test_sampler_logprobs_equal_the_training_forward(
    tok: R1Tokenizer, prompts: list[list[int]], args: ModelArgs, mtp: bool
) -> None:
    args = args.replace(vocab_size=max(args.vocab_size, tok.vocab_size), max_seq_len=256)
    model = make_model(args)
    sampler = PolicySampler(model, tok, mtp=mtp)
    params = SamplingParams(temperature=1.0, max_tokens=24, seed=0, ignore_eos=True)
    batch = sampler.rollout(prompts, 4, params)
    assert batch.response_mask.sum() == 4 * 4 * 24
    for mode in ("eval", "train"):
        getattr(model, mode)()
        with torch.no_grad():
            logp, _, _ = response_logprobs(
                model, batch.tokens, batch.attention_mask, batch.prompt_len
            )
        gap = (logp - batch.sampler_logprobs).abs()[batch.response_mask]
        assert gap.max().item() < LOGPROB_TOL, (mode, gap.max().item())
        # So GRPO's ratio against the sampling policy is 1 before the first update.
        rewards = torch.arange(batch.batch_size, dtype=torch.float32) % 3
        adv = group_advantages(rewards, batch.group_size)
        ratio = clipped_policy_loss(logp, batch.sampler_logprobs, adv, 0.2, 0.2).ratio
        assert (ratio - 1).abs()[batch.response_mask].max().item() < 2 * LOGPROB_TOL
    assert logprob_gap(model, batch) < LOGPROB_TOL


def test_rollout_layout(tok: R1Tokenizer, prompts: list[list[int]]) -> None:
    model = make_model(tiny(vocab_size=tok.vocab_size, init_std=0.08, max_seq_len=256)).eval()
    params = SamplingParams(temperature=1.0, max_tokens=12, seed=1, logprobs=True, n=3)
    samples = generate(model, tok, prompts, params)
    batch = collate(prompts, samples, tok.pad_id)
    P = max(len(p) for p in prompts)
    assert batch.prompt_len == P and batch.group_size == 3 and batch.batch_size == 12
    for row in range(batch.batch_size):
        prompt, c = prompts[row // 3], samples[row // 3][row % 3]
        assert batch.completions[row] is c
        n = len(c.token_ids)
        assert batch.tokens[row, P - len(prompt) : P].tolist() == prompt
        assert batch.response_tokens[row, :n].tolist() == c.token_ids
        assert (batch.response_tokens[row, n:] == tok.pad_id).all()
        assert batch.attention_mask[row].sum().item() == len(prompt) + n
        assert not batch.attention_mask[row, : P - len(prompt)].any()
        assert batch.response_mask[row].sum().item() == n
        assert c.logprobs is not None
        assert batch.sampler_logprobs[row, :n].tolist() == pytest.approx(c.logprobs)
        assert (batch.sampler_logprobs[row, n:] == 0).all()
    with pytest.raises(ValueError, match="log-probs"):
        collate(prompts[:1], generate(model, tok, prompts[:1], SamplingParams(max_tokens=2)), 2)


def test_rollouts_see_the_policy_after_every_update(
    tok: R1Tokenizer, prompts: list[list[int]]
) -> None:
    model = make_model(tiny(vocab_size=tok.vocab_size, init_std=0.08, max_seq_len=256))
    sampler = PolicySampler(model, tok)
    params = SamplingParams(temperature=1.0, max_tokens=16, seed=5, ignore_eos=True)
    first = sampler.rollout(prompts[:2], 4, params)
    again = sampler.rollout(prompts[:2], 4, params)
    assert sampler.rebuilds == 1  # unchanged weights: the engine is reused
    assert torch.equal(first.tokens, again.tokens)

    # One optimizer step that makes the sampled tokens likelier (in place, as AdamW does).
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    logp, _, _ = response_logprobs(model, first.tokens, first.attention_mask, first.prompt_len)
    (-(logp * first.response_mask).sum()).backward()
    optimizer.step()

    after = sampler.rollout(prompts[:2], 4, params)
    assert sampler.rebuilds == 2  # the step made the engine stale: rebuilt once
    assert not torch.equal(first.sampler_logprobs, after.sampler_logprobs)
    # What a fresh engine built from the updated model samples, token for token.
    fresh_params = dataclasses.replace(params, n=4, logprobs=True)
    fresh = generate(model, tok, prompts[:2], fresh_params, engine=DecodeEngine(model))
    assert [c.token_ids for c in after.completions] == [c.token_ids for s in fresh for c in s]
    assert logprob_gap(model, after) < LOGPROB_TOL
    assert sampler.rebuild_seconds > 0
