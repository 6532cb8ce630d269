"""Rollouts for GRPO: G samples per prompt from the policy as it is now, with the sampler's
log-probs, laid out for the training forward.

    sampler = PolicySampler(model, tokenizer)
    batch = sampler.rollout(prompt_ids, group_size=8, params=SamplingParams(temperature=1.0,
                            max_tokens=64, seed=step))
    logp, out = response_logprobs(model, batch.tokens, batch.attention_mask, batch.prompt_len)
    loss = clipped_policy_loss(logp, batch.sampler_logprobs, adv, 0.2, 0.2).loss ...
    optimizer.step()  # the next sampler.rollout() sees the new weights

Layout of a batch of B = n_prompts * G rows (row i * G + j is sample j of prompt i): each
prompt left-padded to P, each completion right-padded to T, so every response token sits at
the same column P + t in every row. `Transformer.forward(tokens, key_padding_mask=...)` over
that is the training forward; its logits at column P - 1 + t score response token t.

One model in sampling and training: the sampler's log-probs are the raw log-softmax of the
decode engine's logits (`trainer.generate`), the training forward's are the model's own; in
fp32 they agree to rounding (tested below 1e-5, measured 3e-6 on a trained toy model), so the
ratio against the sampling policy is 1 before the first update. Both are computed from raw
logits, before temperature or top-p, so the ratio compares the policies themselves.

The decode engine copies the weights (rearranged) when built, so after an optimizer step it is
stale; `PolicySampler` rebuilds it whenever `DecodeEngine.is_current()` says the weights moved
(version counters: in-place optimizer updates included) and counts what that costs.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from trainer.generate import (
    Completion,
    DecodeEngine,
    GenerationStats,
    SamplingParams,
    generate,
)
from trainer.model.model import ModelOutput, Transformer
from trainer.tokenizer import R1Tokenizer


@dataclass
class Rollout:
    """G samples of each prompt, in the training layout (see the module docstring)."""

    tokens: Tensor  # (B, P + T) long: prompt left-padded, completion right-padded (pad id)
    attention_mask: Tensor  # (B, P + T) bool: True on real tokens (prompt and completion)
    response_mask: Tensor  # (B, T) bool: True on sampled tokens (EOS included)
    sampler_logprobs: Tensor  # (B, T) float32: the sampler's raw log-probs, 0 on padding
    completions: list[Completion]  # one per row, row order
    group_size: int  # G
    prompt_len: int  # P

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    @property
    def response_len(self) -> int:
        return self.response_mask.shape[1]

    @property
    def response_tokens(self) -> Tensor:
        """(B, T): the completion tokens (pad id on padding)."""
        return self.tokens[:, self.prompt_len :]


def collate(
    prompts: Sequence[Sequence[int]],
    samples: Sequence[Sequence[Completion]],
    pad_id: int,
    *,
    device: torch.device | str = "cpu",
) -> Rollout:
    """Lay out `samples[i][j]` (sample j of prompt i, every prompt with the same number of
    samples, each carrying log-probs) as a `Rollout`."""
    if len(prompts) != len(samples) or not prompts:
        raise ValueError(f"{len(prompts)} prompts and {len(samples)} sample lists")
    group = len(samples[0])
    if group == 0 or any(len(s) != group for s in samples):
        raise ValueError("every prompt needs the same, non-zero number of samples")
    rows = [
        (list(p), c)
        for p, group_samples in zip(prompts, samples, strict=True)
        for c in group_samples
    ]
    for _, c in rows:
        if c.logprobs is None or len(c.logprobs) != len(c.token_ids):
            raise ValueError("every completion needs its log-probs (SamplingParams.logprobs)")
    P = max(len(p) for p, _ in rows)
    T = max(max(len(c.token_ids) for _, c in rows), 1)
    B = len(rows)
    tokens = torch.full((B, P + T), pad_id, dtype=torch.long)
    attention = torch.zeros(B, P + T, dtype=torch.bool)
    logprobs = torch.zeros(B, T, dtype=torch.float32)
    for i, (p, c) in enumerate(rows):
        n = len(c.token_ids)
        tokens[i, P - len(p) : P] = torch.tensor(p, dtype=torch.long)
        tokens[i, P : P + n] = torch.tensor(c.token_ids, dtype=torch.long)
        attention[i, P - len(p) : P + n] = True
        logprobs[i, :n] = torch.tensor(c.logprobs, dtype=torch.float32)
    return Rollout(
        tokens=tokens.to(device),
        attention_mask=attention.to(device),
        response_mask=attention[:, P:].to(device),
        sampler_logprobs=logprobs.to(device),
        completions=[c for _, c in rows],
        group_size=group,
        prompt_len=P,
    )


def response_logprobs(
    model: Transformer, tokens: Tensor, attention_mask: Tensor, prompt_len: int
) -> tuple[Tensor, Tensor, ModelOutput]:
    """The training forward over rollout rows: (log-probs (B, T) fp32 of the response tokens,
    their logits (B, T, V), the model's output).

    tokens, attention_mask: (B, P + T) in the `Rollout` layout; prompt_len: P. Runs with
    whatever grad mode and train/eval mode the caller set (the model has no dropout: both modes
    give the same logits; train mode adds the sequence balance loss to `aux_loss`).
    """
    T = tokens.shape[1] - prompt_len
    if T < 1 or prompt_len < 1:
        raise ValueError(f"need a prompt and a response: P={prompt_len}, T={T}")
    # Only the T positions that predict response tokens need the output head: the last T + 1
    # columns minus the final one (its prediction lies past the sequence).
    out = model(tokens, key_padding_mask=attention_mask, keep_last=T + 1)
    logits = out.logits[:, :-1]  # (B, T, V): column P - 1 + t predicts response token t
    targets = tokens[:, prompt_len:]  # (B, T)
    logp = logits.float().log_softmax(dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return logp, logits, out


@torch.no_grad()
def logprob_gap(model: Transformer, rollout: Rollout) -> float:
    """Largest |training forward - sampler| log-prob over the response tokens: the check that
    the ratio starts at 1 (call it before any update on this rollout)."""
    logp, _, _ = response_logprobs(
        model, rollout.tokens, rollout.attention_mask, rollout.prompt_len
    )
    gap = (logp - rollout.sampler_logprobs).abs()
    return float(gap[rollout.response_mask].max()) if rollout.response_mask.any() else 0.0


class PolicySampler:
    """Samples rollouts from `model` as its weights are now.

    The decode engine is reused while the weights are unchanged and rebuilt as soon as they
    moved (`DecodeEngine.is_current()`), so every rollout after an optimizer step samples from
    the updated policy. `rebuilds` and `rebuild_seconds` say what that cost; `stats` collects
    the sampler's counters over all rollouts.
    """

    def __init__(
        self,
        model: Transformer,
        tokenizer: R1Tokenizer,
        *,
        max_batch_rows: int = 64,
        mtp: bool = False,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_rows = max_batch_rows
        self.mtp = mtp
        self.rebuilds = 0
        self.rebuild_seconds = 0.0
        self.stats = GenerationStats()
        self._engine: DecodeEngine | None = None

    def engine(self) -> DecodeEngine:
        """The engine for the current weights (rebuilt if they changed since the last call)."""
        if self._engine is None or not self._engine.is_current():
            began = time.perf_counter()
            with torch.no_grad():
                self._engine = DecodeEngine(self.model)
            self.rebuild_seconds += time.perf_counter() - began
            self.rebuilds += 1
        return self._engine

    def rollout(
        self,
        prompts: Sequence[str] | Sequence[Sequence[int]],
        group_size: int,
        params: SamplingParams,
    ) -> Rollout:
        """`group_size` samples of every prompt (texts are encoded as they are: render them with
        the chat template first), with log-probs. `params.n` and `params.logprobs` are set here;
        one `params.seed` seeds prompt i as `generate` does (`request_seed(seed, i)`)."""
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        ids = [
            self.tokenizer.encode(p) if isinstance(p, str) else [int(t) for t in p] for p in prompts
        ]
        params = dataclasses.replace(params, n=group_size, logprobs=True)
        samples = generate(
            self.model,
            self.tokenizer,
            ids,
            params,
            mtp=self.mtp,
            max_batch_rows=self.max_batch_rows,
            engine=self.engine(),
            stats=self.stats,
        )
        device = self.model.embed.weight.device
        return collate(ids, samples, self.tokenizer.pad_id, device=device)
