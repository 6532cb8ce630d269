"""Block-scaled FP8 GEMM, out = A @ B^T, the way DeepSeek-V3 runs it, and its CPU emulation.

Both operands come quantised along the contraction dimension K (see `quant.py`): A (M, K) in
1 x B tiles with scales (M, Kc), B (N, K) either in 1 x B tiles, scales (N, Kc), or in B x B
blocks, scales (ceil(N / B), Kc); Kc = ceil(K / B), B = 128. Within one K-chunk of B elements
every product shares one scale pair, so the chunk is summed unscaled by the Tensor Cores and
then *promoted*: multiplied by a_scale * b_scale and added to an FP32 accumulator on the CUDA
cores. That promotion every 128 elements is also what keeps a long K accurate, since the
Tensor Core accumulator itself is narrow (the V3 paper: about 14 bits on H800).

Three implementations of the same function:

- `scaled_matmul_emulated`: the CPU path, exact emulation with batched matmuls over K-chunks.
  Products of two E4M3 values are multiples of 2^-18 below 2^18, so a chunk's sum needs at
  most 43 of fp64's 53 bits (B = 128; any B up to 2^17 fits) and is exact whatever the
  order: each chunk is summed exactly (fp64 bmm), rounded once to fp32, scaled and added to
  the fp32 accumulator chunk by chunk in K order.
  `accumulator_bits` replaces the exact in-chunk sum by our model of the narrow accumulator;
  `promotion=False` keeps the whole K in it (no promotion).
- `scaled_matmul_ref`: plain loops over chunks (and MMA steps), the specification; the
  emulation must equal it bit for bit.
- `scaled_matmul_cuda`: cuBLAS's block-scaled FP8 GEMM through `torch.nn.functional.scaled_mm`
  (Hopper, SM 9.0, CUDA >= 12.9): (1x128, 128x128) for the forward and input-gradient GEMMs,
  (1x128, 1x128) for the weight gradient.

The limited accumulator model (ours; the paper gives only "around 14 bits"): an MMA step adds
the exact sum of `mma_k` = 32 products (Hopper's FP8 WGMMA consumes K = 32 per instruction) to
the accumulator, and the accumulator keeps `accumulator_bits` significant bits, truncating the
rest toward zero, as an aligning fixed-width adder that shifts out low bits does. Truncation
biases every step the same way, which is why the error grows with K.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from trainer.fp8.quant import FP8_DTYPE, cdiv, expand_block_scale, pad_to_multiple, truncate_to_bits

MMA_K = 32  # products one Hopper FP8 WGMMA instruction sums per step


def fp8_to_float64(q: Tensor) -> Tensor:
    """E4M3 values as fp64, exactly, through a 256-entry table: several times faster on the
    CPU than the element-wise cast."""
    table = torch.arange(256, dtype=torch.uint8, device=q.device).view(FP8_DTYPE).double()
    return torch.take(table, q.view(torch.uint8).long())


def _check_operands(a_q: Tensor, a_scale: Tensor, b_q: Tensor, b_scale: Tensor, block: int) -> None:
    assert a_q.dtype == FP8_DTYPE and b_q.dtype == FP8_DTYPE, (a_q.dtype, b_q.dtype)
    assert a_q.dim() == 2 and b_q.dim() == 2 and a_q.shape[1] == b_q.shape[1], (
        f"A (M, K) and B (N, K) must share K: {tuple(a_q.shape)}, {tuple(b_q.shape)}"
    )
    assert a_q.is_contiguous() and b_q.is_contiguous(), "operands must be contiguous"
    kc = cdiv(a_q.shape[1], block)
    assert a_scale.shape == (a_q.shape[0], kc), f"a_scale {tuple(a_scale.shape)} != (M, {kc})"
    assert b_scale.shape == (b_q.shape[0], kc), f"b_scale {tuple(b_scale.shape)} != (N, {kc})"
    assert a_scale.dtype == torch.float32 and b_scale.dtype == torch.float32


def _check_accumulator(
    block: int, promotion: bool, accumulator_bits: int | None, mma_k: int
) -> None:
    if accumulator_bits is None:
        assert promotion, "without promotion, say how narrow the accumulator is (accumulator_bits)"
    else:
        assert accumulator_bits >= 1 and block % mma_k == 0, (accumulator_bits, block, mma_k)


def scaled_matmul_emulated(
    a_q: Tensor,
    a_scale: Tensor,
    b_q: Tensor,
    b_scale: Tensor,
    *,
    block: int = 128,
    promotion: bool = True,
    accumulator_bits: int | None = None,
    mma_k: int = MMA_K,
) -> Tensor:
    """A @ B^T from tile-quantised operands: a_q (M, K), a_scale (M, Kc), b_q (N, K),
    b_scale (N, Kc) (expand block scales with `expand_block_scale`). Returns (M, N) fp32."""
    _check_operands(a_q, a_scale, b_q, b_scale, block)
    _check_accumulator(block, promotion, accumulator_bits, mma_k)
    M, N = a_q.shape[0], b_q.shape[0]
    # An MMA step is the unit of exact summation: one whole chunk when the in-chunk sum is
    # exact, `mma_k` products when the narrow accumulator is modelled.
    step = block if accumulator_bits is None else mma_k
    a = pad_to_multiple(fp8_to_float64(a_q), block, 1).view(M, -1, step).transpose(0, 1)
    b = pad_to_multiple(fp8_to_float64(b_q), block, 1).view(N, -1, step).permute(1, 2, 0)
    # a: (S, M, step), b: (S, step, N), S = number of MMA steps along K
    step_sums = torch.bmm(a, b)  # (S, M, N), exact
    n_chunks = a_scale.shape[1]

    if not promotion:
        assert accumulator_bits is not None
        steps_per_chunk = block // step
        acc = torch.zeros(M, N, dtype=torch.float64, device=a_q.device)
        for c in range(n_chunks):
            # The scale is folded into each step: with one scale pair per chunk there is no
            # other place for it when nothing is promoted. Same quantised inputs, only the
            # accumulator differs from the promoted path.
            scale = (a_scale[:, c, None] * b_scale[None, :, c]).double()  # (M, N)
            for s in range(c * steps_per_chunk, (c + 1) * steps_per_chunk):
                acc = truncate_to_bits(acc + step_sums[s] * scale, accumulator_bits)
        return acc.float()

    if accumulator_bits is None:
        partials = step_sums.float()  # (Kc, M, N): exact chunk sums, rounded once
    else:
        per_chunk = step_sums.view(n_chunks, block // step, M, N)  # (Kc, steps, M, N)
        inner = torch.zeros(n_chunks, M, N, dtype=torch.float64, device=a_q.device)
        for s in range(block // step):  # all chunks at once, MMA step by MMA step
            inner = truncate_to_bits(inner + per_chunk[:, s], accumulator_bits)
        partials = inner.float()
    out = torch.zeros(M, N, dtype=torch.float32, device=a_q.device)
    for c in range(n_chunks):  # promotion, in K order
        out = out + partials[c] * (a_scale[:, c, None] * b_scale[None, :, c])
    return out


def scaled_matmul_ref(
    a_q: Tensor,
    a_scale: Tensor,
    b_q: Tensor,
    b_scale: Tensor,
    *,
    block: int = 128,
    promotion: bool = True,
    accumulator_bits: int | None = None,
    mma_k: int = MMA_K,
) -> Tensor:
    """The specification of `scaled_matmul_emulated`, one chunk and one MMA step at a time."""
    _check_operands(a_q, a_scale, b_q, b_scale, block)
    _check_accumulator(block, promotion, accumulator_bits, mma_k)
    M, K = a_q.shape
    N = b_q.shape[0]
    device = a_q.device
    out = torch.zeros(M, N, dtype=torch.float32, device=device)
    narrow = torch.zeros(M, N, dtype=torch.float64, device=device)  # Tensor Core accumulator
    for c in range(cdiv(K, block)):
        scale = a_scale[:, c, None] * b_scale[None, :, c]  # (M, N) fp32
        if promotion:
            narrow = torch.zeros(M, N, dtype=torch.float64, device=device)
        for k0 in range(c * block, min(K, (c + 1) * block), mma_k):
            k1 = min(K, k0 + mma_k)
            a_step, b_step = a_q[:, k0:k1].double(), b_q[:, k0:k1].double()
            step_sum = a_step @ b_step.T  # (M, N), exact
            if accumulator_bits is None:
                narrow = narrow + step_sum
            elif promotion:
                narrow = truncate_to_bits(narrow + step_sum, accumulator_bits)
            else:
                narrow = truncate_to_bits(narrow + step_sum * scale.double(), accumulator_bits)
        if promotion:
            out = out + narrow.float() * scale
    return out if promotion else narrow.float()


# ----------------------------------------------------------------------------------------------
# CUDA: cuBLAS block-scaled FP8 through torch.nn.functional.scaled_mm


def cuda_blockwise_available(device: torch.device) -> bool:
    """cuBLAS's DeepSeek-style block scaling runs on SM 9.0 (H100/H200/H800) only."""
    return (
        device.type == "cuda"
        and hasattr(F, "scaled_mm")
        and torch.cuda.get_device_capability(device) == (9, 0)
    )


