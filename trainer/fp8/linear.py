"""`Fp8Linear`: an nn.Linear whose three GEMMs run in FP8 with fine-grained scales.

Which dimension each GEMM contracts over decides how its operands are tiled, since a scale
can only be factored out of a sum whose terms share it:

    forward     Y  = X W^T    (M, N)   contracts K (features): X in 1x128 tiles along K,
                                       W in 128x128 blocks
    input grad  dX = dY W     (M, K)   contracts N: dY in 1x128 tiles along N, W^T in
                                       128x128 blocks, which are W's blocks transposed
                                       with the same scales: W is quantised once, reused
    weight grad dW = dY^T X   (N, K)   contracts M (tokens): dY^T and X^T each in 1x128
                                       tiles along M, i.e. 128x1 tiles of dY and X

M counts tokens (every leading dimension flattened). X is quantised twice in the forward,
along K for Y and along M for dW; only the second, in FP8, is kept for the backward, as V3
caches the linear layers' inputs in FP8. The weight parameter stays what it was (the FP32
master weight in training); its quantised copy is made afresh every forward.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.fp8.gemm import blockwise_matmul, cuda_blockwise_available
from trainer.fp8.quant import cdiv, quantize_blocks, quantize_tensorwise, quantize_tiles
from trainer.fp8.recipe import Float8Recipe


def quantize_operand(x: Tensor, recipe: Float8Recipe, *, blocks: bool) -> tuple[Tensor, Tensor]:
    """x (R, K) as the recipe scales a GEMM operand that contracts over K: tile scales
    (R, Kc), or block scales (ceil(R / block), Kc) when `blocks` (weights)."""
    if recipe.scaling == "blockwise":
        return quantize_blocks(x, recipe.block) if blocks else quantize_tiles(x, recipe.block)
    q, scale = quantize_tensorwise(x)
    rows = cdiv(x.shape[0], recipe.block) if blocks else x.shape[0]
    return q, scale.expand(rows, cdiv(x.shape[1], recipe.block)).contiguous()


def _matmul(
    a_q: Tensor,
    a_scale: Tensor,
    b_q: Tensor,
    b_scale: Tensor,
    recipe: Float8Recipe,
    *,
    b_blocks: bool,
) -> Tensor:
    use_cuda_kernel = (
        recipe.kernel == "auto"
        and recipe.block == 128
        and recipe.promotion
        and recipe.accumulator_bits is None
        and cuda_blockwise_available(a_q.device)
    )
    return blockwise_matmul(
        a_q,
        a_scale,
        b_q,
        b_scale,
        b_blocks=b_blocks,
        block=recipe.block,
        promotion=recipe.promotion,
        accumulator_bits=recipe.accumulator_bits,
        use_cuda_kernel=use_cuda_kernel,
    )


def fp8_linear_forward(x: Tensor, weight: Tensor, recipe: Float8Recipe) -> Tensor:
    """Y = X W^T in FP8, no autograd: x (M, K), weight (N, K) -> (M, N) in x's dtype."""
    x_q, x_scale = quantize_operand(x, recipe, blocks=False)  # tiles along K
    w_q, w_scale = quantize_operand(weight, recipe, blocks=True)  # 128x128 blocks
    return _matmul(x_q, x_scale, w_q, w_scale, recipe, b_blocks=True).to(x.dtype)


class _Fp8LinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, recipe: Float8Recipe) -> Tensor:
        """x (M, K) contiguous, weight (N, K) -> Y (M, N)."""
        x_q, x_scale = quantize_operand(x, recipe, blocks=False)  # (M, K), (M, Kc)
        w_q, w_scale = quantize_operand(weight, recipe, blocks=True)  # (N, K), (Nb, Kc)
        y = _matmul(x_q, x_scale, w_q, w_scale, recipe, b_blocks=True)  # (M, N)
        # For dW the contraction runs over tokens: X^T (K, M) in tiles along M.
        xt_q, xt_scale = quantize_operand(x.t().contiguous(), recipe, blocks=False)
        ctx.save_for_backward(w_q, w_scale, xt_q, xt_scale)
        ctx.recipe = recipe
        ctx.dtypes = (x.dtype, weight.dtype)
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        w_q, w_scale, xt_q, xt_scale = ctx.saved_tensors
        recipe: Float8Recipe = ctx.recipe
        x_dtype, w_dtype = ctx.dtypes
        dy = dy.contiguous()  # (M, N)
        dx = dw = None
        if ctx.needs_input_grad[0]:
            dy_q, dy_scale = quantize_operand(dy, recipe, blocks=False)  # tiles along N
            wt_q = w_q.t().contiguous()  # (K, N): W^T, contraction over N
            wt_scale = w_scale.t().contiguous()  # (Kb, Nb): the same blocks, transposed
            dx = _matmul(dy_q, dy_scale, wt_q, wt_scale, recipe, b_blocks=True).to(x_dtype)
        if ctx.needs_input_grad[1]:
            dyt_q, dyt_scale = quantize_operand(dy.t().contiguous(), recipe, blocks=False)
            dw = _matmul(dyt_q, dyt_scale, xt_q, xt_scale, recipe, b_blocks=False).to(w_dtype)
        return dx, dw, None


def fp8_linear(x: Tensor, weight: Tensor, bias: Tensor | None, recipe: Float8Recipe) -> Tensor:
    """F.linear with its GEMMs in FP8: x (..., K), weight (N, K) -> (..., N)."""
    assert x.shape[-1] == weight.shape[1], f"x {tuple(x.shape)} vs weight {tuple(weight.shape)}"
    x2d = x.reshape(-1, x.shape[-1]).contiguous()  # (M, K)
    if x2d.shape[0] == 0:
        return F.linear(x, weight, bias)  # nothing to quantise
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        y = _Fp8LinearFunction.apply(x2d, weight, recipe)
    else:
        y = fp8_linear_forward(x2d, weight, recipe)
    if bias is not None:
        y = y + bias.to(y.dtype)  # outside the GEMM, in the activations' precision
    return y.view(*x.shape[:-1], weight.shape[0])


class Fp8Linear(nn.Linear):
    """nn.Linear with FP8 GEMMs. Holds the same parameters under the same names, so
    state_dicts, checkpoints and optimizers see no difference."""

    recipe: Float8Recipe

    @classmethod
    def from_linear(cls, linear: nn.Linear, recipe: Float8Recipe) -> Fp8Linear:
        with torch.device("meta"):  # allocate nothing: the original's parameters move over
            new = cls(linear.in_features, linear.out_features, bias=False)
        new.weight = linear.weight
        new.bias = linear.bias
        new.recipe = recipe
        new.train(linear.training)
        return new

    def forward(self, x: Tensor) -> Tensor:
        return fp8_linear(x, self.weight, self.bias, self.recipe)

    def extra_repr(self) -> str:
        r = self.recipe
        accumulate = "exact" if r.accumulator_bits is None else f"{r.accumulator_bits}-bit"
        promote = f"promote every {r.block}" if r.promotion else "no promotion"
        return f"{super().extra_repr()}, fp8 e4m3 {r.scaling} {r.block}, {accumulate}, {promote}"
