"""DeepSeek-V3's FP8 mixed-precision recipe, applied to a built model from outside.

    from trainer.fp8 import Float8Recipe, convert_to_fp8, fp8_plan

    model = convert_to_fp8(Transformer(args), Float8Recipe.named("deepseek_v3"))

See README.md in this directory for what it does, what it promises and how it is tested.
"""

from trainer.fp8.convert import Fp8Plan, convert_to_fp8, fp8_plan
from trainer.fp8.gemm import (
    blockwise_matmul,
    cuda_blockwise_available,
    cuda_scaled_mm_args,
    scaled_matmul_cuda,
    scaled_matmul_emulated,
    scaled_matmul_ref,
)
from trainer.fp8.linear import Fp8Linear, fp8_linear, quantize_operand
from trainer.fp8.quant import (
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
from trainer.fp8.recipe import RECIPES, Float8Recipe

__all__ = [
    "E4M3_MAX",
    "FP8_DTYPE",
    "RECIPES",
    "Float8Recipe",
    "Fp8Linear",
    "Fp8Plan",
    "blockwise_matmul",
    "convert_to_fp8",
    "cuda_blockwise_available",
    "cuda_scaled_mm_args",
    "dequantize_blocks",
    "dequantize_tiles",
    "expand_block_scale",
    "fp8_linear",
    "fp8_plan",
    "quantize_blocks",
    "quantize_operand",
    "quantize_tensorwise",
    "quantize_tiles",
    "scaled_matmul_cuda",
    "scaled_matmul_emulated",
    "scaled_matmul_ref",
    "truncate_to_bits",
]
