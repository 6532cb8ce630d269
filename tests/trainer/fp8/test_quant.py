"""E4M3 quantisation: round trips, scale shapes and values, ragged edges, the accumulator model."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from trainer.fp8 import (
    E4M3_MAX,
    FP8_DTYPE,
    dequantize_blocks,
    dequantize_tiles,
    expand_block_scale,
    quantize_blocks,
    quantize_tensorwise,
    quantize_tiles,
    truncate_to_bits,
)

# RNE to 3 mantissa bits: at most 2^-4 relative error per normal value.
E4M3_REL_STEP = 2.0**-4


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("shape", [(256, 384), (7, 200), (130, 129), (1, 1)])
def test_tiles_round_trip_and_scale_shape(shape: tuple[int, int]) -> None:
    torch.manual_seed(0)
    x = torch.randn(shape) * torch.logspace(-3, 3, shape[0])[:, None]  # rows of any size
    q, scale = quantize_tiles(x)
    assert q.dtype == FP8_DTYPE and q.shape == x.shape
    assert scale.dtype == torch.float32 and scale.shape == (shape[0], -(-shape[1] // 128))
    back = dequantize_tiles(q, scale)
    # Each tile is scaled to its own maximum, so every value is a normal E4M3 number unless
    # it is 2^9 times below its tile's maximum: the error is relative, row by row.
    assert ((back - x).abs() <= E4M3_REL_STEP * x.abs() + 2.0**-9 * scale.max()).all()
    assert rel(back, x) < 0.04
    # The scale is the online absolute maximum over 448: the largest value hits 448 exactly.
    tiles = torch.nn.functional.pad(x, (0, -shape[1] % 128)).view(shape[0], -1, 128)
    torch.testing.assert_close(scale, tiles.abs().amax(-1) / E4M3_MAX, rtol=0, atol=0)
    padded_q = torch.nn.functional.pad(q.float(), (0, -shape[1] % 128)).view(shape[0], -1, 128)
    assert (padded_q.abs().amax(-1) == E4M3_MAX).all()


@pytest.mark.parametrize("shape", [(256, 384), (200, 130), (260, 300)])
def test_blocks_round_trip_and_scale_shape(shape: tuple[int, int]) -> None:
    torch.manual_seed(1)
    w = torch.randn(shape) * 0.02
    w[:128, :128] *= 1000  # one hot block must not cost the others their precision
    q, scale = quantize_blocks(w)
    assert q.shape == w.shape and scale.shape == (-(-shape[0] // 128), -(-shape[1] // 128))
    back = dequantize_blocks(q, scale)
    assert rel(back[128:], w[128:]) < 0.04 and rel(back[:, 128:], w[:, 128:]) < 0.04
    # Every row of a block row shares the block's scales.
    assert torch.equal(expand_block_scale(scale, shape[0])[::128], scale)


def test_zero_tile_and_saturation() -> None:
    x = torch.zeros(2, 256)
    x[1, 130] = 3.0
    q, scale = quantize_tiles(x)
    assert torch.isfinite(scale).all() and (q[0].float() == 0).all()
    assert dequantize_tiles(q, scale)[1, 130] == 3.0  # the maximum is always exact
    # The cast saturates at 448 (E4M3 has no infinity): no NaN from a rounding overshoot.
    assert (
        torch.tensor([448.2, -1e6]).clamp(-E4M3_MAX, E4M3_MAX).to(FP8_DTYPE).float().abs() == 448
    ).all()


def test_tensorwise_loses_small_rows_that_tiles_keep(outliers: Callable[..., torch.Tensor]) -> None:
    """Massive-activation tokens set the per-tensor scale: the other tokens drop into E4M3's
    subnormal range. Per-tile scales give each token its own range."""
    x = outliers(64, 256, seed=2)
    q_t, s_t = quantize_tensorwise(x)
    q_b, s_b = quantize_tiles(x)
    quiet = x.abs().amax(dim=1) < 1e3  # every token but the two massive ones
    err_tensor = rel((q_t.float() * s_t)[quiet], x[quiet])
    err_tiles = rel(dequantize_tiles(q_b, s_b)[quiet], x[quiet])
    assert err_tiles < 0.04
    assert err_tensor > 5 * err_tiles


def test_truncate_to_bits() -> None:
    x = torch.tensor([1.0, 1.0 + 2**-13, 1.0 + 2**-14, -(1.0 + 2**-14), 3 * 2.0**-30, 0.0])
    got = truncate_to_bits(x.double(), 14)  # 14 significant bits: ulp of 1.0 is 2^-13
    want = torch.tensor([1.0, 1.0 + 2**-13, 1.0, -1.0, 3 * 2.0**-30, 0.0], dtype=torch.float64)
    assert torch.equal(got, want)
    y = torch.randn(1000, dtype=torch.float64)
    t = truncate_to_bits(y, 14)
    assert (t.abs() <= y.abs()).all()  # toward zero
    assert ((y - t).abs() < y.abs() * 2.0**-13).all()
    assert torch.equal(truncate_to_bits(t, 14), t)  # idempotent
