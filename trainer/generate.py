"""Batched sampling with the absorbed-MLA latent cache, and MTP speculative decoding.

    from trainer.generate import SamplingParams, generate

    outs = generate(model, tok, ["<rendered prompt>", ...], SamplingParams(temperature=0.6,
                    top_p=0.95, max_tokens=256, n=4, seed=0, logprobs=True))
    outs[i][j].text, .token_ids, .logprobs, .finish_reason   # sample j of prompt i
    generate(model, tok, prompts, SamplingParams(temperature=0), mtp=True)  # speculative

How a batch runs:

- Prompts are left-padded and prefilled once (in chunks, so attention scores stay small).
  Every sample of a prompt then copies the prompt's cache rows, so n samples cost one prefill.
- Prefill and decoding run `DecodeEngine`, the model's absorbed-MLA step restated with its
  weights rearranged (norm weights and W_uk/W_uv folded into projections, rotary pairs emitted
  by the projections, a dense MoE for small steps) so that a step issues about half the
  operators. It is tested equal to `Transformer.forward` with the cache; it exists because on
  a CPU a decode step of a small model costs what its operators cost to dispatch.
- The cache is one buffer per layer holding [c_kv | k_pe] per token (kv_lora_rank +
  qk_rope_head_dim values; `LatentCache.kv_cache()` views it as the model's `KVCache`).
  Scores against both halves take one batched matmul.
- Rows that finish leave the batch at once (their cache rows are compacted away), so a long
  sample never makes finished ones pay for more steps.

Sampling semantics (the same as vLLM's where vLLM has one):

- temperature 0 is greedy (argmax; top-k/top-p ignored). Otherwise logits / temperature, then
  top-k (0 = off), then top-p over what top-k kept, renormalised.
- Randomness: each (request seed, sample index) owns a `torch.Generator`, so a request's
  tokens do not depend on which other requests share its batch, on batch size or on order.
  A single `SamplingParams` for many prompts gives prompt i the seed
  `request_seed(params.seed, i)`; a list of params uses each one's seed as it is.
- Log-probs are log-softmax of the raw logits (before temperature, top-k, top-p) of the
  chosen tokens: vLLM's default `raw_logprobs`. They say how likely the model found the
  token, independent of how it was sampled, which is what GRPO's ratio needs.
- Stopping: the EOS token (unless `ignore_eos`; it is kept in `token_ids`, dropped from
  `text`), a stop string found in the decoded text (the text is cut before it, as vLLM's
  default `include_stop_str_in_output=False` does; `token_ids` keep every sampled token),
  or `max_tokens` / the model's `max_seq_len` ("length").

MTP speculative decoding (`mtp=True`, MTP depth 1): the MTP module drafts the token after the
pending one from the main model's last hidden state; one main forward over [pending, draft]
verifies it (the rule in `trainer.speculative`), and yields one or two tokens. Rows of a batch
accept independently, so from then on each row writes at its own cache slot (the engine takes
a per-row start position); the slot of a rejected draft is masked until overwritten. See
docs/generation.md.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from trainer.model.model import (
    MLP,
    Block,
    Gate,
    KVCache,
    ModelArgs,
    MoE,
    MTPModule,
    Transformer,
    rope_inv_freq,
)
from trainer.speculative import accept_draft, sample_from
from trainer.tokenizer import R1Tokenizer

FinishReason = Literal["stop", "length"]

# ----------------------------------------------------------------------------------------------
# Requests and results


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one request. `n` samples share the prompt's prefill."""

    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0  # 1: off
    top_k: int = 0  # 0 (or -1): off
    max_tokens: int = 256
    stop: Sequence[str] = ()  # stored as a tuple
    n: int = 1
    seed: int | None = None  # None: a fresh random seed per call
    logprobs: bool = False
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        else:
            object.__setattr__(self, "stop", tuple(self.stop))
        checks = [
            (math.isfinite(self.temperature) and self.temperature >= 0, "temperature", ">= 0"),
            (0 < self.top_p <= 1, "top_p", "in (0, 1]"),
            (isinstance(self.top_k, int) and self.top_k >= -1, "top_k", "an int >= -1"),
            (isinstance(self.max_tokens, int) and self.max_tokens >= 1, "max_tokens", ">= 1"),
            (isinstance(self.n, int) and self.n >= 1, "n", "an int >= 1"),
            (all(isinstance(s, str) and s for s in self.stop), "stop", "non-empty strings"),
            (self.seed is None or isinstance(self.seed, int), "seed", "an int or None"),
        ]
        for ok, name, rule in checks:
            if not ok:
                raise ValueError(f"SamplingParams.{name}={getattr(self, name)!r}: must be {rule}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def record(self) -> dict[str, float | int]:
        """The fields the Sample record's `sampling` struct keeps."""
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": max(self.top_k, 0),
            "max_tokens": self.max_tokens,
        }


@dataclass(frozen=True)
class Completion:
    """One sample of one prompt."""

    text: str  # decoded, special tokens dropped, cut before a matched stop string
    token_ids: list[int]  # every sampled token, EOS included
    logprobs: list[float] | None  # raw log-prob of each token in token_ids, when asked
    finish_reason: FinishReason
    stop_reason: str | int | None  # the matched stop string, or the EOS id; None for length
    prompt_tokens: int
    completion_tokens: int
    index: int  # sample index within its prompt
    seed: int  # the request seed the sample's generator was derived from
    drafted_tokens: int = 0  # MTP drafts verified for this sample
    accepted_tokens: int = 0  # of which the main model kept


@dataclass
class GenerationStats:
    """Counters over one or more `generate` calls (pass the same object to accumulate)."""

    requests: int = 0
    samples: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    main_forwards: int = 0  # decode forwards of the main model (batched)
    row_forwards: int = 0  # sum over those forwards of the rows they carried
    drafted: int = 0
    accepted: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_forward(self) -> float:
        """Tokens a row gains per main-model decode forward (1 without MTP; the first token of
        each sample comes from the prefill and is not counted)."""
        decoded = self.completion_tokens - self.samples
        return decoded / self.row_forwards if self.row_forwards else 0.0

    @property
    def seconds(self) -> float:
        return self.prefill_seconds + self.decode_seconds

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds else 0.0