def _pad_fp8(q: Tensor, rows: int, cols: int) -> Tensor:
    # Through uint8: zero bytes are +0 in E4M3, and padding ops are not defined for float8.
    out = torch.zeros(rows, cols, dtype=torch.uint8, device=q.device)
    out[: q.shape[0], : q.shape[1]] = q.view(torch.uint8)
    return out.view(FP8_DTYPE)


def cuda_scaled_mm_args(
    a_q: Tensor, a_scale: Tensor, b_q: Tensor, b_scale: Tensor, *, b_blocks: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor, bool]:
    """The operands and scales in the layouts cuBLAS wants, everything padded to 128.

    a_q (M, K), a_scale (M, Kc); b_q (N, K) with b_scale (N, Kc) tiles or (ceil(N/128), Kc)
    blocks. Returns (A (Mp, Kp) row-major, B^T (Kp, Np) column-major, scale_a (Mp, Kc) with
    strides (1, Mp), scale_b, b_blocks) where scale_b is (Np, Kc) with strides (1, Np) for
    tiles, or (L4, Np / 128) with strides (1, L4), L4 = Kc rounded up to 4 and the extra rows
    zero, for blocks.
    """
    block = 128
    M, K = a_q.shape
    N = b_q.shape[0]
    Mp, Np, Kp = (cdiv(d, block) * block for d in (M, N, K))
    a = _pad_fp8(a_q, Mp, Kp)
    b = _pad_fp8(b_q, Np, Kp)
    n_chunks = Kp // block
    # 1x128 scales are "outer-dim-major": the M (or N) index moves fastest in memory. Padded
    # rows multiply zero data; 1.0 keeps them finite.
    scale_a = F.pad(a_scale, (0, 0, 0, Mp - M), value=1.0).t().contiguous().t()
    if b_blocks:
        l4 = cdiv(n_chunks, 4) * 4
        scale_b = F.pad(b_scale, (0, l4 - n_chunks)).t()  # (L4, Np/128), strides (1, L4)
    else:
        scale_b = F.pad(b_scale, (0, 0, 0, Np - N), value=1.0).t().contiguous().t()
    return a, b.t(), scale_a, scale_b, b_blocks


