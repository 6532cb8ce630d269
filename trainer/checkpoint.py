"""Checkpoints in the Hugging Face DeepSeek-V3 layout, so transformers and vLLM load ours as is.

A checkpoint directory holds:
- config.json: what the published DeepSeek-V3 config.json carries (model_type deepseek_v3,
  topk_method noaux_tc, scoring_func sigmoid, rope_scaling yarn, num_nextn_predict_layers, ...);
- model.safetensors (or model-0000i-of-0000n.safetensors + model.safetensors.index.json) with
  the hub's tensor names, one tensor per expert projection;
- whatever a tokenizer directory holds (tokenizer.json, tokenizer_config.json with the chat
  template), copied in when given.

MTP modules are stored as the hub stores them: as extra decoder layers after the main ones,
`model.layers.{n_layers + k}.*`, with `enorm`, `hnorm`, `eh_proj`, `shared_head.norm` and their
own copies of `embed_tokens` and `shared_head.head` (vLLM's MTP loader reads those copies).
Ours share the main embedding and head, so on loading the copies are ignored.

Loading reads safetensors only: nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from trainer.model.model import ModelArgs, Transformer

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"

# Our module names (DeepSeek's reference code) -> the hub's, one dotted segment at a time.
_SEGMENT_NAMES = {
    "attn": "self_attn",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "ffn": "mlp",
    "wq": "q_proj",
    "wq_a": "q_a_proj",
    "q_norm": "q_a_layernorm",
    "wq_b": "q_b_proj",
    "wkv_a": "kv_a_proj_with_mqa",
    "kv_norm": "kv_a_layernorm",
    "wkv_b": "kv_b_proj",
    "wo": "o_proj",
    "w1": "gate_proj",
    "w2": "down_proj",
    "w3": "up_proj",
    "bias": "e_score_correction_bias",
}

_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


# ----------------------------------------------------------------------------------------------
# config.json


def args_to_hf_config(args: ModelArgs) -> dict[str, Any]:
    """config.json for `args`, with the keys and spelling of the published DeepSeek-V3 config."""
    _require(args.score_func == "sigmoid", "score_func", args.score_func, "sigmoid (deepseek_v3)")
    _require(args.router_bias, "router_bias", args.router_bias, "True (topk_method noaux_tc)")
    rope_scaling = None
    if args.rope_factor > 1.0:
        rope_scaling = {
            "type": "yarn",
            "factor": args.rope_factor,
            "original_max_position_embeddings": args.original_seq_len,
            "beta_fast": args.beta_fast,
            "beta_slow": args.beta_slow,
            # Equal values: the softmax-scale correction is mscale^2, cos/sin stay unscaled.
            "mscale": args.mscale,
            "mscale_all_dim": args.mscale,
        }
    return {
        "architectures": ["DeepseekV3ForCausalLM"],
        "model_type": "deepseek_v3",
        "vocab_size": args.vocab_size,
        "hidden_size": args.dim,
        "intermediate_size": args.inter_dim,
        "moe_intermediate_size": args.moe_inter_dim,
        "num_hidden_layers": args.n_layers,
        "first_k_dense_replace": args.n_dense_layers,
        "moe_layer_freq": 1,
        "num_attention_heads": args.n_heads,
        "num_key_value_heads": args.n_heads,
        "q_lora_rank": args.q_lora_rank or None,
        "kv_lora_rank": args.kv_lora_rank,
        "qk_nope_head_dim": args.qk_nope_head_dim,
        "qk_rope_head_dim": args.qk_rope_head_dim,
        "v_head_dim": args.v_head_dim,
        "n_routed_experts": args.n_routed_experts,
        "n_shared_experts": args.n_shared_experts,
        "num_experts_per_tok": args.n_activated_experts,
        "n_group": args.n_expert_groups,
        "topk_group": args.n_limited_groups,
        "topk_method": "noaux_tc",
        "scoring_func": "sigmoid",
        "norm_topk_prob": args.norm_topk_prob,
        "routed_scaling_factor": args.route_scale,
        "seq_aux": args.seq_aux_alpha > 0,
        "aux_loss_alpha": args.seq_aux_alpha,
        "num_nextn_predict_layers": args.n_mtp_depth,
        "hidden_act": "silu",
        "max_position_embeddings": args.max_seq_len,
        "rms_norm_eps": args.norm_eps,
        "rope_theta": args.rope_theta,
        "rope_scaling": rope_scaling,
        "rope_interleave": True,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": False,
        "initializer_range": args.init_std,
        "use_cache": True,
        "pretraining_tp": 1,
        "ep_size": 1,
        # Training constants the hub config has no key for; other readers ignore them.
        "router_bias_update_speed": args.bias_update_speed,
        "mtp_loss_weight": args.mtp_lambda,
    }


def args_from_hf_config(config: Mapping[str, Any]) -> ModelArgs:
    """ModelArgs from a DeepSeek-V3 config.json (ours or the hub's); anything this model does
    not implement is an error naming the key."""

    def get(key: str, default: Any = None) -> Any:
        return config.get(key, default)

    _require(get("model_type") == "deepseek_v3", "model_type", get("model_type"), "deepseek_v3")
    _require(
        get("topk_method", "noaux_tc") == "noaux_tc", "topk_method", get("topk_method"), "noaux_tc"
    )
    _require(
        get("scoring_func", "sigmoid") == "sigmoid", "scoring_func", get("scoring_func"), "sigmoid"
    )
    _require(get("hidden_act", "silu") == "silu", "hidden_act", get("hidden_act"), "silu")
    _require(not get("attention_bias", False), "attention_bias", get("attention_bias"), "false")
    _require(get("moe_layer_freq", 1) == 1, "moe_layer_freq", get("moe_layer_freq"), "1")
    _require(
        not get("tie_word_embeddings", False),
        "tie_word_embeddings",
        get("tie_word_embeddings"),
        "false",
    )
    _require(
        get("rope_interleave", True) in (True, None),
        "rope_interleave",
        get("rope_interleave"),
        "true",
    )
    _require(
        "quantization_config" not in config,
        "quantization_config",
        "present",
        "absent (dequantize FP8 hub weights to bf16 first)",
    )
    heads = get("num_attention_heads")
    kv_heads = get("num_key_value_heads", heads)
    _require(
        kv_heads in (heads, None), "num_key_value_heads", kv_heads, f"{heads} (MLA has no GQA)"
    )

    rope_theta = get("rope_theta", 10000.0)
    rope: dict[str, Any] = dict(get("rope_scaling") or get("rope_parameters") or {})
    rope_theta = rope.get("rope_theta", rope_theta)
    rope_type = rope.get("type", rope.get("rope_type", "default"))
    yarn: dict[str, Any] = {"rope_factor": 1.0}
    if rope_type == "yarn":
        mscale = rope.get("mscale", 1.0)
        _require(
            rope.get("mscale_all_dim", mscale) == mscale,
            "rope_scaling.mscale_all_dim",
            rope.get("mscale_all_dim"),
            f"equal to rope_scaling.mscale ({mscale})",
        )
        yarn = {
            "rope_factor": float(rope["factor"]),
            "original_seq_len": int(rope["original_max_position_embeddings"]),
            "beta_fast": int(rope.get("beta_fast", 32)),
            "beta_slow": int(rope.get("beta_slow", 1)),
            "mscale": float(mscale),
        }
    else:
        _require(rope_type == "default", "rope_scaling.type", rope_type, "yarn or none")

    try:
        return ModelArgs(
            vocab_size=config["vocab_size"],
            dim=config["hidden_size"],
            inter_dim=config["intermediate_size"],
            n_layers=config["num_hidden_layers"],
            n_dense_layers=config["first_k_dense_replace"],
            n_heads=heads,
            max_seq_len=config["max_position_embeddings"],
            norm_eps=get("rms_norm_eps", 1e-6),
            init_std=get("initializer_range", 0.006),
            q_lora_rank=get("q_lora_rank") or 0,
            kv_lora_rank=config["kv_lora_rank"],
            qk_nope_head_dim=config["qk_nope_head_dim"],
            qk_rope_head_dim=config["qk_rope_head_dim"],
            v_head_dim=config["v_head_dim"],
            rope_theta=float(rope_theta),
            n_routed_experts=config["n_routed_experts"],
            n_shared_experts=config["n_shared_experts"],
            n_activated_experts=config["num_experts_per_tok"],
            moe_inter_dim=config["moe_intermediate_size"],
            n_expert_groups=get("n_group") or 1,
            n_limited_groups=get("topk_group") or 1,
            score_func="sigmoid",
            norm_topk_prob=bool(get("norm_topk_prob", True)),
            route_scale=float(get("routed_scaling_factor", 1.0)),
            router_bias=True,
            seq_aux_alpha=float(get("aux_loss_alpha", 0.0)) if get("seq_aux", True) else 0.0,
            n_mtp_depth=get("num_nextn_predict_layers", 0),
            bias_update_speed=float(get("router_bias_update_speed", 0.001)),
            mtp_lambda=float(get("mtp_loss_weight", 0.3)),
            **yarn,
        )
    except KeyError as err:
        raise ValueError(f"config.json lacks required key {err.args[0]!r}") from None


def _require(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ValueError(f"unsupported config: {key}={value!r}; this model needs {expected}")


# ----------------------------------------------------------------------------------------------
# Tensor names


def hub_name(name: str, n_layers: int) -> str:
    """Our state-dict name -> the hub's (e.g. layers.3.ffn.experts.7.w1.weight ->
    model.layers.3.mlp.experts.7.gate_proj.weight; mtp.0.norm.weight ->
    model.layers.{n_layers}.shared_head.norm.weight)."""
    top, *rest = name.split(".")
    if top == "embed":
        return "model.embed_tokens." + ".".join(rest)
    if top == "norm":
        return "model.norm." + ".".join(rest)
    if top == "head":
        return "lm_head." + ".".join(rest)
    if top == "layers":
        index, *rest = rest
    elif top == "mtp":
        depth, *rest = rest
        index = str(n_layers + int(depth))
        if rest[0] == "block":  # the MTP block's tensors sit directly in its hub layer
            rest = rest[1:]
        elif rest[0] == "norm":
            rest = ["shared_head", "norm", *rest[1:]]
    else:
        raise ValueError(f"no hub name for parameter {name!r}")
    return ".".join(["model", "layers", index, *(_SEGMENT_NAMES.get(p, p) for p in rest)])


def _mtp_copies(args: ModelArgs) -> dict[str, str]:
    """Hub names of the per-MTP-layer copies of the shared embedding and head -> our names."""
    copies = {}
    for k in range(args.n_mtp_depth):
        prefix = f"model.layers.{args.n_layers + k}"
        copies[f"{prefix}.embed_tokens.weight"] = "embed.weight"
        copies[f"{prefix}.shared_head.head.weight"] = "head.weight"
    return copies


def hf_state_dict(model: Transformer) -> dict[str, Tensor]:
    """The model's tensors under the hub's names, MTP copies of embedding and head included.
    Every tensor is its own contiguous storage, as safetensors requires."""
    args = model.args
    ours = model.state_dict()
    tensors = {hub_name(name, args.n_layers): t.detach().contiguous() for name, t in ours.items()}
    for hub, source in _mtp_copies(args).items():
        tensors[hub] = ours[source].detach().clone().contiguous()
    return tensors


# ----------------------------------------------------------------------------------------------
# Save / load


def save_checkpoint(
    model: Transformer,
    args: ModelArgs,
    out_dir: str | os.PathLike[str],
    *,
    tokenizer_dir: str | os.PathLike[str] | None = None,
    extra_config: Mapping[str, Any] | None = None,
    max_shard_bytes: int = 5 * 1024**3,
) -> Path:
    """Write config.json, safetensors weights (sharded above max_shard_bytes) and, if given,
    the tokenizer directory's files. extra_config lands in config.json as is (e.g.
    bos_token_id / eos_token_id from the tokenizer). Returns the directory."""
    if model.args != args:
        raise ValueError("save_checkpoint: args differ from the model's own args")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = hf_state_dict(model)
    dtypes = {t.dtype for t in tensors.values() if t.is_floating_point()}
    config = args_to_hf_config(args)
    config["torch_dtype"] = _DTYPE_NAMES.get(max(dtypes, key=lambda d: d.itemsize), "float32")
    config.update(extra_config or {})

    shards = _shard(tensors, max_shard_bytes)
    for stale in out.glob("model*.safetensors*"):
        stale.unlink()  # an older save with another shard count must not linger
    if len(shards) == 1:
        save_file(shards[0], str(out / WEIGHTS_NAME), metadata={"format": "pt"})
    else:
        weight_map = {}
        for i, shard in enumerate(shards, 1):
            name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(out / name), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(shard, name))
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (out / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")

    if tokenizer_dir is not None:
        for f in sorted(Path(tokenizer_dir).iterdir()):
            if f.is_file() and is_tokenizer_file(f.name):
                shutil.copy2(f, out / f.name)
    return out


# Files a tokenizer directory may hold besides `tokenizer*` ones (transformers' names).
_TOKENIZER_EXTRAS = {
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
}


def is_tokenizer_file(name: str) -> bool:
    """Whether a file of a tokenizer directory belongs to the tokenizer. The directory is
    often a trained checkpoint, whose metrics.jsonl, plots and summaries must not be copied
    into (and, once published, over) the new run's own."""
    return name.startswith("tokenizer") or name in _TOKENIZER_EXTRAS


