"""Create a randomly initialised checkpoint, read model configs from files, describe checkpoints.

    from trainer.init import init_checkpoint, model_args, describe_checkpoint

    args = model_args(preset="tiny", config_file=None)
    out, args = init_checkpoint(args, seed=0, out_dir="ckpt/", tokenizer=tok)  # tokenizers.Tokenizer
    info = describe_checkpoint("ckpt/")  # shapes, parameter counts, KV-cache bytes per token

The tokenizer is passed in: the trainer never imports `generators`, so the caller (the `r1f
model init` command) trains it on the toy corpus. The model's vocabulary is grown to the
tokenizer's when the tokenizer is larger (the `debug` preset's 256 is below the 265 a byte-level
BPE with the R1 special tokens needs); a smaller tokenizer leaves unused embedding rows, as the
hub checkpoints have.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from trainer.checkpoint import (
    INDEX_NAME,
    WEIGHTS_NAME,
    args_from_hf_config,
    load_hf_config,
    save_checkpoint,
)
from trainer.model.model import PRESETS, ModelArgs, Transformer, count_parameters
from trainer.tokenizer import BOS, EOS, PAD, SPECIAL_TOKENS, save_tokenizer

# Above this many parameters `init_checkpoint` refuses: fp32 weights would not fit a workstation,
# and such models are not trained from a random start on one machine anyway.
MAX_INIT_PARAMS = 2_000_000_000

_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float8_e4m3fn": 1}


def model_args(
    preset: str | None = None, config_file: str | os.PathLike[str] | None = None
) -> ModelArgs:
    """ModelArgs from a preset name, a config file, or both (the file overrides the preset).

    The file is YAML or JSON and is either a Hugging Face DeepSeek-V3 `config.json` (it has
    `model_type`) or a mapping of ModelArgs fields, optionally with `preset: NAME` as the base.
    Unknown keys and unknown presets are errors that name them.
    """
    if preset is None and config_file is None:
        raise ValueError(f"give a preset ({', '.join(PRESETS)}) or a config file")
    overrides: dict[str, Any] = {}
    if config_file is not None:
        path = Path(config_file)
        loaded = _read_mapping(path)
        if "model_type" in loaded:
            if preset is not None:
                raise ValueError(f"{path}: a config.json describes a whole model; drop --preset")
            return args_from_hf_config(loaded)
        overrides = dict(loaded)
        file_preset = overrides.pop("preset", None)
        if file_preset is not None and preset is not None and file_preset != preset:
            raise ValueError(f"{path}: names preset {file_preset!r} but {preset!r} was asked for")
        preset = preset or file_preset
        known = {f.name for f in fields(ModelArgs)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(
                f"{path}: unknown key {unknown[0]!r}; ModelArgs fields are {', '.join(sorted(known))}"
            )
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    base = PRESETS[preset]() if preset is not None else ModelArgs()
    try:
        return base.replace(**overrides)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{config_file}: {err}") from None


def _read_mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        loaded = json.loads(text)
    else:
        import yaml

        loaded = yaml.safe_load(text)
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping of settings, got {type(loaded).__name__}")
    return loaded


def init_checkpoint(
    args: ModelArgs,
    seed: int,
    out_dir: str | os.PathLike[str],
    *,
    tokenizer: Tokenizer,
) -> tuple[Path, ModelArgs]:
    """Build `Transformer(args)` from `seed` on the CPU in fp32 and save it with the tokenizer.

    Returns the directory and the args actually used (vocab_size raised to the tokenizer's if
    the tokenizer is larger). The same seed and args give the same weights, byte for byte.
    """
    vocab = int(tokenizer.get_vocab_size())
    if vocab > args.vocab_size:
        args = args.replace(vocab_size=vocab)
    total, _ = count_parameters(args, mtp=True)
    if total > MAX_INIT_PARAMS:
        raise ValueError(
            f"{total / 1e9:.1f}B parameters: too large to initialise here "
            f"(limit {MAX_INIT_PARAMS / 1e9:.0f}B); pick a smaller preset"
        )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = Transformer(args)
    finally:
        torch.random.set_rng_state(generator_state)
    ids = {token: SPECIAL_TOKENS.index(token) for token in (BOS, EOS, PAD)}
    extra = {
        "bos_token_id": ids[BOS],
        "eos_token_id": ids[EOS],
        "pad_token_id": ids[PAD],
        "init_seed": seed,
    }
    with tempfile.TemporaryDirectory() as tok_dir:
        save_tokenizer(tokenizer, tok_dir, model_max_length=args.max_seq_len)
        out = save_checkpoint(model, args, out_dir, tokenizer_dir=tok_dir, extra_config=extra)
    return out, args


def weight_files(path: str | os.PathLike[str]) -> list[Path]:
    """The safetensors files of a checkpoint directory, sorted."""
    root = Path(path)
    index = root / INDEX_NAME
    if index.exists():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [root / name for name in names]
    if (root / WEIGHTS_NAME).exists():
        return [root / WEIGHTS_NAME]
    raise FileNotFoundError(f"{root}: no {WEIGHTS_NAME} or {INDEX_NAME}; is it a checkpoint?")


def checkpoint_hash(path: str | os.PathLike[str]) -> str:
    """sha256 over the safetensors files (names and bytes): the weights' identity."""
    digest = hashlib.sha256()
    for file in weight_files(path):
        digest.update(file.name.encode() + b"\0")
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def kv_cache_per_token(
    args: ModelArgs, bytes_per_value: int, *, mtp: bool = False
) -> dict[str, Any]:
    """What one token costs in the decoding cache, MLA latent against plain multi-head attention.

    MLA caches the joint latent and the shared rope key: kv_lora_rank + qk_rope_head_dim values
    per layer (V3: 512 + 64 = 576). Plain MHA caches a key and a value per head at the head
    dimension, 2 n_h d_h in the V2 paper's terms: n_heads * (qk_nope_head_dim + v_head_dim)
    (V3: 128 * (128 + 128) = 32,768).
    """
    layers = args.n_layers + (args.n_mtp_depth if mtp else 0)
    ours = args.kv_lora_rank + args.qk_rope_head_dim
    mha = args.n_heads * (args.qk_nope_head_dim + args.v_head_dim)
    return {
        "layers": layers,
        "bytes_per_value": bytes_per_value,
        "mla_values_per_layer": ours,
        "mha_values_per_layer": mha,
        "mla_bytes_per_token": ours * layers * bytes_per_value,
        "mha_bytes_per_token": mha * layers * bytes_per_value,
        "reduction": mha / ours,
    }