def request_seed(seed: int, index: int) -> int:
    """The seed of prompt `index` when one seed is given for a list of prompts."""
    return _hash63(f"r1f-request:{seed}:{index}")


def sample_seed(seed: int, sample_index: int) -> int:
    """The generator seed of sample `sample_index` of a request seeded `seed`."""
    return _hash63(f"r1f-sample:{seed}:{sample_index}")


def _hash63(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


# ----------------------------------------------------------------------------------------------
# Sampling


def sampling_probs(logits: Tensor, temperature: Tensor, top_k: Tensor, top_p: Tensor) -> Tensor:
    """The distribution each row samples from: (R, V) raw logits -> (R, V) float32 probs.

    temperature, top_k, top_p: (R,). Temperature 0 gives the one-hot argmax. Otherwise
    softmax(logits / T) restricted to the top_k largest (top_k <= 0: all), then to the smallest
    prefix (by probability) whose mass reaches top_p, renormalised.
    """
    logits = logits.float()
    V = logits.shape[-1]
    greedy = temperature <= 0
    z = logits / torch.where(greedy, 1.0, temperature.float()).unsqueeze(-1)  # (R, V)
    k = torch.where((top_k > 0) & (top_k < V), top_k, V)  # (R,)
    if bool(((k < V) | (top_p < 1)).any()):
        sorted_z, order = z.sort(dim=-1, descending=True)  # (R, V)
        drop = torch.arange(V, device=z.device).unsqueeze(0) >= k.unsqueeze(-1)  # (R, V)
        sorted_p = sorted_z.masked_fill(drop, float("-inf")).softmax(dim=-1)
        mass_before = sorted_p.cumsum(dim=-1) - sorted_p  # mass of strictly likelier tokens
        drop |= (mass_before >= top_p.unsqueeze(-1)) & (top_p < 1).unsqueeze(-1)
        z = z.scatter(-1, order, sorted_z.masked_fill(drop, float("-inf")))
    probs = z.softmax(dim=-1)
    if bool(greedy.any()):
        one_hot = F.one_hot(logits.argmax(dim=-1), V).to(probs.dtype)  # (R, V)
        probs = torch.where(greedy.unsqueeze(-1), one_hot, probs)
    return probs


@dataclass
class _RowParams:
    """Per-row sampling parameters as tensors, for the rows currently in the batch."""

    temperature: Tensor  # (R,)
    top_k: Tensor  # (R,)
    top_p: Tensor  # (R,)
    all_greedy: bool
    any_logprobs: bool

    @classmethod
    def of(cls, params: Sequence[SamplingParams], device: torch.device) -> _RowParams:
        return cls(
            temperature=torch.tensor([p.temperature for p in params], device=device),
            top_k=torch.tensor([p.top_k for p in params], device=device),
            top_p=torch.tensor([p.top_p for p in params], device=device),
            all_greedy=all(p.greedy for p in params),
            any_logprobs=any(p.logprobs for p in params),
        )

    def probs(self, logits: Tensor) -> Tensor:
        return sampling_probs(logits, self.temperature, self.top_k, self.top_p)


# ----------------------------------------------------------------------------------------------
# The latent cache


@dataclass
class LatentCache:
    """Per layer, row and slot: [c_kv (kv_lora_rank) | k_pe (qk_rope_head_dim)], and a per-row
    additive mask (0 for a real token, -inf for left padding).

    buf:      (n_cache_layers, R, S, kv_lora_rank + qk_rope_head_dim), zeros where never
              written (NaN-free, so masked slots contribute exactly nothing)
    bias:     (R, S)
    cos, sin: (S, qk_rope_head_dim), the rotation of each slot's position, each value repeated
              for both members of its pair (RoPE rotates adjacent pairs)
    """

    buf: Tensor
    bias: Tensor
    cos: Tensor
    sin: Tensor
    kv_lora_rank: int

    @classmethod
    def allocate(
        cls,
        args: ModelArgs,
        rows: int,
        slots: int,
        *,
        mtp: bool,
        dtype: torch.dtype,
        device: torch.device,
    ) -> LatentCache:
        layers = args.n_layers + (args.n_mtp_depth if mtp else 0)
        width = args.kv_lora_rank + args.qk_rope_head_dim
        buf = torch.zeros(layers, rows, slots, width, dtype=dtype, device=device)
        bias = torch.zeros(rows, slots, dtype=dtype, device=device)
        angles = torch.outer(
            torch.arange(slots, dtype=torch.float32, device=device), rope_inv_freq(args, device)
        )  # (S, rope/2), computed as the model's Rotary computes them
        cos = angles.cos().repeat_interleave(2, dim=-1).to(dtype)  # (S, rope)
        sin = angles.sin().repeat_interleave(2, dim=-1).to(dtype)
        return cls(buf, bias, cos, sin, args.kv_lora_rank)

    def kv_cache(self) -> KVCache:
        """The same memory as the model's KVCache (strided views), for its prefill forward."""
        r = self.kv_lora_rank
        return KVCache(kv=self.buf[..., :r], pe=self.buf[..., r:])

    def bytes_per_token(self) -> int:
        """Cache bytes one token costs across all layers held."""
        return self.buf.shape[0] * self.buf.shape[-1] * self.buf.element_size()

    def gather_rows(self, rows: Tensor, upto: int) -> None:
        """Rows 0..len(rows)-1 become copies of `rows` (slots < upto): expansion for n samples,
        and compaction when rows finish."""
        n = rows.numel()
        self.buf[:, :n, :upto] = self.buf[:, rows, :upto]  # the index copies before writing
        self.bias[:n] = self.bias[rows]


def swap_pairs(x: Tensor) -> Tensor:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...): with it, rotating adjacent pairs by
    an angle is x * cos + swap_pairs(x) * sin, the model's `apply_rope`."""
    pairs = x.unflatten(-1, (-1, 2))  # (..., rope/2, 2)
    return torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)


