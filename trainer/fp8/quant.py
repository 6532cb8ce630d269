"""E4M3 quantisation with fine-grained scales: 1 x B tiles and B x B blocks (B = 128 in V3).

A quantised tensor is a pair (q, scale): q holds `torch.float8_e4m3fn` values and the real
value of an element is q * scale of its tile or block. Scales are decoding scales in fp32,
the online absolute maximum of the group divided by the E4M3 maximum (448), computed from the
tensor at hand every call: no history, no delayed scaling. So every group uses the whole E4M3
range, and one outlier costs precision only to the 128 (or 128 x 128) values it shares a
scale with, not to the whole tensor.

Shapes (R rows, K columns, B = block):
    tiles:  q (R, K), scale (R, ceil(K / B))              one scale per row per B columns
    blocks: q (R, K), scale (ceil(R / B), ceil(K / B))    one scale per B x B block
A ragged last tile or block is scaled on its own elements (as if zero-padded: zeros never
move an absolute maximum).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

FP8_DTYPE = torch.float8_e4m3fn
E4M3_MAX = float(torch.finfo(FP8_DTYPE).max)  # 448: 4 exponent bits, 3 mantissa bits, no inf
# Floor under a group's absolute maximum, so an all-zero group gets a finite scale (its values
# quantise to zero whatever the scale is).
AMAX_FLOOR = 1e-12


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def pad_to_multiple(x: Tensor, multiple: int, dim: int) -> Tensor:
    """Zero-pad `dim` of a float tensor up to a multiple of `multiple` (a no-op if it is one)."""
    extra = -x.shape[dim] % multiple
    if extra == 0:
        return x
    pads = [0, 0] * (x.dim() - 1 - dim % x.dim()) + [0, extra]
    return F.pad(x, pads)


def _to_e4m3(scaled: Tensor) -> Tensor:
    # |scaled| <= 448 up to the rounding of the division; clamp so no cast can overflow.
    return scaled.clamp(-E4M3_MAX, E4M3_MAX).to(FP8_DTYPE)


def _scale_from_amax(amax: Tensor) -> Tensor:
    return amax.float().clamp(min=AMAX_FLOOR) / E4M3_MAX


def quantize_tiles(x: Tensor, block: int = 128) -> tuple[Tensor, Tensor]:
    """x (R, K) -> q (R, K) e4m3, scale (R, ceil(K / block)) fp32; one scale per 1 x block tile."""
    assert x.dim() == 2, f"quantize_tiles takes a 2-D tensor, got {tuple(x.shape)}"
    R, K = x.shape
    tiles = pad_to_multiple(x.float(), block, 1).view(R, -1, block)  # (R, Kt, block)
    scale = _scale_from_amax(tiles.abs().amax(dim=-1))  # (R, Kt)
    q = _to_e4m3(tiles / scale.unsqueeze(-1)).view(R, -1)[:, :K]  # (R, K)
    return q.contiguous(), scale


def quantize_blocks(w: Tensor, block: int = 128) -> tuple[Tensor, Tensor]:
    """w (R, K) -> q (R, K) e4m3, scale (ceil(R / block), ceil(K / block)) fp32."""
    assert w.dim() == 2, f"quantize_blocks takes a 2-D tensor, got {tuple(w.shape)}"
    R, K = w.shape
    padded = pad_to_multiple(pad_to_multiple(w.float(), block, 0), block, 1)
    Rb, Kb = padded.shape[0] // block, padded.shape[1] // block
    blocks = padded.view(Rb, block, Kb, block)  # (Rb, block, Kb, block)
    scale = _scale_from_amax(blocks.abs().amax(dim=(1, 3)))  # (Rb, Kb)
    q = _to_e4m3(blocks / scale[:, None, :, None]).view(Rb * block, Kb * block)[:R, :K]
    return q.contiguous(), scale


def quantize_tensorwise(x: Tensor) -> tuple[Tensor, Tensor]:
    """One scale for the whole tensor: the coarse recipe block scaling improves on.
    x (R, K) -> q (R, K) e4m3, scale () fp32."""
    scale = _scale_from_amax(x.abs().amax())
    return _to_e4m3(x.float() / scale).contiguous(), scale


def expand_block_scale(scale: Tensor, rows: int, block: int = 128) -> Tensor:
    """Block scales (ceil(R / block), Kb) as per-row tile scales (R, Kb): each row of a block
    row shares its block's scales."""
    return scale.repeat_interleave(block, dim=0)[:rows]


def dequantize_tiles(q: Tensor, scale: Tensor, block: int = 128) -> Tensor:
    """Inverse of quantize_tiles, in fp32: q (R, K), scale (R, Kt) -> (R, K)."""
    R, K = q.shape
    tiles = pad_to_multiple(q.float(), block, 1).view(R, -1, block)  # (R, Kt, block)
    return (tiles * scale.unsqueeze(-1)).view(R, -1)[:, :K]


def dequantize_blocks(q: Tensor, scale: Tensor, block: int = 128) -> Tensor:
    """Inverse of quantize_blocks, in fp32: q (R, K), scale (Rb, Kb) -> (R, K)."""
    return dequantize_tiles(q, expand_block_scale(scale, q.shape[0], block), block)


def truncate_to_bits(x: Tensor, bits: int) -> Tensor:
    """Keep `bits` significant bits of each element, dropping the rest (round toward zero).

    Our model of a limited-precision accumulator: what a fixed-width adder that aligns its
    operands and shifts out the low bits keeps. Works in the dtype of x, so pass fp64 when the
    value must not be rounded to fp32 first.
    """
    mantissa, exponent = torch.frexp(x)  # x = mantissa * 2**exponent, 0.5 <= |mantissa| < 1
    kept = torch.trunc(mantissa * 2.0**bits) / 2.0**bits
    return torch.ldexp(kept, exponent.to(x.dtype))