def scaled_matmul_cuda(
    a_q: Tensor, a_scale: Tensor, b_q: Tensor, b_scale: Tensor, *, b_blocks: bool
) -> Tensor:
    """A @ B^T on a Hopper GPU; same arguments as `cuda_scaled_mm_args`. Returns (M, N) fp32."""
    kc = cdiv(a_q.shape[1], 128)
    nb = cdiv(b_q.shape[0], 128) if b_blocks else b_q.shape[0]
    assert a_q.dtype == FP8_DTYPE and b_q.dtype == FP8_DTYPE, (a_q.dtype, b_q.dtype)
    assert a_q.is_contiguous() and b_q.is_contiguous(), "operands must be contiguous"
    assert a_q.shape[1] == b_q.shape[1], (tuple(a_q.shape), tuple(b_q.shape))
    assert a_scale.shape == (a_q.shape[0], kc) and b_scale.shape == (nb, kc)
    a, b_t, scale_a, scale_b, _ = cuda_scaled_mm_args(a_q, a_scale, b_q, b_scale, b_blocks=b_blocks)
    recipe = F.ScalingType
    out = F.scaled_mm(
        a,
        b_t,
        scale_a,
        recipe.BlockWise1x128,
        scale_b,
        recipe.BlockWise128x128 if b_blocks else recipe.BlockWise1x128,
        output_dtype=torch.float32,
    )
    return out[: a_q.shape[0], : b_q.shape[0]]


def blockwise_matmul(
    a_q: Tensor,
    a_scale: Tensor,
    b_q: Tensor,
    b_scale: Tensor,
    *,
    b_blocks: bool,
    block: int = 128,
    promotion: bool = True,
    accumulator_bits: int | None = None,
    use_cuda_kernel: bool = False,
) -> Tensor:
    """A @ B^T for the FP8 linear layer: cuBLAS on Hopper when asked (and exact promotion is
    what is asked), the emulation otherwise. Returns (M, N) fp32."""
    if use_cuda_kernel:
        assert block == 128 and promotion and accumulator_bits is None
        return scaled_matmul_cuda(a_q, a_scale, b_q, b_scale, b_blocks=b_blocks)
    if b_blocks:
        b_scale = expand_block_scale(b_scale, b_q.shape[0], block)
    return scaled_matmul_emulated(
        a_q,
        a_scale,
        b_q,
        b_scale,
        block=block,
        promotion=promotion,
        accumulator_bits=accumulator_bits,
    )