# ----------------------------------------------------------------------------------------------
# The decode engine
#
# The same function as Transformer.forward on the absorbed path, with the weights rearranged
# so that one decode step issues as few operators as possible:
# - an RMSNorm's weight is folded into the columns of the projection that reads it (the
#   norm's output feeds nothing else), except kv_norm, whose output is what the cache holds;
# - W_uk is folded into the query projection (it maps straight to latent queries) and W_uv
#   into the output projection (it reads attention-weighted latents);
# - each projection that yields a rotary part also yields swap_pairs of it (extra rows), so
#   RoPE is two elementwise operators;
# - with few tokens, the MoE runs every expert (and the shared one) as two matmuls and zeroes
#   the unchosen ones: on a CPU that is cheaper than dispatching tokens to experts;
# - weights are stored transposed and contiguous, activations kept 2-D (B*T rows): `mm` on
#   that layout is two to three times cheaper than `F.linear` at these sizes on a CPU.
# Folded weights cost memory (the query projection grows from H * (nope + rope) to
# H * (kv_lora_rank + 2 * rope) rows): this engine is for the toy and test scales; serve large
# checkpoints with vLLM.

# Dense MoE (all experts for every token) while it costs at most this many multiply-adds per
# layer and step; past it, tokens are dispatched to their experts. Measured on two CPU cores
# (one thread): dense is faster up to about 30M (tiny: 64 tokens; vllm_tiny: 32 tokens),
# because dispatch pays several operators per expert and a small matmul is cheap.
DENSE_MOE_MAX_MACS = 32_000_000


@dataclass
class _Step:
    """What every layer of one forward shares: the rotations, the mask, and views of the cache
    (all layers; a block picks its own with one integer index: cheaper than slicing per layer).

    Rows write their new tokens either at one shared slot (`new_latent`/`new_rope` are the
    views to write) or, in speculative decoding where rows advance by different amounts, each
    at its own (`row_index`/`slot_index` address the B * T new entries).
    """

    rows: int  # B
    tokens: int  # T
    cos_k: Tensor  # (T, rope) or (B, T, rope), for the keys (B, T, rope)
    sin_k: Tensor
    cos_q: Tensor  # (T, 1, rope) or (B, T, 1, rope), for the queries (B, T, H, rope)
    sin_q: Tensor
    bias: Tensor  # (B, 1, S) for one new token; (B, T * H, S) for several
    kv: Tensor  # (L, B, S, r + rope): everything attended to
    new_latent: Tensor | None = None  # (L, B, T, r): where the new tokens' latents go
    new_rope: Tensor | None = None  # (L, B, T, rope): and their rotated keys
    rows_buf: Tensor | None = None  # (L, B, S_max, r + rope)
    row_index: Tensor | None = None  # (B * T,)
    slot_index: Tensor | None = None  # (B * T,)


def _with_swapped_rows(w: Tensor) -> Tensor:
    """Rows (rope, in) -> the rows that output swap_pairs of what w outputs."""
    return swap_pairs(w.t()).t()


def _t(w: Tensor) -> Tensor:
    """(out, in) weight -> (in, out) contiguous, for `x @ w` with 2-D x."""
    return w.t().contiguous()


def _rms(x: Tensor, eps: float, weight: Tensor | None = None) -> Tensor:
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


