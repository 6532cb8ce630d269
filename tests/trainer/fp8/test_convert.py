"""convert_to_fp8: which modules it swaps and which it leaves, that the model still computes
the same function within FP8 error, and that checkpoints stay ordinary ones."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from store.config import ConfigError, config_from_dict
from trainer.checkpoint import load_checkpoint, save_checkpoint
from trainer.fp8 import RECIPES, Float8Recipe, Fp8Linear, convert_to_fp8, fp8_plan
from trainer.model import Transformer, tiny
from trainer.model.model import MLA, MLP, Gate, RMSNorm

ARGS = tiny(
    vocab_size=256,
    n_layers=2,
    n_routed_experts=4,
    n_expert_groups=2,
    n_limited_groups=1,
    max_seq_len=64,
)


def build(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(ARGS)


def test_plan_swaps_projections_and_keeps_head_router_embedding_norms() -> None:
    model = build()
    plan = fp8_plan(model)
    assert plan.kept == ("head",) and plan.unmatched_patterns == ("lm_head",)
    linears = {name for name, m in model.named_modules() if type(m) is nn.Linear}
    assert set(plan.swapped) == linears - {"head"}
    # Every linear projection of attention and of every MLP (dense, shared, routed), and the
    # MTP projection, runs in FP8.
    for name in (
        "layers.0.attn.wq_a", "layers.0.attn.wq_b", "layers.0.attn.wkv_a", "layers.0.attn.wkv_b",
        "layers.0.attn.wo", "layers.0.ffn.w1", "layers.0.ffn.w2", "layers.0.ffn.w3",
        "layers.1.ffn.experts.3.w2", "layers.1.ffn.shared_experts.w1", "mtp.0.eh_proj",
        "mtp.0.block.attn.wkv_b", "mtp.0.block.ffn.experts.0.w1",
    ):  # fmt: skip
        assert name in plan.swapped, name
    # 4 experts + 1 shared in each of 2 MoE blocks (layer 1, MTP) and the dense layer: 3 each.
    assert len(plan.swapped) == 3 * (1 + 2 * 5) + 3 * 5 + 1

    convert_to_fp8(model)
    kinds = {name: type(m) for name, m in model.named_modules()}
    assert all(kinds[name] is Fp8Linear for name in plan.swapped)
    assert kinds["head"] is nn.Linear and kinds["embed"] is nn.Embedding
    assert kinds["layers.1.ffn.gate"] is Gate and kinds["norm"] is RMSNorm
    assert kinds["layers.0.attn"] is MLA and kinds["layers.0.ffn"] is MLP
    assert not any(t is Fp8Linear for n, t in kinds.items() if n.endswith(("gate", "head")))


def test_converted_model_keeps_parameters_and_follows_the_original() -> None:
    model = build()
    reference = build()
    before = dict(model.named_parameters())
    tokens = torch.randint(0, ARGS.vocab_size, (2, 48), generator=torch.Generator().manual_seed(1))
    want = reference(tokens, mtp=True)
    convert_to_fp8(model, Float8Recipe())
    after = dict(model.named_parameters())
    assert before.keys() == after.keys()
    assert all(before[n] is after[n] for n in before)  # moved, not copied: optimizers still apply
    assert model.state_dict().keys() == reference.state_dict().keys()
    got = model(tokens, mtp=True)
    for a, b in ((got.logits, want.logits), (got.mtp_logits[0], want.mtp_logits[0])):
        # One FP8 GEMM is off by about 3.6%; a dozen in sequence (and a rare routing flip)
        # add up, but stay well below the logits' own size.
        assert float((a - b).detach().norm() / b.detach().norm()) < 0.1
    # Every FP8 layer lies on the backward path: all parameters but the unused get gradients.
    got.logits.sum().backward()
    assert model.layers[0].attn.wq_a.weight.grad is not None


def test_checkpoint_of_converted_model_loads_into_unconverted(tmp_path: Path) -> None:
    model = convert_to_fp8(build(seed=3))
    out = save_checkpoint(model, ARGS, tmp_path / "ckpt")
    loaded, args = load_checkpoint(out)
    assert args == ARGS
    assert not any(isinstance(m, Fp8Linear) for m in loaded.modules())
    theirs = loaded.state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(theirs[name], tensor), name
    # And the other way: a plain state_dict loads strictly into a converted model.
    again = convert_to_fp8(build(seed=4))
    again.load_state_dict(loaded.state_dict(), strict=True)
    assert torch.equal(again.layers[0].attn.wq_a.weight, model.layers[0].attn.wq_a.weight)


def test_keep_patterns_and_refusals() -> None:
    model = build()
    recipe = Float8Recipe(keep_high_precision=("head", "layers.*.attn.*", "mtp.*"))
    plan = fp8_plan(model, recipe)
    assert all(not n.startswith("mtp.") and ".attn." not in n for n in plan.swapped)
    assert "layers.1.ffn.experts.0.w1" in plan.swapped
    assert "layers.0.attn.wo" in plan.kept and "mtp.0.eh_proj" in plan.kept
    convert_to_fp8(model, recipe)
    with pytest.raises(ValueError, match="convert a model only once"):
        convert_to_fp8(model)
    with pytest.raises(ValueError, match=r"matches no nn\.Linear"):
        convert_to_fp8(build(), Float8Recipe(keep_high_precision=("haed",)))
    everything = fp8_plan(build(), Float8Recipe(keep_high_precision=()))
    assert "head" in everything.swapped


def test_recipe_is_a_typed_named_config() -> None:
    assert Float8Recipe.named("deepseek_v3") == Float8Recipe()
    assert RECIPES["no_promotion"].promotion is False
    assert Float8Recipe.named("deepseek_v3", block=256).block == 256
    with pytest.raises(ValueError, match="unknown FP8 recipe 'v4'"):
        Float8Recipe.named("v4")
    with pytest.raises(ValueError, match="accumulator_bits"):
        Float8Recipe(promotion=False)
    with pytest.raises(ValueError, match="block"):
        Float8Recipe(block=100)
    # Loads from YAML-shaped data with the project's config machinery; errors name the key.
    cfg = config_from_dict(
        {"accumulator_bits": 14, "keep_high_precision": ["head", "mtp.*"]}, Float8Recipe
    )
    assert cfg == Float8Recipe(accumulator_bits=14, keep_high_precision=("head", "mtp.*"))
    with pytest.raises(ConfigError, match="scaling"):
        config_from_dict({"scaling": "rowwise"}, Float8Recipe)
    with pytest.raises(ConfigError, match="promotoin"):
        config_from_dict({"promotoin": False}, Float8Recipe)

    # As a section of a training config: `fp8: {}` is the V3 recipe, absent means no FP8.
    @dataclass(frozen=True)
    class TrainSection:
        steps: int = 1
        fp8: Float8Recipe | None = None

    assert config_from_dict({"fp8": {}}, TrainSection).fp8 == Float8Recipe()
    assert config_from_dict({}, TrainSection).fp8 is None
    with pytest.raises(ConfigError, match=r"fp8"):
        config_from_dict({"fp8": {"block": 100}}, TrainSection)
