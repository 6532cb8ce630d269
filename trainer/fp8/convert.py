"""Apply the FP8 recipe to a built model from outside: swap its nn.Linear modules.

The rule: every module whose type is exactly `nn.Linear` becomes an `Fp8Linear` holding the
same parameter objects, unless its qualified name matches a pattern of
`recipe.keep_high_precision`. Nothing else is touched. On our `Transformer` that puts the
linear projections of attention (wq_a, wq_b or wq, wkv_a, wkv_b, wo), of every MLP (dense
layers, routed and shared experts: w1, w2, w3) and the MTP modules' eh_proj into FP8, and
keeps in high precision what DeepSeek-V3 keeps there:

- the embedding (an nn.Embedding, a lookup) and the output head (`head`, by pattern);
- the router (`Gate` is not an nn.Linear; it scores in fp32 on purpose);
- the norms, and the attention operator itself (SDPA on the naive path; the absorbed decode
  path multiplies by `wkv_b.weight` directly, in high precision).

The model file is never edited, and the state_dict keeps its names, so a checkpoint written
from a converted model is an ordinary one (Hugging Face layout) that loads into an
unconverted model.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TypeVar

from torch import nn

from trainer.fp8.linear import Fp8Linear
from trainer.fp8.recipe import Float8Recipe

ModelT = TypeVar("ModelT", bound=nn.Module)


@dataclass(frozen=True)
class Fp8Plan:
    """What `convert_to_fp8` does to a model: qualified names of the nn.Linear modules."""

    swapped: tuple[str, ...]  # run in FP8
    kept: tuple[str, ...]  # stay in high precision (matched keep_high_precision)
    unmatched_patterns: tuple[str, ...]  # patterns of keep_high_precision that matched nothing


def fp8_plan(model: nn.Module, recipe: Float8Recipe | None = None) -> Fp8Plan:
    """Which nn.Linear modules `convert_to_fp8(model, recipe)` swaps and which it keeps."""
    recipe = recipe or Float8Recipe()
    swapped: list[str] = []
    kept: list[str] = []
    used: set[str] = set()
    for name, module in model.named_modules():
        if type(module) is not nn.Linear:
            continue
        hits = [p for p in recipe.keep_high_precision if fnmatchcase(name, p)]
        (kept if hits else swapped).append(name)
        used.update(hits)
    unmatched = tuple(p for p in recipe.keep_high_precision if p not in used)
    return Fp8Plan(tuple(swapped), tuple(kept), unmatched)


def convert_to_fp8(model: ModelT, recipe: Float8Recipe | None = None) -> ModelT:
    """Swap the model's nn.Linear modules for Fp8Linear as `fp8_plan` says, in place; returns
    the model. Parameters are moved, not copied: an optimizer built before still applies.

    Raises ValueError if the model already holds Fp8Linear modules (convert once), or if no
    pattern of `recipe.keep_high_precision` matches (a misspelt name would put the head in FP8).
    """
    recipe = recipe or Float8Recipe()
    done = [name for name, m in model.named_modules() if isinstance(m, Fp8Linear)]
    if done:
        raise ValueError(
            f"model already has FP8 linear layers ({done[0]}, ...): convert a model only once"
        )
    plan = fp8_plan(model, recipe)
    patterns = recipe.keep_high_precision
    if patterns and len(plan.unmatched_patterns) == len(patterns):
        # The defaults name two models' heads, so one pattern unmatched is normal; none
        # matching means a misspelt pattern and an output head about to run in FP8.
        raise ValueError(
            f"Float8Recipe.keep_high_precision {list(patterns)} matches no nn.Linear of this "
            f"model; its linear layers are named like {plan.swapped[:3]}"
        )
    for name in plan.swapped:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, Fp8Linear.from_linear(getattr(parent, child), recipe))
    return model
