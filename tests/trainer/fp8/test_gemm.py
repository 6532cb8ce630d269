"""The block-scaled GEMM: emulation against its loop reference (bit for bit), against a
dequantise-then-fp64 reference and the unquantised product, the accumulator model, and the
cuBLAS argument layouts checked by torch's own scaled_mm shape rules."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from trainer.fp8 import (
    FP8_DTYPE,
    blockwise_matmul,
    cuda_scaled_mm_args,
    dequantize_blocks,
    dequantize_tiles,
    expand_block_scale,
    quantize_blocks,
    quantize_tiles,
    scaled_matmul_emulated,
    scaled_matmul_ref,
)

ACCUMULATORS = {
    "exact_promoted": {},
    "narrow_promoted": {"accumulator_bits": 14},
    "narrow_unpromoted": {"promotion": False, "accumulator_bits": 14},
}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm())


def operands(
    m: int, n: int, k: int, seed: int, outliers: Callable[..., torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    x = outliers(m, k, seed=seed, magnitude=100.0)
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(seed + 1)) * 0.02
    return x, w


@pytest.mark.parametrize("accumulator", list(ACCUMULATORS))
@pytest.mark.parametrize("mnk", [(64, 96, 384), (33, 130, 200), (5, 7, 100)])
def test_emulation_equals_ref_bit_for_bit(
    accumulator: str, mnk: tuple[int, int, int], outliers: Callable[..., torch.Tensor]
) -> None:
    m, n, k = mnk
    x, w = operands(m, n, k, seed=sum(mnk), outliers=outliers)
    x_q, x_s = quantize_tiles(x)
    w_q, w_s = quantize_blocks(w)
    w_rows = expand_block_scale(w_s, n)
    kwargs = ACCUMULATORS[accumulator]
    fast = scaled_matmul_emulated(x_q, x_s, w_q, w_rows, **kwargs)
    spec = scaled_matmul_ref(x_q, x_s, w_q, w_rows, **kwargs)
    assert fast.dtype == torch.float32 and fast.shape == (m, n)
    assert torch.equal(fast, spec)


@pytest.mark.parametrize("mnk", [(128, 256, 512), (40, 200, 300)])
def test_emulation_against_dequantised_fp64_and_unquantised(
    mnk: tuple[int, int, int], outliers: Callable[..., torch.Tensor]
) -> None:
    m, n, k = mnk
    x, w = operands(m, n, k, seed=7, outliers=outliers)
    x_q, x_s = quantize_tiles(x)
    w_q, w_s = quantize_blocks(w)
    got = blockwise_matmul(x_q, x_s, w_q, w_s, b_blocks=True)
    # Same quantised values, dequantised per block and multiplied in fp64: only the fp32
    # rounding of the promoted partial sums separates the two.
    dequantised = dequantize_tiles(x_q, x_s).double() @ dequantize_blocks(w_q, w_s).double().T
    assert rel(got, dequantised) < 1e-6
    # Against the unquantised product: E4M3 keeps 3 mantissa bits, about 2.5% RMS error per
    # operand, so about 3.6% for a product of two; 5% leaves room.
    assert rel(got, x.double() @ w.double().T) < 0.05


def test_narrow_accumulator_error_grows_with_k_and_promotion_bounds_it() -> None:
    """The promotion ablation in small (bench/fp8.py runs K = 4096..16384): positive inputs,
    so the sums grow with K as a long dot product's do."""
    torch.manual_seed(3)
    errors: dict[str, list[float]] = {name: [] for name in ACCUMULATORS}
    for k in (512, 2048):
        x, w = torch.rand(32, k), torch.rand(32, k)
        x_q, x_s = quantize_tiles(x)
        w_q, w_s = quantize_tiles(w)
        exact = dequantize_tiles(x_q, x_s).double() @ dequantize_tiles(w_q, w_s).double().T
        for name, kwargs in ACCUMULATORS.items():
            errors[name].append(rel(scaled_matmul_emulated(x_q, x_s, w_q, w_s, **kwargs), exact))
    exact_promoted, narrow_promoted, unpromoted = (errors[n] for n in ACCUMULATORS)
    assert max(exact_promoted) < 1e-6  # fp32 promotion: accumulation error is rounding only
    # A 14-bit accumulator that is promoted every 128 never sums more than 128 products.
    assert max(narrow_promoted) < 3e-4
    assert narrow_promoted[1] < 2 * narrow_promoted[0]
    # Never promoted, its truncation error accumulates with K, far above the promoted one.
    assert unpromoted[1] > 2.5 * unpromoted[0]
    assert unpromoted[1] > 5 * narrow_promoted[1]


def test_wrong_shapes_are_refused() -> None:
    q = torch.zeros(4, 256).to(FP8_DTYPE)
    s = torch.ones(4, 2)
    with pytest.raises(AssertionError, match="share K"):
        scaled_matmul_emulated(q, s, torch.zeros(4, 128).to(FP8_DTYPE), torch.ones(4, 1))
    with pytest.raises(AssertionError, match="b_scale"):
        scaled_matmul_emulated(q, s, q, torch.ones(4, 3))
    with pytest.raises(AssertionError, match="contiguous"):
        scaled_matmul_emulated(q, s, torch.zeros(256, 4).to(FP8_DTYPE).t(), s)


@pytest.mark.parametrize("mnk", [(256, 384, 512), (200, 130, 300), (1, 128, 128)])
@pytest.mark.parametrize("b_blocks", [True, False])
def test_cuda_layouts_pass_torch_scaled_mm_checks(
    mnk: tuple[int, int, int], b_blocks: bool
) -> None:
    """The CUDA path cannot run here, but torch's meta kernel for scaled_mm applies the same
    shape and stride rules as cuBLAS's block scaling: our arguments must pass them, and
    the transposed-stride mistakes they exist to catch must not."""
    m, n, k = mnk
    x_q, x_s = quantize_tiles(torch.randn(m, k))
    w_q, w_s = quantize_blocks(torch.randn(n, k)) if b_blocks else quantize_tiles(torch.randn(n, k))
    a, b_t, scale_a, scale_b, _ = cuda_scaled_mm_args(x_q, x_s, w_q, w_s, b_blocks=b_blocks)
    assert a.shape[0] % 128 == 0 and a.shape[1] % 128 == 0 and b_t.shape[1] % 128 == 0
    assert b_t.stride(0) == 1  # column-major B
    # The padding is zero bytes, so the padded product equals the unpadded one.
    torch.testing.assert_close(a.float()[:m, :k], x_q.float(), rtol=0, atol=0)
    assert (a.float()[m:] == 0).all() and (a.float()[:, k:] == 0).all()

    recipe = F.ScalingType
    recipe_b = recipe.BlockWise128x128 if b_blocks else recipe.BlockWise1x128

    def meta(t: torch.Tensor) -> torch.Tensor:
        return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")

    out = F.scaled_mm(
        meta(a), meta(b_t), meta(scale_a), recipe.BlockWise1x128, meta(scale_b), recipe_b,
        output_dtype=torch.float32,
    )  # fmt: skip
    assert out.shape == (a.shape[0], b_t.shape[1])
    if scale_a.shape[1] > 1:  # row-major 1x128 scales are refused
        with pytest.raises(RuntimeError):
            F.scaled_mm(
                meta(a), meta(b_t), meta(scale_a.contiguous()), recipe.BlockWise1x128,
                meta(scale_b), recipe_b, output_dtype=torch.float32,
            )  # fmt: skip
