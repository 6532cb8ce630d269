"""Our checkpoints load in transformers' DeepseekV3ForCausalLM and give our logits."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

from trainer.checkpoint import (
    args_from_hf_config,
    args_to_hf_config,
    load_checkpoint,
    save_checkpoint,
)
from trainer.model import Gate, ModelArgs, RMSNorm, Transformer, debug, tiny, v3_671b

# The hub's DeepSeek-V3 config.json (quantization_config and auto_map left out).
PUBLISHED_V3_CONFIG = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "aux_loss_alpha": 0.001,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "ep_size": 1,
    "first_k_dense_replace": 3,
    "hidden_act": "silu",
    "hidden_size": 7168,
    "initializer_range": 0.02,
    "intermediate_size": 18432,
    "kv_lora_rank": 512,
    "max_position_embeddings": 163840,
    "model_type": "deepseek_v3",
    "moe_intermediate_size": 2048,
    "moe_layer_freq": 1,
    "n_group": 8,
    "n_routed_experts": 256,
    "n_shared_experts": 1,
    "norm_topk_prob": True,
    "num_attention_heads": 128,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 61,
    "num_key_value_heads": 128,
    "num_nextn_predict_layers": 1,
    "pretraining_tp": 1,
    "q_lora_rank": 1536,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "rms_norm_eps": 1e-06,
    "rope_scaling": {
        "beta_fast": 32,
        "beta_slow": 1,
        "factor": 40,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
        "original_max_position_embeddings": 4096,
        "type": "yarn",
    },
    "rope_theta": 10000,
    "routed_scaling_factor": 2.5,
    "scoring_func": "sigmoid",
    "seq_aux": True,
    "tie_word_embeddings": False,
    "topk_group": 4,
    "topk_method": "noaux_tc",
    "torch_dtype": "bfloat16",
    "transformers_version": "4.33.1",
    "use_cache": True,
    "v_head_dim": 128,
    "vocab_size": 129280,
}


def randomized(args: ModelArgs, seed: int) -> Transformer:
    """A model whose every tensor matters: wide weights, non-unit norms, non-zero router
    biases (so the bias really changes which experts are chosen)."""
    torch.manual_seed(seed)
    model = Transformer(args.replace(init_std=0.08)).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, RMSNorm):
                module.weight.normal_(1.0, 0.2)
            if isinstance(module, Gate) and module.bias is not None:
                module.bias.normal_(0.0, 0.05)
    return model


def hf_model(path: Path) -> Any:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from transformers import DeepseekV3ForCausalLM
    from transformers.utils import logging

    logging.set_verbosity_error()  # MTP layers are "unexpected" to transformers: expected
    return DeepseekV3ForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def hf_logits(path: Path, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return hf_model(path)(tokens).logits


def test_checkpoint_saved_by_transformers_loads_in_ours(tmp_path: Path) -> None:
    model = randomized(debug(), seed=3)
    save_checkpoint(model, model.args, tmp_path / "ours")
    hf_model(tmp_path / "ours").save_pretrained(tmp_path / "theirs")
    loaded, args = load_checkpoint(tmp_path / "theirs")
    assert args == model.args.replace(n_mtp_depth=0)  # transformers drops the MTP layers
    tokens = torch.randint(0, args.vocab_size, (2, 80))
    with torch.no_grad():
        assert (loaded.eval()(tokens).logits - model(tokens).logits).abs().max() < 1e-6


@pytest.mark.parametrize(
    "args",
    [
        # 1 dense + 2 MoE layers (16 experts, 4 groups, 2 kept), YaRN x4 beyond an original
        # context of 64, 2 MTP modules stored as hub layers 3 and 4.
        debug(),
        debug(q_lora_rank=0),  # full-rank queries: the hub's q_proj
        tiny(vocab_size=256),  # no YaRN, 8 experts top-2, 1 MTP module
    ],
    ids=["debug", "debug_q_full_rank", "tiny"],
)
def test_transformers_loads_our_checkpoint_and_matches_logits(
    tmp_path: Path, args: ModelArgs
) -> None:
    model = randomized(args, seed=0)
    save_checkpoint(model, model.args, tmp_path)
    tokens = torch.randint(0, args.vocab_size, (2, 96), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(tokens).logits
        theirs = hf_logits(tmp_path, tokens)
        # The comparison is sensitive to routing: without the router bias (which changes
        # only which experts are chosen) the logits move by far more than the tolerance.
        for module in model.modules():
            if isinstance(module, Gate) and module.bias is not None:
                module.bias.zero_()
        unbiased = model(tokens).logits
    diff = (ours - theirs).abs().max().item()
    routing_effect = (ours - unbiased).abs().max().item()
    print(
        f"parity (q_lora_rank={args.q_lora_rank}, rope_factor={args.rope_factor}): "
        f"max |logit diff| {diff:.2e}, "
        f"max |logit| {ours.abs().max():.2f}, effect of router bias {routing_effect:.2e}"
    )
    assert routing_effect > 1e-2
    assert diff < 1e-4


def test_checkpoint_layout_is_the_hubs(tmp_path: Path) -> None:
    model = randomized(debug(), seed=0)
    save_checkpoint(model, model.args, tmp_path, extra_config={"eos_token_id": 1})
    config = json.loads((tmp_path / "config.json").read_text())
    for key, value in {
        "model_type": "deepseek_v3",
        "topk_method": "noaux_tc",
        "scoring_func": "sigmoid",
        "norm_topk_prob": True,
        "routed_scaling_factor": 2.5,
        "n_group": 4,
        "topk_group": 2,
        "num_nextn_predict_layers": 2,
        "first_k_dense_replace": 1,
        "eos_token_id": 1,
    }.items():
        assert config[key] == value, key
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        names = set(f.keys())
    for name in [
        "model.embed_tokens.weight",
        "model.norm.weight",
        "lm_head.weight",
        "model.layers.0.mlp.gate_proj.weight",
        "model.layers.1.self_attn.q_a_proj.weight",
        "model.layers.1.self_attn.q_a_layernorm.weight",
        "model.layers.1.self_attn.kv_a_proj_with_mqa.weight",
        "model.layers.1.self_attn.kv_b_proj.weight",
        "model.layers.1.mlp.gate.weight",
        "model.layers.1.mlp.gate.e_score_correction_bias",
        "model.layers.1.mlp.experts.15.down_proj.weight",
        "model.layers.2.mlp.shared_experts.up_proj.weight",
        "model.layers.3.enorm.weight",
        "model.layers.3.hnorm.weight",
        "model.layers.3.eh_proj.weight",
        "model.layers.3.shared_head.norm.weight",
        "model.layers.3.shared_head.head.weight",
        "model.layers.3.embed_tokens.weight",
        "model.layers.4.mlp.experts.0.gate_proj.weight",
        "model.layers.4.self_attn.o_proj.weight",
    ]:
        assert name in names, name
    assert not any("gate_up_proj" in n for n in names)  # per-expert tensors, never fused


def test_own_round_trip_is_exact_and_sharded_save_loads(tmp_path: Path) -> None:
    model = randomized(debug(), seed=2)
    args = model.args
    tokens = torch.randint(0, args.vocab_size, (2, 24))
    save_checkpoint(model, args, tmp_path / "one")
    save_checkpoint(model, args, tmp_path / "many", max_shard_bytes=100_000)
    assert (tmp_path / "many" / "model.safetensors.index.json").exists()
    with torch.no_grad():
        expected = model(tokens, mtp=True)
        for path in ("one", "many"):
            loaded, loaded_args = load_checkpoint(tmp_path / path)
            assert loaded_args == args
            got = loaded.eval()(tokens, mtp=True)
            assert torch.equal(got.logits, expected.logits)
            for a, b in zip(got.mtp_logits, expected.mtp_logits, strict=True):
                assert torch.equal(a, b)


def test_load_rejects_mismatched_tensors(tmp_path: Path) -> None:
    model = randomized(debug(), seed=0)
    save_checkpoint(model, model.args, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["num_nextn_predict_layers"] = 1
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"unexpected \['model.layers.4"):
        load_checkpoint(tmp_path)


def test_published_v3_config_is_the_v3_preset() -> None:
    args = args_from_hf_config(PUBLISHED_V3_CONFIG)
    assert args == v3_671b(seq_aux_alpha=0.001, init_std=0.02)
    assert args_from_hf_config(args_to_hf_config(args)) == args


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("topk_method", "group_limited_greedy"),
        ("scoring_func", "softmax"),
        ("num_key_value_heads", 16),
        ("model_type", "llama"),
        ("quantization_config", {"quant_method": "fp8"}),
    ],
)
def test_unsupported_config_names_the_key(key: str, value: object) -> None:
    config = dict(PUBLISHED_V3_CONFIG, **{key: value})
    with pytest.raises(ValueError, match=key):
        args_from_hf_config(config)
    missing = {k: v for k, v in PUBLISHED_V3_CONFIG.items() if k != "kv_lora_rank"}
    with pytest.raises(ValueError, match="kv_lora_rank"):
        args_from_hf_config(missing)
