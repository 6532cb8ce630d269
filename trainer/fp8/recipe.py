"""The FP8 recipe as a typed, named config (a frozen dataclass that `store.config` can load)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from trainer.fp8.gemm import MMA_K


@dataclass(frozen=True)
class Float8Recipe:
    """How the swapped linear layers run their three GEMMs (forward, input gradient, weight
    gradient). The default is DeepSeek-V3's recipe; `RECIPES` names it and its ablations.

    E4M3 everywhere (activations, weights and gradients alike); scales from the online
    absolute maximum of each group, recomputed every call.
    """

    # "blockwise": activations and gradients per 1 x block tile along the contraction
    # dimension, weights per block x block. "tensorwise": one scale per tensor, the coarse
    # scheme that one outlier channel ruins (kept as the comparison).
    scaling: Literal["blockwise", "tensorwise"] = "blockwise"
    block: int = field(default=128, metadata={"doc": "tile length and weight block side"})
    # Promote the Tensor Core partial sum to FP32 every `block` elements of K. Without it the
    # whole K stays in the narrow accumulator (needs accumulator_bits).
    promotion: bool = True
    # None: the Tensor Core sums a chunk exactly (the exact emulation). An int: our model of
    # the narrow accumulator, that many significant bits (the V3 paper: about 14 on H800).
    accumulator_bits: int | None = None
    # Qualified names (fnmatch patterns) of nn.Linear modules that stay in high precision;
    # "head" is our output head, "lm_head" a transformers model's.
    keep_high_precision: tuple[str, ...] = ("head", "lm_head")
    # "auto": cuBLAS block-scaled FP8 on a Hopper GPU when the recipe is the exact one,
    # the emulation anywhere else. "emulate": always the emulation.
    kernel: Literal["auto", "emulate"] = "auto"

    def __post_init__(self) -> None:
        if self.scaling not in ("blockwise", "tensorwise"):
            raise ValueError(f"Float8Recipe.scaling={self.scaling!r}: blockwise or tensorwise")
        if self.kernel not in ("auto", "emulate"):
            raise ValueError(f"Float8Recipe.kernel={self.kernel!r}: auto or emulate")
        if self.block < MMA_K or self.block % MMA_K != 0:
            raise ValueError(
                f"Float8Recipe.block={self.block}: must be a positive multiple of {MMA_K} "
                "(one MMA step); DeepSeek-V3 uses 128"
            )
        if self.accumulator_bits is not None and not 1 <= self.accumulator_bits <= 52:
            raise ValueError(
                f"Float8Recipe.accumulator_bits={self.accumulator_bits}: between 1 and 52, "
                "or null for an exact in-chunk sum"
            )
        if not self.promotion and self.accumulator_bits is None:
            raise ValueError(
                "Float8Recipe.promotion=false needs accumulator_bits (e.g. 14): without "
                "promotion the narrow accumulator is what is being modelled"
            )

    def replace(self, **changes: Any) -> Float8Recipe:
        return dataclasses.replace(self, **changes)

    @classmethod
    def named(cls, name: str, **overrides: Any) -> Float8Recipe:
        """One of `RECIPES` by name, with optional field overrides."""
        if name not in RECIPES:
            raise ValueError(f"unknown FP8 recipe {name!r}; known: {', '.join(RECIPES)}")
        return RECIPES[name].replace(**overrides)


RECIPES: dict[str, Float8Recipe] = {
    # DeepSeek-V3 section 3.3: 1x128 / 128x128 scales, FP32 promotion every 128 of K.
    "deepseek_v3": Float8Recipe(),
    # The same with the Tensor Core's narrow accumulator modelled inside each chunk: what an
    # H800 does under V3's recipe.
    "deepseek_v3_h800": Float8Recipe(accumulator_bits=14),
    # The ablation: the narrow accumulator over the whole K, never promoted.
    "no_promotion": Float8Recipe(promotion=False, accumulator_bits=14),
    # Per-tensor scales (promotion kept): what fine-grained scaling is measured against.
    "tensorwise": Float8Recipe(scaling="tensorwise"),
}