def describe_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Everything `r1f model info` shows, from config.json and safetensors headers only."""
    from safetensors import safe_open

    root = Path(path)
    if not (root / "config.json").is_file():
        raise ValueError(f"{root}: no config.json; is it a checkpoint directory?")
    config = load_hf_config(root)
    args = args_from_hf_config(config)
    files = weight_files(root)
    shapes: dict[str, list[int]] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as fh:
            for name in fh.keys():  # noqa: SIM118 (safe_open is not a mapping)
                shapes[name] = list(fh.get_slice(name).get_shape())
    mtp_prefix = f"model.layers.{args.n_layers}."
    if args.n_mtp_depth and not any(n.startswith(mtp_prefix) for n in shapes):
        args = args.replace(n_mtp_depth=0)
    total, activated = count_parameters(args)
    total_mtp, activated_mtp = count_parameters(args, mtp=True)
    dtype = str(config.get("torch_dtype", "float32"))
    return {
        "path": str(root),
        "model_type": config.get("model_type"),
        "dtype": dtype,
        "config": _shape_summary(args),
        "parameters": {
            "total": total,
            "activated": activated,
            "total_with_mtp": total_mtp,
            "activated_with_mtp": activated_mtp,
        },
        "kv_cache": kv_cache_per_token(args, _DTYPE_BYTES.get(dtype, 4)),
        "tensors": _layer_shapes(shapes, args),
        "n_tensors": len(shapes),
        "weight_bytes": sum(f.stat().st_size for f in files),
        "weight_files": [f.name for f in files],
        "model_hash": checkpoint_hash(root),
        "tokenizer": (root / "tokenizer.json").is_file(),
    }


def _shape_summary(args: ModelArgs) -> dict[str, Any]:
    keys = (
        "vocab_size",
        "dim",
        "n_layers",
        "n_dense_layers",
        "n_heads",
        "q_lora_rank",
        "kv_lora_rank",
        "qk_nope_head_dim",
        "qk_rope_head_dim",
        "v_head_dim",
        "inter_dim",
        "moe_inter_dim",
        "n_routed_experts",
        "n_shared_experts",
        "n_activated_experts",
        "n_expert_groups",
        "n_limited_groups",
        "n_mtp_depth",
        "max_seq_len",
        "rope_factor",
    )
    return {key: getattr(args, key) for key in keys}


def _layer_shapes(shapes: Mapping[str, list[int]], args: ModelArgs) -> dict[str, list[int]]:
    """Tensor shapes of the first dense layer, the first MoE layer (one expert shown as
    `experts.*`), the first MTP layer, and the top-level tensors."""
    keep = {f"model.layers.{args.n_dense_layers - 1}." if args.n_dense_layers else None}
    if args.n_dense_layers < args.n_layers:
        keep.add(f"model.layers.{args.n_dense_layers}.")
    if args.n_mtp_depth:
        keep.add(f"model.layers.{args.n_layers}.")
    out: dict[str, list[int]] = {}
    for name, shape in shapes.items():
        if not name.startswith("model.layers."):
            out[name] = shape
            continue
        if not any(prefix and name.startswith(prefix) for prefix in keep):
            continue
        parts = name.split(".")
        if "experts" in parts:
            at = parts.index("experts") + 1
            if parts[at] != "0":
                continue
            parts[at] = "*"
        out[".".join(parts)] = shape
    return out
