"""A tiny model learns a synthetic language, and with MTP both losses fall.

The language: each of V tokens has two successors, chosen at random once; a sequence walks
from a random start, taking either successor with probability 1/2. The unigram baseline is
ln V (the walk's stationary distribution is close to uniform); the best possible next-token
loss is ln 2. MTP depth 1 sees the embedding of the next token, so its floor is ln 2 as well.
"""

from __future__ import annotations

import math
import time

import pytest
import torch

from trainer.model import (
    Transformer,
    lm_loss,
    mtp_depth_losses,
    tiny,
    update_router_bias,
)

VOCAB, LENGTH, BATCH = 64, 32, 16


def sparse_bigram_language(seed: int) -> tuple[torch.Tensor, torch.Generator]:
    gen = torch.Generator().manual_seed(seed)
    successors = torch.stack([torch.randperm(VOCAB, generator=gen)[:2] for _ in range(VOCAB)])
    return successors, gen  # (V, 2)


def sample(successors: torch.Tensor, gen: torch.Generator, n: int) -> torch.Tensor:
    seq = torch.empty(n, LENGTH + 1, dtype=torch.long)
    seq[:, 0] = torch.randint(0, VOCAB, (n,), generator=gen)
    for t in range(LENGTH):
        pick = torch.randint(0, 2, (n,), generator=gen)
        seq[:, t + 1] = successors[seq[:, t], pick]
    return seq  # (n, T + 1)


def train(steps: int, seed: int = 0) -> dict[str, float]:
    torch.manual_seed(seed)
    successors, gen = sparse_bigram_language(seed)
    args = tiny(vocab_size=VOCAB, max_seq_len=LENGTH)
    model = Transformer(args)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    held_out = sample(successors, gen, 64)

    def evaluate() -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            out = model(held_out[:, :-1], mtp=True)
            main = lm_loss(out.logits, held_out[:, 1:]).item()
            mtp = mtp_depth_losses(out.mtp_logits, held_out[:, 1:])[0].item()
        model.train()
        return main, mtp

    start_main, start_mtp = evaluate()
    began = time.perf_counter()
    violations = []
    for _ in range(steps):
        seq = sample(successors, gen, BATCH)
        inputs, targets = seq[:, :-1], seq[:, 1:]
        out = model(inputs, mtp=True)
        assert out.aux_loss is not None
        loss = (
            lm_loss(out.logits, targets)
            + args.mtp_lambda * mtp_depth_losses(out.mtp_logits, targets)[0]
            + out.aux_loss
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        load = out.expert_load
        violations.append(max(update_router_bias(model, load, args.bias_update_speed).values()))
    seconds = time.perf_counter() - began
    end_main, end_mtp = evaluate()
    result = {
        "unigram": math.log(VOCAB),
        "floor": math.log(2),
        "start_main": start_main,
        "start_mtp": start_mtp,
        "main": end_main,
        "mtp": end_mtp,
        "seconds": seconds,
        "max_vio_first": violations[0],
        "max_vio_last": sum(violations[-10:]) / 10,
    }
    print(" ".join(f"{k}={v:.3f}" for k, v in result.items()))
    return result


def test_tiny_model_learns_and_both_losses_fall() -> None:
    r = train(steps=120)
    # From the unigram level to well below it, for the main head and the MTP head alike.
    assert r["start_main"] > 0.9 * r["unigram"]
    assert r["start_mtp"] > 0.9 * r["unigram"]
    assert r["main"] < 0.4 * r["unigram"]
    assert r["mtp"] < 0.4 * r["unigram"]


@pytest.mark.slow
def test_tiny_model_reaches_the_entropy_floor() -> None:
    r = train(steps=600)
    assert r["main"] < r["floor"] + 0.1
    assert r["mtp"] < r["floor"] + 0.1
