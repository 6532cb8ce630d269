"""MTP: shapes and alignment, and step-wise (speculative-decoding) use equals the training pass."""

from __future__ import annotations

import torch

from trainer.model import KVCache, Transformer, debug, lm_loss, mtp_depth_losses, mtp_loss


def test_mtp_logits_shapes_and_loss_alignment() -> None:
    torch.manual_seed(0)
    args = debug()
    model = Transformer(args)
    tokens = torch.randint(0, args.vocab_size, (2, 17))
    out = model(tokens[:, :-1], mtp=True)
    assert out.logits.shape == (2, 16, args.vocab_size)
    assert [t.shape for t in out.mtp_logits] == [(2, 15, args.vocab_size), (2, 14, args.vocab_size)]
    targets = tokens[:, 1:]
    depth = mtp_depth_losses(out.mtp_logits, targets)
    assert torch.allclose(mtp_loss(out.mtp_logits, targets, 0.3), 0.3 * (depth[0] + depth[1]) / 2)
    # No MTP at inference: same main logits, no MTP compute.
    assert model(tokens[:, :-1]).mtp_logits == []
    assert torch.allclose(
        lm_loss(out.logits, targets), lm_loss(model(tokens[:, :-1]).logits, targets)
    )
    assert out.aux_loss is not None and out.aux_loss > 0  # training mode, seq_aux_alpha > 0


def test_mtp_stepwise_with_cache_equals_training_pass() -> None:
    torch.manual_seed(1)
    args = debug(init_std=0.08)
    model = Transformer(args).eval()
    tokens = torch.randint(0, args.vocab_size, (1, 12))
    with torch.no_grad():
        full = model(tokens, mtp=True)
        cache = KVCache.allocate(args, batch_size=1, max_len=12, mtp=True)
        # Speculative-decoding style: the main model has seen tokens 0..i; depth 1 drafts
        # token i + 2 from the hidden state at i and the token at i + 1.
        h = model(tokens[:, :6], cache=cache).hidden
        _, first, _, _ = model.forward_mtp(h[:, :5], tokens[:, 1:6], depth=1, cache=cache)
        steps = [first]
        for i in range(5, 11):
            h = model(tokens[:, i : i + 1], start_pos=i, cache=cache).hidden
            _, logits, _, _ = model.forward_mtp(
                h, tokens[:, i + 1 : i + 2], depth=1, start_pos=i, cache=cache
            )
            steps.append(logits)
    stepped = torch.cat(steps, dim=1)
    assert (stepped - full.mtp_logits[0]).abs().max() < 1e-5
