"""MLA: the absorbed path equals the naive one; cached decoding equals recomputing."""

from __future__ import annotations

import pytest
import torch

from trainer.model import Block, KVCache, Transformer, debug, v3_671b
from trainer.model.model import rope_inv_freq


def model_and_tokens(seed: int, batch: int, length: int) -> tuple[Transformer, torch.Tensor]:
    torch.manual_seed(seed)
    args = debug(init_std=0.08)
    model = Transformer(args).eval()
    tokens = torch.randint(0, args.vocab_size, (batch, length))
    return model, tokens


def test_absorbed_equals_naive() -> None:
    model, tokens = model_and_tokens(0, batch=2, length=80)  # beyond YaRN's original 64
    with torch.no_grad():
        naive = model(tokens, absorb=False)
        absorbed = model(tokens, absorb=True)
        block = model.layers[1]
        assert isinstance(block, Block)
        attn = block.attn
        x = torch.randn(2, 80, model.args.dim)
        rope = model.rotary(0, 80)
        single = (attn(x, rope, None, absorb=False) - attn(x, rope, None, absorb=True)).abs().max()
    diff = (naive.logits - absorbed.logits).abs().max().item()
    print(f"absorbed vs naive: logits {diff:.2e}, one MLA layer {single:.2e}")
    assert single < 1e-5
    assert diff < 1e-5


def test_cached_decoding_equals_full_recompute() -> None:
    model, tokens = model_and_tokens(1, batch=2, length=40)
    args = model.args
    with torch.no_grad():
        full = model(tokens).logits  # (B, T, V)
        cache = KVCache.allocate(args, batch_size=2, max_len=48)
        prefill = 13
        steps = [model(tokens[:, :prefill], cache=cache).logits]
        for pos in range(prefill, tokens.shape[1]):
            steps.append(model(tokens[:, pos : pos + 1], start_pos=pos, cache=cache).logits)
        cached = torch.cat(steps, dim=1)
        # Chunked continuation (e.g. verifying several speculative tokens at once).
        cache2 = KVCache.allocate(args, batch_size=2, max_len=48)
        model(tokens[:, :20], cache=cache2)
        chunk = model(tokens[:, 20:], start_pos=20, cache=cache2).logits
    diff = (cached - full).abs().max().item()
    print(f"cached decoding vs full recompute: {diff:.2e}")
    assert diff < 1e-5
    assert (chunk - full[:, 20:]).abs().max() < 1e-5
    # Only the latent and the rope key per token per layer were written.
    assert cache.kv.shape == (args.n_layers, 2, 48, args.kv_lora_rank)
    assert cache.pe.shape == (args.n_layers, 2, 48, args.qk_rope_head_dim)
    assert cache.kv[:, :, 40:].abs().sum() == 0


def test_left_padded_batch_matches_unpadded_rows() -> None:
    model, tokens = model_and_tokens(2, batch=1, length=20)
    pad = 5
    padded = torch.cat([torch.zeros(1, pad, dtype=torch.long), tokens], dim=1)
    batch = torch.cat([padded, torch.cat([tokens, tokens[:, :pad]], dim=1)])  # (2, 25)
    valid = torch.ones(2, 25, dtype=torch.bool)
    valid[0, :pad] = False
    with torch.no_grad():
        alone = model(tokens).logits
        both = model(batch, key_padding_mask=valid).logits
        # The same batch decoded with the cache, one token at a time after the prompt.
        cache = KVCache.allocate(model.args, batch_size=2, max_len=25)
        out = [model(batch[:, :15], cache=cache, key_padding_mask=valid[:, :15]).logits]
        for pos in range(15, 25):
            out.append(
                model(
                    batch[:, pos : pos + 1],
                    start_pos=pos,
                    cache=cache,
                    key_padding_mask=valid[:, : pos + 1],
                ).logits
            )
        stepped = torch.cat(out, dim=1)
    assert torch.isfinite(both).all()
    assert (both[0, pad:] - alone[0]).abs().max() < 1e-5
    assert (both[1, :20] - alone[0]).abs().max() < 1e-5
    assert (stepped[0, pad:] - alone[0]).abs().max() < 1e-5


def test_cache_holds_576_values_per_token_per_layer_at_v3_shape() -> None:
    args = v3_671b()
    cache = KVCache.allocate(args, batch_size=1, max_len=8, device="meta", dtype=torch.bfloat16)
    per_layer_values = cache.kv.shape[-1] + cache.pe.shape[-1]
    mha_values = 2 * args.n_heads * args.qk_nope_head_dim
    assert per_layer_values == 576
    assert mha_values == 32768
    assert cache.bytes_per_token() == 61 * 576 * 2


@pytest.mark.parametrize("factor", [1.0, 40.0])
def test_rope_frequencies_match_transformers(factor: float) -> None:
    from transformers import DeepseekV3Config
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    args = v3_671b(rope_factor=factor)
    rope = {
        "rope_type": "yarn",
        "rope_theta": 10000.0,
        "factor": factor,
        "beta_fast": 32,
        "beta_slow": 1,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
        "original_max_position_embeddings": 4096,
    }
    ours = rope_inv_freq(args)
    if factor == 1.0:
        theirs = 1.0 / 10000.0 ** (torch.arange(0, 64, 2).float() / 64)
    else:
        theirs, attention_factor = ROPE_INIT_FUNCTIONS["yarn"](
            DeepseekV3Config(rope_parameters=rope)
        )
        assert attention_factor == 1.0
    assert torch.allclose(ours, theirs, rtol=1e-6, atol=0)


def test_bf16_forward_and_cached_decoding_follow_fp32() -> None:
    # The GPU dtype, checked on the CPU at a small size (bf16 matmuls are slow here).
    model, tokens = model_and_tokens(3, batch=2, length=16)
    half = Transformer(model.args).to(torch.bfloat16).eval()
    half.load_state_dict(model.state_dict())
    with torch.no_grad():
        reference = model(tokens, mtp=True)
        out = half(tokens, mtp=True)
        cache = KVCache.allocate(model.args, batch_size=2, max_len=16, dtype=torch.bfloat16)
        half(tokens[:, :8], cache=cache)
        step = half(tokens[:, 8:9], start_pos=8, cache=cache).logits
    assert out.logits.dtype == torch.bfloat16
    # Rotation angles stay fp32 in a bf16 model: bf16 frequencies drift a turn by ~1500.
    assert half.rotary(4000, 2)[0].dtype == torch.float32

    def error(a: torch.Tensor, b: torch.Tensor) -> float:
        # Mean, not max: a router near a tie may pick another expert in bf16 for one token.
        return ((a.float() - b).abs().mean() / b.abs().mean()).item()

    errors = [
        error(out.logits, reference.logits),
        error(out.mtp_logits[0], reference.mtp_logits[0]),
        error(step, reference.logits[:, 8:9]),
    ]
    print("bf16 vs fp32 mean relative logit error (main, mtp, cached step):", errors)
    assert max(errors) < 0.05