class _Router:
    """The model's Gate with the preceding norm's weight folded in: same choices, same weights."""

    def __init__(self, gate: Gate, norm_weight: Tensor) -> None:
        self.weight = _t((gate.weight * norm_weight).float())  # (dim, E); routing in fp32
        self.bias = None if gate.bias is None else gate.bias.float()
        self.upcast = norm_weight.dtype != torch.float32
        self.topk, self.n_groups, self.topk_groups = gate.topk, gate.n_groups, gate.topk_groups
        self.sigmoid = gate.score_func == "sigmoid"
        self.norm_topk_prob, self.route_scale = gate.norm_topk_prob, gate.route_scale

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: (N, dim), normed without weight -> weights (N, k) fp32, expert indices (N, k)."""
        logits = torch.mm(x.float() if self.upcast else x, self.weight)  # (N, E)
        scores = logits.sigmoid() if self.sigmoid else logits.softmax(dim=-1)
        choice = scores if self.bias is None else scores + self.bias
        if self.n_groups > 1:
            grouped = choice.unflatten(-1, (self.n_groups, -1))  # (N, G, E/G)
            if self.bias is None:
                group_scores = grouped.amax(dim=-1)  # (N, G)
            else:
                group_scores = grouped.topk(2, dim=-1).values.sum(dim=-1)  # (N, G)
            kept = group_scores.topk(self.topk_groups, dim=-1).indices
            drop = torch.ones_like(group_scores, dtype=torch.bool).scatter_(1, kept, False)
            choice = grouped.masked_fill(drop.unsqueeze(-1), float("-inf")).flatten(1)
        indices = choice.topk(self.topk, dim=-1).indices  # (N, k)
        weights = scores.gather(1, indices)  # (N, k)
        if self.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        if self.route_scale != 1.0:
            weights = weights * self.route_scale
        return weights, indices


class _BlockWeights:
    """One Block, rearranged for decoding (see the section comment)."""

    def __init__(self, block: Block, args: ModelArgs) -> None:
        attn = block.attn
        H, r, rope = args.n_heads, args.kv_lora_rank, args.qk_rope_head_dim
        nope, v = args.qk_nope_head_dim, args.v_head_dim
        self.layer_id = attn.layer_id
        self.eps = args.norm_eps
        self.n_heads, self.r, self.rope = H, r, rope
        self.scale = attn.softmax_scale
        self.upcast = block.attn_norm.weight.dtype != torch.float32

        w_kv = attn.wkv_b.weight.view(H, nope + v, r)  # (H, nope + v, r)
        w_uk, w_uv = w_kv[:, :nope], w_kv[:, nope:]  # (H, nope, r), (H, v, r)

        def query_rows(w_q: Tensor) -> Tensor:
            # (H * (nope + rope), in) -> rows [per head: latent query (r), rope part (rope)],
            # then swap_pairs of every head's rope part: (H * (r + rope) + H * rope, in).
            w = w_q.view(H, nope + rope, -1)
            latent = torch.einsum("hdr,hdi->hri", w_uk, w[:, :nope])  # (H, r, in)
            main = torch.cat([latent, w[:, nope:]], dim=1).flatten(0, 1)
            swapped = torch.cat([_with_swapped_rows(w[h, nope:]) for h in range(H)])
            return torch.cat([main, swapped])

        w_kv_a = attn.wkv_a.weight  # (r + rope, dim)
        kv_rows = [w_kv_a[:r], w_kv_a[r:], _with_swapped_rows(w_kv_a[r:])]
        if args.q_lora_rank:
            self.q_width = args.q_lora_rank
            w_in = torch.cat([attn.wq_a.weight, *kv_rows])
            self.w_q: Tensor | None = _t(query_rows(attn.wq_b.weight) * attn.q_norm.weight)
        else:
            w_q_full = query_rows(attn.wq.weight)
            self.q_width = w_q_full.shape[0]
            w_in = torch.cat([w_q_full, *kv_rows])
            self.w_q = None
        self.w_in = _t(w_in * block.attn_norm.weight)  # (dim, q part + r + 2 rope)
        self.kv_norm = attn.kv_norm.weight
        # Output: wo (dim, H * v) after W_uv per head -> one (dim, H * r) matrix.
        w_o = torch.einsum("ohv,hvr->ohr", attn.wo.weight.view(-1, H, v), w_uv).flatten(1)
        self.w_o = _t(w_o)  # (H * r, dim)

        ffn_norm = block.ffn_norm.weight
        self.router: _Router | None = None
        if isinstance(block.ffn, MoE):
            moe = block.ffn
            self.router = _Router(moe.gate, ffn_norm)
            experts = [cast(MLP, e) for e in moe.experts]
            w1 = torch.stack([e.w1.weight for e in experts])  # (E, inter, dim)
            w3 = torch.stack([e.w3.weight for e in experts])
            w2 = torch.stack([e.w2.weight for e in experts])  # (E, dim, inter)
            self.n_experts, self.inter = w1.shape[0], w1.shape[1]  # E, moe_inter_dim
            shared = moe.shared_experts
            # Every expert, then the shared one, as one wide MLP: gate rows, then up rows.
            w13 = torch.cat(
                [w1.flatten(0, 1), shared.w1.weight, w3.flatten(0, 1), shared.w3.weight]
            )
            self.w13 = _t(w13 * ffn_norm)  # (dim, 2 * units): gate columns, then up columns
            w2_all = torch.cat([w2.permute(1, 0, 2).flatten(1), shared.w2.weight], dim=1)
            self.w2 = _t(w2_all)  # (units, dim); units = E * inter + shared_inter
            self.units = self.w2.shape[0]
            self.dense_macs_per_token = 3 * self.units * self.w13.shape[0]
        else:
            assert isinstance(block.ffn, MLP)
            self.w13 = _t(torch.cat([block.ffn.w1.weight, block.ffn.w3.weight]) * ffn_norm)
            self.w2 = _t(block.ffn.w2.weight)

    def __call__(self, x: Tensor, step: _Step) -> Tensor:
        """x: (B*T, dim), rows in (batch, position) order -> (B*T, dim)."""
        x = x + self._attention(x, step)
        h = _rms(x, self.eps)
        return x + (self._mlp(h) if self.router is None else self._moe(h))

    def _attention(self, x: Tensor, step: _Step) -> Tensor:
        B, T, i = step.rows, step.tokens, self.layer_id
        H, r, rope = self.n_heads, self.r, self.rope
        projected = torch.mm(_rms(x, self.eps), self.w_in).view(B, T, -1)
        q, c_kv, k_pe, k_swap = projected.split([self.q_width, r, rope, rope], dim=-1)
        if self.w_q is not None:
            q = torch.matmul(_rms(q, self.eps), self.w_q)
        # The new tokens' latents and rotated keys go straight into the cache.
        latent = _rms(c_kv, self.eps, self.kv_norm)  # (B, T, r)
        if step.new_latent is not None and step.new_rope is not None:
            step.new_latent[i].copy_(latent)
            torch.addcmul(k_pe * step.cos_k, k_swap, step.sin_k, out=step.new_rope[i])
        else:
            assert step.rows_buf is not None and step.row_index is not None
            k_rot = torch.addcmul(k_pe * step.cos_k, k_swap, step.sin_k)  # (B, T, rope)
            step.rows_buf[i].index_put_(
                (step.row_index, step.slot_index), torch.cat([latent, k_rot], dim=-1).flatten(0, 1)
            )
        kv = step.kv[i]  # (B, S, r + rope)

        q_main, q_swap = q.split([H * (r + rope), H * rope], dim=-1)
        q_main = q_main.view(B, T, H, r + rope)
        q_pe = q_main.narrow(-1, r, rope)
        torch.addcmul(q_pe * step.cos_q, q_swap.view(B, T, H, rope), step.sin_q, out=q_pe)
        scores = torch.baddbmm(
            step.bias, q_main.reshape(B, T * H, r + rope), kv.transpose(1, 2), alpha=self.scale
        )  # (B, T*H, S): latent and rope parts in one product
        if self.upcast:
            probs = scores.float().softmax(dim=-1).type_as(scores)
        else:
            probs = scores.softmax(dim=-1)
        o_lat = torch.bmm(probs, kv.narrow(-1, 0, r))  # (B, T*H, r)
        return torch.mm(o_lat.view(B * T, H * r), self.w_o)

    def _mlp(self, h: Tensor) -> Tensor:
        g, u = torch.mm(h, self.w13).chunk(2, dim=-1)
        return torch.mm(F.silu(g).mul_(u), self.w2)

    def _moe(self, h: Tensor) -> Tensor:
        """h: (N, dim), normed without weight -> (N, dim)."""
        assert self.router is not None
        weights, indices = self.router(h)  # (N, k)
        weights = weights.type_as(h)
        (N, D), E, inter = h.shape, self.n_experts, self.inter
        if N * self.dense_macs_per_token <= DENSE_MOE_MAX_MACS:
            dense = torch.zeros(N, E, dtype=h.dtype, device=h.device).scatter_(1, indices, weights)
            g, u = torch.mm(h, self.w13).chunk(2, dim=-1)  # (N, units) each
            act = F.silu(g).mul_(u)
            act[:, : E * inter].view(N, E, inter).mul_(dense.unsqueeze(-1))  # unchosen -> 0
            return torch.mm(act, self.w2)
        # Dispatch: each chosen expert once on its own tokens, as the model does.
        k = indices.shape[1]
        pairs = indices.flatten()
        order = pairs.argsort()
        counts = torch.bincount(pairs, minlength=E).tolist()
        gate_cols, up_cols = self.w13.chunk(2, dim=1)  # (dim, units) each
        outputs = []
        for e, chosen in enumerate(order.split(counts)):
            if chosen.numel() == 0:
                continue
            cols = slice(e * inter, (e + 1) * inter)
            x = h[chosen // k]
            act = F.silu(torch.mm(x, gate_cols[:, cols])).mul_(torch.mm(x, up_cols[:, cols]))
            outputs.append(torch.mm(act, self.w2[cols]))
        per_pair = torch.empty(N * k, D, dtype=h.dtype, device=h.device)
        per_pair[order] = torch.cat(outputs)
        routed = (per_pair.view(N, k, D) * weights.unsqueeze(-1)).sum(dim=1)
        shared = slice(E * inter, self.units)
        act = F.silu(torch.mm(h, gate_cols[:, shared])).mul_(torch.mm(h, up_cols[:, shared]))
        return routed + torch.mm(act, self.w2[shared])


def _weights_key(model: Transformer) -> list[tuple[int, int, int]]:
    # An optimizer step or load_state_dict bumps a tensor's version; .to() changes its storage.
    tensors = [*model.parameters(), *model.buffers()]
    return [(id(t), t.data_ptr(), t._version) for t in tensors]


class DecodeEngine:
    """The model's decode step over a `LatentCache`, absorbed MLA throughout.

    `forward(cache, tokens, start_pos)` equals `Transformer.forward(tokens, start_pos=...,
    cache=..., key_padding_mask=...)` (to float rounding; tested), as does `forward_mtp` for
    `Transformer.forward_mtp`. It copies the model's weights (rearranged) when built, so it
    goes stale when they change; `is_current()` says whether they have (in-place updates
    included: it compares every tensor's version counter), and `generate` refuses a stale one.
    """

    def __init__(self, model: Transformer) -> None:
        self.model = model
        self.args = model.args
        self._weights = _weights_key(model)
        self.mtp_modules = [cast(MTPModule, m) for m in model.mtp]
        with torch.no_grad():
            self.blocks = [_BlockWeights(cast(Block, b), model.args) for b in model.layers]
            self.mtp_blocks = [_BlockWeights(m.block, model.args) for m in self.mtp_modules]
            # [enorm(emb); hnorm(h)] @ eh_proj: both norms' weights folded into eh_proj's columns.
            self.mtp_in = [
                _t(m.eh_proj.weight * torch.cat([m.enorm.weight, m.hnorm.weight]))
                for m in self.mtp_modules
            ]
            self.head = _t(model.head.weight)  # (dim, V)

    def is_current(self) -> bool:
        """Whether the model's weights are still the ones this engine was built from."""
        return _weights_key(self.model) == self._weights

    def _step(self, cache: LatentCache, B: int, T: int, start: int | Tensor) -> _Step:
        if isinstance(start, Tensor):
            return self._ragged_step(cache, B, T, start)
        S = start + T
        bias = cache.bias[:B, :S].unsqueeze(1)  # (B, 1, S)
        if T > 1:
            # Causal among the new tokens; each token also sees itself even when it is padding
            # (as the model's mask has it), so no softmax row is empty.
            slot = torch.arange(S, device=bias.device)
            query = torch.arange(start, S, device=bias.device).unsqueeze(-1)  # (T, 1)
            future = torch.where(slot > query, float("-inf"), 0.0).to(bias.dtype)  # (T, S)
            bias = torch.where(slot == query, 0.0, bias + future)  # (B, T, S)
            bias = bias.unsqueeze(2).expand(B, T, self.args.n_heads, S).reshape(B, -1, S)
        cos, sin = cache.cos[start:S], cache.sin[start:S]
        r = cache.kv_lora_rank
        new = cache.buf[:, :B, start:S]
        return _Step(
            rows=B,
            tokens=T,
            cos_k=cos,
            sin_k=sin,
            cos_q=cos.unsqueeze(1),
            sin_q=sin.unsqueeze(1),
            bias=bias,
            new_latent=new[..., :r],
            new_rope=new[..., r:],
            kv=cache.buf[:, :B, :S],
        )

    def _ragged_step(self, cache: LatentCache, B: int, T: int, start: Tensor) -> _Step:
        """Row b's new tokens go to slots start[b]..start[b]+T-1 and see only slots up to
        their own (and not left padding); the rest of the batch's width is masked."""
        slots = start.unsqueeze(-1) + torch.arange(T, device=start.device)  # (B, T)
        S = int(start.max()) + T
        slot = torch.arange(S, device=start.device)
        query = slots.unsqueeze(-1)  # (B, T, 1)
        base = cache.bias[:B, :S].unsqueeze(1)  # (B, 1, S)
        bias = torch.where(slot > query, float("-inf"), base)  # (B, T, S)
        bias = torch.where(slot == query, 0.0, bias)  # each token sees itself, even padding
        bias = bias.unsqueeze(2).expand(B, T, self.args.n_heads, S).reshape(B, -1, S)
        cos, sin = cache.cos[slots], cache.sin[slots]  # (B, T, rope)
        return _Step(
            rows=B,
            tokens=T,
            cos_k=cos,
            sin_k=sin,
            cos_q=cos.unsqueeze(2),
            sin_q=sin.unsqueeze(2),
            bias=bias,
            kv=cache.buf[:, :B, :S],
            rows_buf=cache.buf[:, :B],
            row_index=torch.arange(B, device=start.device).repeat_interleave(T),
            slot_index=slots.flatten(),
        )

    def forward(
        self,
        cache: LatentCache,
        tokens: Tensor,
        start_pos: int | Tensor,
        *,
        keep_last: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        """tokens (B, T) at slots start_pos.. (an int, or a (B,) tensor: one start per row) ->
        (logits (B, T', V), final-normed hidden (B, T, dim)), T' = T or keep_last."""
        B, T = tokens.shape
        step = self._step(cache, B, T, start_pos)
        x = F.embedding(tokens.reshape(-1), self.model.embed.weight)  # (B*T, dim)
        for block in self.blocks:
            x = block(x, step)
        h = _rms(x, self.args.norm_eps, self.model.norm.weight).view(B, T, -1)
        last = h if keep_last is None else h[:, -keep_last:]
        logits = torch.mm(last.reshape(-1, h.shape[-1]), self.head).view(B, last.shape[1], -1)
        return logits, h

    def forward_mtp(
        self,
        cache: LatentCache,
        h_prev: Tensor,
        next_tokens: Tensor,
        start_pos: int | Tensor,
        depth: int = 1,
    ) -> tuple[Tensor, Tensor]:
        """MTP module `depth` at slots start_pos..: h_prev (B, T, dim), next_tokens (B, T) ->
        (logits (B, T, V), the module's hidden state (B, T, dim))."""
        B, T = next_tokens.shape
        eps = self.args.norm_eps
        step = self._step(cache, B, T, start_pos)
        emb = F.embedding(next_tokens.reshape(-1), self.model.embed.weight)  # (B*T, dim)
        joined = torch.cat([_rms(emb, eps), _rms(h_prev.reshape(B * T, -1), eps)], dim=-1)
        x = torch.mm(joined, self.mtp_in[depth - 1])  # (B*T, dim)
        block = self.mtp_blocks[depth - 1]
        x = block(x, step)
        norm = self.mtp_modules[depth - 1].norm.weight
        logits = torch.mm(_rms(x, eps, norm), self.head)  # (B*T, V)
        return logits.view(B, T, -1), x.view(B, T, -1)


# ----------------------------------------------------------------------------------------------
# Per-sample bookkeeping


@dataclass
class _Request:
    index: int
    ids: list[int]
    params: SamplingParams
    seed: int


@dataclass
class _Row:
    """One sample being generated."""

    request: _Request
    sample: int
    cap: int  # most tokens it may produce
    eos_id: int
    tokenizer: R1Tokenizer
    generator: torch.Generator | None
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    stop_reason: str | int | None = None
    text: str | None = None  # set when a stop string cut it
    drafted: int = 0
    accepted: int = 0

    @property
    def params(self) -> SamplingParams:
        return self.request.params

    def uniforms(self, k: int) -> Tensor:
        if self.generator is None:  # greedy rows draw nothing
            return torch.zeros(k)
        return torch.rand(k, generator=self.generator)

    def emit(self, token: int, logprob: float | None) -> bool:
        """Append one token; True when the sample is finished."""
        if self.finish_reason is not None:
            return True
        self.token_ids.append(token)
        if logprob is not None and self.params.logprobs:
            self.logprobs.append(logprob)
        if token == self.eos_id and not self.params.ignore_eos:
            self.finish_reason, self.stop_reason = "stop", token
        elif self.params.stop and self._hit_stop():
            self.finish_reason = "stop"
        elif len(self.token_ids) >= self.cap:
            self.finish_reason = "length"
        return self.finish_reason is not None

    def _hit_stop(self) -> bool:
        # A token decodes to at least one byte, a character to at most four: the last
        # 4 * len(stop) + 1 tokens hold any stop string the newest token can have completed.
        window = 4 * max(len(s) for s in self.params.stop) + 1
        tail = self.tokenizer.decode(self.token_ids[-window:])
        if not any(s in tail for s in self.params.stop):
            return False
        full = self.tokenizer.decode(self.token_ids)
        hits = [(full.find(s), s) for s in self.params.stop if s in full]
        at, stop = min(hits)
        self.text, self.stop_reason = full[:at], stop
        return True

    def completion(self) -> Completion:
        assert self.finish_reason is not None
        text = self.text if self.text is not None else self.tokenizer.decode(self.token_ids)
        return Completion(
            text=text,
            token_ids=list(self.token_ids),
            logprobs=list(self.logprobs) if self.params.logprobs else None,
            finish_reason=self.finish_reason,
            stop_reason=self.stop_reason,
            prompt_tokens=len(self.request.ids),
            completion_tokens=len(self.token_ids),
            index=self.sample,
            seed=self.request.seed,
            drafted_tokens=self.drafted,
            accepted_tokens=self.accepted,
        )


# ----------------------------------------------------------------------------------------------
# generate


def generate(
    model: Transformer,
    tokenizer: R1Tokenizer,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    params: SamplingParams | Sequence[SamplingParams] | None = None,
    *,
    mtp: bool = False,
    max_batch_rows: int = 32,
    engine: DecodeEngine | None = None,
    stats: GenerationStats | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[list[Completion]]:
    """Sample completions: result[i][j] is sample j of prompt i.

    prompts: texts (encoded as they are: render them with the chat template first) or token
    ids. params: one for all prompts (prompt i seeded `request_seed(seed, i)`) or one per
    prompt (each seed used as is). mtp: MTP speculative decoding (needs MTP modules).
    max_batch_rows: samples decoded together; prompts are grouped by length, which does not
    change any result. engine: a `DecodeEngine(model)` to reuse across calls while the weights
    do not change (building one copies the weights). progress(k) is called as k more prompts
    finish.
    """
    requests = _requests(tokenizer, prompts, params)
    if mtp and len(model.mtp) == 0:
        raise ValueError("mtp=True needs a model with MTP modules (n_mtp_depth >= 1)")
    if engine is not None and (engine.model is not model or not engine.is_current()):
        raise ValueError("engine: built from another model or from older weights; build a new one")
    if max_batch_rows < 1:
        raise ValueError(f"max_batch_rows must be >= 1, got {max_batch_rows}")
    limit, vocab = model.args.max_seq_len, model.args.vocab_size
    for req in requests:
        if min(req.ids) < 0 or max(req.ids) >= vocab:
            raise ValueError(
                f"prompt {req.index} holds token ids outside the model's vocabulary [0, {vocab})"
            )
        if len(req.ids) >= limit:
            raise ValueError(
                f"prompt {req.index} has {len(req.ids)} tokens; the model's max_seq_len is "
                f"{limit}: shorten it"
            )
    results: list[list[Completion]] = [[] for _ in requests]
    # The engine reads the weights only: the model's mode, router counters and autograd state
    # are untouched, so generating in the middle of training (RL rollouts) is safe.
    with torch.inference_mode():
        engine = engine or DecodeEngine(model)
        for batch in _batches(requests, max_batch_rows):
            for row in _run_batch(engine, tokenizer, batch, mtp, stats):
                results[row.request.index].append(row.completion())
            if progress is not None:
                progress(len(batch))
    for samples in results:
        samples.sort(key=lambda c: c.index)
    if stats is not None:
        stats.requests += len(requests)
        stats.samples += sum(len(s) for s in results)
        stats.prompt_tokens += sum(len(r.ids) * r.params.n for r in requests)
        stats.completion_tokens += sum(c.completion_tokens for s in results for c in s)
        stats.drafted += sum(c.drafted_tokens for s in results for c in s)
        stats.accepted += sum(c.accepted_tokens for s in results for c in s)
    return results


def _requests(
    tokenizer: R1Tokenizer,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    params: SamplingParams | Sequence[SamplingParams] | None,
) -> list[_Request]:
    if isinstance(prompts, str):
        raise TypeError("prompts: pass a list of prompts, not one string")
    if params is None:
        params = SamplingParams()
    if isinstance(params, SamplingParams):
        base = secrets.randbits(63) if params.seed is None else params.seed
        per_prompt = [params] * len(prompts)
        seeds = [request_seed(base, i) for i in range(len(prompts))]
    else:
        per_prompt = list(params)
        if len(per_prompt) != len(prompts):
            raise ValueError(f"got {len(per_prompt)} SamplingParams for {len(prompts)} prompts")
        seeds = [secrets.randbits(63) if p.seed is None else p.seed for p in per_prompt]
    requests = []
    for i, (prompt, p, seed) in enumerate(zip(prompts, per_prompt, seeds, strict=True)):
        if isinstance(prompt, str):
            ids = tokenizer.encode(prompt)
        else:
            ids = [int(t) for t in cast(Sequence[int], prompt)]
        if not ids:
            raise ValueError(f"prompt {i} is empty")
        requests.append(_Request(i, ids, p, seed))
    return requests


def _batches(requests: list[_Request], max_rows: int) -> list[list[_Request]]:
    """Longest prompts first, packed up to max_rows samples per batch (one request at least)."""
    batches: list[list[_Request]] = []
    rows = 0
    for req in sorted(requests, key=lambda r: (-len(r.ids), r.index)):
        if batches and rows + req.params.n <= max_rows:
            batches[-1].append(req)
            rows += req.params.n
        else:
            batches.append([req])
            rows = req.params.n
    return batches


def _run_batch(
    engine: DecodeEngine,
    tokenizer: R1Tokenizer,
    batch: list[_Request],
    mtp: bool,
    stats: GenerationStats | None,
) -> list[_Row]:
    model, args = engine.model, engine.args
    device = model.embed.weight.device
    dtype = model.embed.weight.dtype
    rows = [
        _Row(
            request=req,
            sample=j,
            cap=min(req.params.max_tokens, args.max_seq_len - len(req.ids)),
            eos_id=tokenizer.eos_id,
            tokenizer=tokenizer,
            generator=None
            if req.params.greedy
            else torch.Generator().manual_seed(sample_seed(req.seed, j)),
        )
        for req in batch
        for j in range(req.params.n)
    ]
    U, R = len(batch), len(rows)
    # Speculative decoding starts by re-running the MTP module on the last two prompt slots.
    P = max(max(len(req.ids) for req in batch), 2 if mtp else 1)
    # A speculative step writes a draft one slot past the last token it may keep.
    slots = P + max(row.cap for row in rows) + (1 if mtp else 0)
    cache = LatentCache.allocate(args, R, slots, mtp=mtp, dtype=dtype, device=device)

    began = time.perf_counter()
    tokens = torch.full((U, P), tokenizer.pad_id, dtype=torch.long, device=device)
    for u, req in enumerate(batch):
        tokens[u, P - len(req.ids) :] = torch.tensor(req.ids)
        cache.bias[u, : P - len(req.ids)] = float("-inf")  # left padding
    logits, hidden = _prefill(engine, cache, tokens, mtp)
    # Every sample of a prompt starts from a copy of the prompt's cache rows.
    expand = torch.tensor([u for u, req in enumerate(batch) for _ in range(req.params.n)])
    cache.gather_rows(expand, P)
    logits = logits[expand]  # (R, V)
    if stats is not None:
        stats.prefill_seconds += time.perf_counter() - began
    began = time.perf_counter()
    if mtp:
        tail = hidden[:, P - 2 :][expand]  # (R, 2, dim)
        _speculative(engine, cache, rows, logits, tail, tokens[:, -1][expand], P, stats)
    else:
        _plain(engine, cache, rows, logits, P, stats)
    if stats is not None:
        stats.decode_seconds += time.perf_counter() - began
    assert len(rows) == R
    return rows


# Prefill attends in chunks of prompt tokens so the (B, T * H, S) scores stay this small.
PREFILL_SCORES = 1 << 22


def _prefill(
    engine: DecodeEngine, cache: LatentCache, tokens: Tensor, mtp: bool
) -> tuple[Tensor, Tensor]:
    """Fill the cache with the (left-padded) prompts: (last logits (U, V), hidden states
    (U, P, dim) with `mtp`, else of the last chunk only).

    With `mtp`, the MTP module's cache is filled for slots 0..P-3 as well; the speculative loop
    starts by (re)computing slots P-2 and P-1.
    """
    U, P = tokens.shape
    chunk = max(16, PREFILL_SCORES // (U * engine.args.n_heads * P))
    hidden = []
    logits = tokens.new_empty(0)
    for a in range(0, P, chunk):
        b = min(a + chunk, P)
        logits, h = engine.forward(cache, tokens[:, a:b], a, keep_last=1)
        hidden.append(h)
        if not mtp:
            hidden = hidden[-1:]
    h_all = torch.cat(hidden, dim=1)  # (U, P, dim) with mtp
    if mtp:
        # Slot i of the MTP module reads the main model's hidden state at i and token i + 1.
        for a in range(0, P - 2, chunk):
            b = min(a + chunk, P - 2)
            engine.forward_mtp(cache, h_all[:, a:b], tokens[:, a + 1 : b + 1], a)
    return logits[:, -1], h_all


def _choose(
    logits: Tensor, active: list[_Row], rp: _RowParams
) -> tuple[Tensor, list[float] | list[None]]:
    """Sample one token per row from (R, V) logits -> ids (R,), raw log-probs per row."""
    if rp.all_greedy:
        chosen = logits.argmax(dim=-1)
    else:
        u = torch.stack([row.uniforms(1)[0] for row in active]).to(logits.device)
        chosen = sample_from(rp.probs(logits), u)
    return chosen, _logprobs(logits, chosen, rp)


def _logprobs(logits: Tensor, chosen: Tensor, rp: _RowParams) -> list[float] | list[None]:
    if not rp.any_logprobs:
        return [None] * chosen.shape[0]
    logp = logits.float().log_softmax(dim=-1).gather(-1, chosen.unsqueeze(-1)).squeeze(-1)
    values: list[float] = logp.tolist()
    return values


def _emit_all(active: list[_Row], chosen: Tensor, logprobs: Sequence[float | None]) -> list[int]:
    """Give each row its token; the positions (in `active`) of rows still running."""
    return [
        i
        for i, (row, token, lp) in enumerate(zip(active, chosen.tolist(), logprobs, strict=True))
        if not row.emit(token, lp)
    ]


def _plain(
    engine: DecodeEngine,
    cache: LatentCache,
    rows: list[_Row],
    logits: Tensor,
    start: int,
    stats: GenerationStats | None,
) -> None:
    device = logits.device
    active = list(rows)
    rp = _RowParams.of([row.params for row in active], device)
    s = start
    while True:
        chosen, logprobs = _choose(logits, active, rp)
        alive = _emit_all(active, chosen, logprobs)
        if not alive:
            return
        if len(alive) < len(active):
            keep = torch.tensor(alive, device=device)
            cache.gather_rows(keep, s)
            active = [active[i] for i in alive]
            rp = _RowParams.of([row.params for row in active], device)
            chosen = chosen[keep]
        logits = engine.forward(cache, chosen.unsqueeze(-1), s)[0][:, -1]
        s += 1
        if stats is not None:
            stats.main_forwards += 1
            stats.row_forwards += len(active)


def _speculative(
    engine: DecodeEngine,
    cache: LatentCache,
    rows: list[_Row],
    logits: Tensor,
    h_tail: Tensor,
    last_prompt_token: Tensor,
    start: int,
    stats: GenerationStats | None,
) -> None:
    """MTP depth-1 draft, two-token verification. State per row, with pos its next free slot:
    x, the sampled token not yet in the cache (slot pos); h2/t2, the MTP inputs for slots
    pos-2 and pos-1 (hidden state of the main model there, and the token after it). A row that
    keeps its draft advances two slots, one that does not advances one: rows write at their
    own slots (a ragged step), and the slot a rejected draft was written to is masked until
    the row's next token overwrites it."""
    device = logits.device
    active = list(rows)
    rp = _RowParams.of([row.params for row in active], device)
    pos = torch.full((len(active),), start, device=device)
    x, logprobs = _choose(logits, active, rp)
    alive = _emit_all(active, x, logprobs)
    h2 = h_tail  # (R, 2, dim)
    t2 = torch.stack([last_prompt_token, x], dim=1)  # (R, 2)
    while True:
        if not alive:
            return
        if len(alive) < len(active):
            keep = torch.tensor(alive, device=device)
            cache.gather_rows(keep, int(pos.max()) + 2)
            active = [active[i] for i in alive]
            rp = _RowParams.of([row.params for row in active], device)
            x, h2, t2, pos = x[keep], h2[keep], t2[keep], pos[keep]
        u = torch.stack([row.uniforms(3) for row in active]).to(device)  # (R, 3)

        # Draft: the MTP module at slots pos-2, pos-1 predicts the token at slot pos+1.
        draft_logits = engine.forward_mtp(cache, h2, t2, pos - 2)[0][:, -1]  # (R, V)
        # Verify: the main model over [x, draft] at slots pos, pos+1.
        if rp.all_greedy:
            draft = draft_logits.argmax(dim=-1)
            logits, hid = engine.forward(cache, torch.stack([x, draft], dim=1), pos)
            target = logits[:, 0].argmax(dim=-1)
            accepted = draft == target
            first = target  # the draft where accepted, the correction elsewhere
            bonus = logits[:, 1].argmax(dim=-1)
        else:
            q = rp.probs(draft_logits)
            draft = sample_from(q, u[:, 0])
            logits, hid = engine.forward(cache, torch.stack([x, draft], dim=1), pos)
            accepted, first = accept_draft(rp.probs(logits[:, 0]), q, draft, u[:, 1], u[:, 2])
            bonus = sample_from(rp.probs(logits[:, 1]), u[:, 2])
        lp_first = _logprobs(logits[:, 0], first, rp)
        lp_bonus = _logprobs(logits[:, 1], bonus, rp)
        if stats is not None:
            stats.main_forwards += 1
            stats.row_forwards += len(active)

        alive = []
        for i, (row, acc, tok1, tok2) in enumerate(
            zip(active, accepted.tolist(), first.tolist(), bonus.tolist(), strict=True)
        ):
            row.drafted += 1
            row.accepted += int(acc)
            done = row.emit(tok1, lp_first[i])
            if acc:
                done = row.emit(tok2, lp_bonus[i])
            if not done:
                alive.append(i)
        keep_new = accepted.view(-1, 1, 1)
        h2 = torch.where(keep_new, hid, torch.stack([h2[:, 1], hid[:, 0]], dim=1))
        t2 = torch.where(
            accepted.unsqueeze(-1),
            torch.stack([draft, bonus], dim=1),
            torch.stack([t2[:, 1], first], dim=1),
        )
        x = torch.where(accepted, bonus, first)
        pos = pos + 1 + accepted.long()
