"""Fp8Linear: each of its three GEMMs is the block-scaled GEMM with the tiling its
contraction needs, and the layer follows fp32 autograd within FP8 error on outlier inputs,
where per-tensor scaling does not."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from trainer.fp8 import (
    Float8Recipe,
    Fp8Linear,
    blockwise_matmul,
    quantize_blocks,
    quantize_tiles,
)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm())


def fp8_layer(weight: torch.Tensor, recipe: Float8Recipe | None = None) -> Fp8Linear:
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    linear.weight = nn.Parameter(weight.clone())
    return Fp8Linear.from_linear(linear, recipe or Float8Recipe())


def run(layer: nn.Module, x: torch.Tensor, dy: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(Y, dX, dW) of one forward and backward."""
    x = x.clone().requires_grad_()
    y = layer(x)
    y.backward(dy)
    assert x.grad is not None and layer.weight.grad is not None
    return y.detach(), x.grad, layer.weight.grad


def test_each_gemm_is_tiled_along_its_contraction(outliers: Callable[..., torch.Tensor]) -> None:
    """Forward contracts features, the input gradient contracts output features, the weight
    gradient contracts tokens: each operand is quantised in 1x128 tiles along that dimension
    (weights in 128x128 blocks), and the layer's results are exactly those GEMMs."""
    M, K, N = 300, 200, 260  # ragged everywhere
    x = outliers(M, K, seed=0)
    dy = outliers(M, N, seed=1)
    w = torch.randn(N, K) * 0.02
    y, dx, dw = run(fp8_layer(w), x, dy)

    x_q, x_s = quantize_tiles(x)  # (M, K) along K
    w_q, w_s = quantize_blocks(w)  # (N, K) in blocks
    assert torch.equal(y, blockwise_matmul(x_q, x_s, w_q, w_s, b_blocks=True))

    dy_q, dy_s = quantize_tiles(dy)  # (M, N) along N
    wt_q, wt_s = w_q.t().contiguous(), w_s.t().contiguous()  # same blocks, transposed
    assert torch.equal(dx, blockwise_matmul(dy_q, dy_s, wt_q, wt_s, b_blocks=True))

    dyt_q, dyt_s = quantize_tiles(dy.t().contiguous())  # (N, M) along tokens
    xt_q, xt_s = quantize_tiles(x.t().contiguous())  # (K, M) along tokens
    assert dyt_s.shape == (N, 3) and xt_s.shape == (K, 3)  # 300 tokens: 3 tiles of 128x1
    assert torch.equal(dw, blockwise_matmul(dyt_q, dyt_s, xt_q, xt_s, b_blocks=False))


def test_follows_fp32_autograd_where_tensorwise_does_not(
    outliers: Callable[..., torch.Tensor],
) -> None:
    M, K, N = 512, 384, 256
    x = outliers(M, K, seed=2)  # two outlier channels, two massive tokens (x1e4)
    dy = outliers(M, N, seed=3)  # gradients with massive tokens too
    w = torch.randn(N, K, generator=torch.Generator().manual_seed(4)) * 0.02
    linear = nn.Linear(K, N, bias=False)
    linear.weight = nn.Parameter(w.clone())
    ref = run(linear, x, dy)
    block = run(fp8_layer(w), x, dy)
    tensor = run(fp8_layer(w, Float8Recipe.named("tensorwise")), x, dy)

    # E4M3 keeps about 2.5% RMS per operand, about 3.6% for a product of two: allow 5%.
    for got, want in zip(block, ref, strict=True):
        assert rel(got, want) < 0.05

    # Where per-tensor scaling fails: ordinary tokens of Y (their inputs squeezed into E4M3's
    # subnormals by the massive tokens' scale) and ordinary input channels of dW.
    quiet_tokens = x.abs().amax(dim=1) < 1e3
    quiet_channels = x.abs().amax(dim=0) < 1e3 * 30
    for pick in (
        lambda t: t[0][quiet_tokens],
        lambda t: t[2][:, quiet_channels],
    ):
        err_block, err_tensor = rel(pick(block), pick(ref)), rel(pick(tensor), pick(ref))
        assert err_block < 0.05
        assert err_tensor > 4 * err_block, (err_tensor, err_block)


@pytest.mark.parametrize("name", ["deepseek_v3_h800", "no_promotion"])
def test_ablation_recipes_run_the_layer(name: str) -> None:
    torch.manual_seed(5)
    x, dy, w = torch.randn(64, 256), torch.randn(64, 128), torch.randn(128, 256) * 0.02
    exact = run(fp8_layer(w), x, dy)
    narrow = run(fp8_layer(w, Float8Recipe.named(name)), x, dy)
    for got, want in zip(narrow, exact, strict=True):
        assert 0 < rel(got, want) < 1e-2  # K = 256: the narrow accumulator costs little


def test_shapes_bias_dtype_and_no_grad() -> None:
    torch.manual_seed(6)
    linear = nn.Linear(160, 200, bias=True)
    layer = Fp8Linear.from_linear(linear, Float8Recipe())
    assert layer.weight is linear.weight and layer.bias is linear.bias
    x = torch.randn(3, 5, 160)
    y = layer(x)
    assert y.shape == (3, 5, 200)
    assert rel(y, linear(x)) < 0.05
    with torch.no_grad():  # the inference path skips autograd but computes the same
        assert torch.equal(layer(x), y.detach())
    y.sum().backward()
    assert linear.bias.grad is not None and torch.equal(linear.bias.grad, torch.full((200,), 15.0))
    assert layer(torch.randn(0, 160)).shape == (0, 200)
    y16 = layer(x.bfloat16())
    assert y16.dtype == torch.bfloat16
    assert "fp8 e4m3 blockwise 128" in repr(layer)