def _shard(tensors: dict[str, Tensor], max_bytes: int) -> list[dict[str, Tensor]]:
    shards: list[dict[str, Tensor]] = [{}]
    size = 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    return shards


def load_hf_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    config = json.loads((Path(path) / CONFIG_NAME).read_text())
    if not isinstance(config, dict):
        raise ValueError(f"{Path(path) / CONFIG_NAME}: expected a JSON object")
    return config


def load_checkpoint(
    path: str | os.PathLike[str],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[Transformer, ModelArgs]:
    """Build the model from config.json and fill it from the safetensors files (never pickle).
    Missing or unexpected tensors and shape mismatches are errors that name the tensor.

    One exception: a checkpoint whose config announces MTP layers but that holds none of
    their tensors (transformers' save_pretrained drops them) loads without MTP modules, and
    the returned args say n_mtp_depth=0."""
    root = Path(path)
    args = args_from_hf_config(load_hf_config(root))
    tensors = _read_tensors(root, device)
    mtp_prefix = f"model.layers.{args.n_layers}."
    if args.n_mtp_depth > 0 and not any(name.startswith(mtp_prefix) for name in tensors):
        args = args.replace(n_mtp_depth=0)
    with torch.device(device):
        model = Transformer(args)
    model.to(dtype)

    ours = {hub_name(name, args.n_layers): name for name in model.state_dict()}
    ignored = _mtp_copies(args)
    unexpected = sorted(set(tensors) - set(ours) - set(ignored))
    missing = sorted(set(ours) - set(tensors))
    if unexpected or missing:
        raise ValueError(
            f"{root}: checkpoint does not match its config.json: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    state = {}
    expected = model.state_dict()
    for hub, name in ours.items():
        t = tensors[hub]
        if t.shape != expected[name].shape:
            raise ValueError(
                f"{root}: tensor {hub} has shape {tuple(t.shape)}, "
                f"config.json implies {tuple(expected[name].shape)}"
            )
        state[name] = t
    model.load_state_dict(state, strict=True)
    return model, args


def _read_tensors(root: Path, device: torch.device | str) -> dict[str, Tensor]:
    index = root / INDEX_NAME
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (root / WEIGHTS_NAME).exists():
        files = [WEIGHTS_NAME]
    else:
        raise FileNotFoundError(f"{root}: no {WEIGHTS_NAME} or {INDEX_NAME}")
    tensors: dict[str, Tensor] = {}
    for name in files:
        tensors.update(load_file(str(root / name), device=str(device)))
    return tensors
