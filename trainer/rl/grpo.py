"""The GRPO loop: rollouts from the policy as it is, rule rewards, group advantages, several
clipped updates per rollout batch, the KL reference refreshed on schedule.

    summary = run_grpo(cfg, eval_problems=problems, resume=False)

One GRPO step (`grpo_step`):

1. **Rollout.** `prompts_per_step` prompts from the prompt table (a seeded order per epoch,
   its position saved for resume), posed in the R1-Zero template, G samples each from the
   cached sampler (`trainer.rl.rollout.PolicySampler`, its engine rebuilt when the weights
   moved), seeded by (run seed, step), with the sampler's log-probs.
2. **Rewards** (`trainer.rl.rewards`): the weighted sum of the configured rule rewards; a
   sample any weighted reward could not judge is masked (`valid` False), never scored 0.
3. **Advantages**: `group_advantages(rewards, G, valid=...)`.
4. **Old and reference log-probs**: the policy that sampled is the sampler's own log-probs
   (equal to the training forward in fp32, to rounding), or a recomputed training forward
   (`loss.old_logprobs: recompute`, and always when the training forward differs from the
   sampler's on purpose, as FP8's does); the reference model's when `beta > 0`.
5. **Updates**: `updates_per_batch` passes over the batch, each cut into seeded mini-batches,
   one optimizer step each: the training forward (`response_logprobs`), `grpo_token_loss`, a
   mini-batch's numerator over its own denominator (micro-batches inside it accumulate
   exactly), backward, global-norm clipping, AdamW and the schedule (the trainer's own
   `build_optimizer` / `build_scheduler` / `clip_grad_norm`), then the router-bias update
   from the load of the mini-batch's real tokens (`DeepSeekV3Model.after_step`).
6. **Reference refresh**: every `reference.refresh_every` steps the reference becomes the
   policy (`copy_weights_`).

Rows that carry no gradient are not forwarded: with `beta == 0` a row whose advantage is 0
(a masked sample, or a group whose rewards are all equal) adds exactly 0 to the GRPO loss and
its gradient, so it is counted in the denominators as the formula says and skipped in the
forward. The balance loss and the router load are counted over the rows forwarded.

The run (`run_grpo`) is the supervised run's shape: the same checkpoint layout
(`save_training_checkpoint`: model in the Hugging Face layout, optimizer, schedule, RNG, the
prompt position; plus `reference.safetensors` once the reference differs from the starting
checkpoint), `metrics.jsonl` and TensorBoard, evaluation on held-out problems before, every
`loop.eval_every` steps and after, and metadata naming the parent checkpoint (path and weights
hash) and the prompt table (table, version, content hash). Killed at any moment and resumed,
it continues exactly: every random choice is seeded by (seed, step), not drawn from a global
generator, and everything else a step depends on is in the checkpoint.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from store.config import config_hash, config_to_dict
from trainer.adapters import DeepSeekV3Model
from trainer.data import DataError, DataSource, DataState, load_rows
from trainer.evaluate import EvalProblem, EvalReport, follows_format, mixes_languages
from trainer.generate import SamplingParams
from trainer.metrics import MetricsLog, Progress
from trainer.model import Transformer, add_expert_load, max_load_violation
from trainer.optim import build_optimizer, build_scheduler, clip_grad_norm
from trainer.rl.config import GRPOConfig, LossConfig, RewardsConfig
from trainer.rl.core import (
    copy_weights_,
    entropy_from_logits,
    group_advantages,
    grpo_token_loss,
    kl_k3,
    loss_denominator,
    loss_numerator,
    minibatches,
    reference_refresh_due,
)
from trainer.rl.rewards import (
    AccuracyReward,
    FormatReward,
    LanguageReward,
    LengthPenalty,
    RepetitionPenalty,
    RewardFunction,
    RewardInput,
    combine_rewards,
    reward_metrics,
    score,
)
from trainer.rl.rollout import PolicySampler, Rollout, response_logprobs
from trainer.tokenizer import R1Tokenizer, generation_prefix, render_prompt
from trainer.train import (
    SUMMARY_FILE,
    TrainError,
    build_model,
    evaluate_model,
    load_weights,
    publish_model,
    record_use,
)
from trainer.train_state import (
    CHECKPOINTS,
    latest_checkpoint,
    load_training_state,
    remove_partials,
    save_training_checkpoint,
)

REFERENCE_FILE = "reference.safetensors"
PLOT_FILE = "grpo.png"
# The Sample fields an RL prompt needs.
PROMPT_COLUMNS = ["prompt_id", "prompt", "gold", "domain", "track", "language", "source"]

# ----------------------------------------------------------------------------------------------
# Prompts


@dataclass(frozen=True)
class RLPrompt:
    """One prompt of the RL prompt table, as the rewards need it."""

    prompt_id: str
    prompt: str
    gold: str | None
    domain: str = "math"
    track: str = "reasoning"
    language: str | None = None
    source: str = ""

    @property
    def think(self) -> bool:
        return self.track != "non_reasoning"

    def rendered(self) -> str:
        """The prompt in the R1-Zero template: chat template, default system text, the
        assistant turn opened with `<think>` (`<think></think>` for the non-reasoning track)."""
        return render_prompt(self.prompt, think=self.think)


def load_prompts(spec: str, store: Any) -> tuple[DataSource, list[RLPrompt]]:
    """The prompts of `NAME@V` (or a release directory), in content order (by sample_id)."""
    source, rows = load_rows(spec, store, columns=PROMPT_COLUMNS)
    prompts = [
        RLPrompt(
            prompt_id=str(r.get("prompt_id") or r["sample_id"]),
            prompt=str(r["prompt"]),
            gold=r.get("gold"),
            domain=str(r.get("domain") or "math"),
            track=str(r.get("track") or "reasoning"),
            language=r.get("language"),
            source=str(r.get("source") or ""),
        )
        for r in rows
    ]
    return source, prompts


class PromptStream:
    """Prompts in a seeded order, epoch after epoch; `state()` is the position a checkpoint
    saves (the order of an epoch depends on (seed, epoch) alone, so a rebuilt stream
    continues exactly)."""

    def __init__(
        self, prompts: Sequence[RLPrompt], seed: int, state: DataState | None = None
    ) -> None:
        if not prompts:
            raise ValueError("no prompts")
        self.prompts = list(prompts)
        self.seed = seed
        self._state = state or DataState()
        self._order: tuple[int, list[int]] | None = None

    def order(self, epoch: int) -> list[int]:
        if self._order is None or self._order[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._order = (epoch, torch.randperm(len(self.prompts), generator=g).tolist())
        return self._order[1]

    def state(self) -> DataState:
        return self._state

    def next(self, n: int) -> list[RLPrompt]:
        epoch, row = self._state.epoch, self._state.row
        out: list[RLPrompt] = []
        while len(out) < n:
            if row >= len(self.prompts):
                epoch, row = epoch + 1, 0
            out.append(self.prompts[self.order(epoch)[row]])
            row += 1
        self._state = DataState(epoch, row)
        return out


# ----------------------------------------------------------------------------------------------
# Rewards


@contextmanager
def reward_functions(cfg: RewardsConfig, max_tokens: int) -> Iterator[list[RewardFunction]]:
    """The rewards `cfg.weights` names, with the verifier workers they need started for the
    run and stopped after it."""
    with ExitStack() as stack:
        functions: list[RewardFunction] = []
        for name in cfg.weights:
            if name == "accuracy":
                from verifiers.code import SandboxPool
                from verifiers.math import MathVerifier

                math_verifier = stack.enter_context(
                    MathVerifier(workers=cfg.math_workers, timeout=cfg.math_timeout)
                )
                sandbox = (
                    stack.enter_context(SandboxPool(workers=cfg.sandbox_workers))
                    if cfg.sandbox_workers > 0
                    else None
                )
                functions.append(
                    AccuracyReward(math_verifier, sandbox, code_timeout=cfg.code_timeout)
                )
            elif name == "format":
                functions.append(FormatReward())
            elif name == "language":
                functions.append(LanguageReward(cfg.language))
            elif name == "length":
                functions.append(
                    LengthPenalty(max_tokens, min(cfg.length_buffer_tokens, max_tokens))
                )
            elif name == "repetition":
                functions.append(RepetitionPenalty(cfg.repetition_ngram))
        yield functions


def reward_inputs(batch: Rollout, prompts: Sequence[RLPrompt]) -> list[RewardInput]:
    """What the rewards read of every row: the full R1 text (the template's opened `<think>`
    and the completion), the prompt's gold, domain and language, the sampled token count."""
    G = batch.group_size
    return [
        RewardInput(
            completion=generation_prefix(prompts[i // G].think) + c.text,
            gold=prompts[i // G].gold,
            domain=prompts[i // G].domain,
            language=prompts[i // G].language,
            completion_tokens=c.completion_tokens,
        )
        for i, c in enumerate(batch.completions)
    ]


def completion_metrics(items: Sequence[RewardInput], default_language: str) -> dict[str, float]:
    """Format rate and mixed-language rate of the chains of thought, whatever is rewarded:
    the same judgements the held-out evaluation makes (`trainer.evaluate.follows_format`,
    `mixes_languages`)."""
    formatted = sum(follows_format(item.completion) for item in items)
    mixed = sum(
        mixes_languages(item.completion, item.language or default_language) for item in items
    )
    n = max(len(items), 1)
    return {"format_rate": formatted / n, "mixed_language_rate": mixed / n}


# ----------------------------------------------------------------------------------------------
# One GRPO step


@dataclass
class GRPOParts:
    """What a step works with (built once per run by `run_grpo`)."""

    model: DeepSeekV3Model
    reference: Transformer | None  # the KL reference, when beta > 0
    sampler: PolicySampler
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    rewards: list[RewardFunction]
    recompute_old: bool  # old log-probs from a training forward, not the sampler


@dataclass
class _Rows:
    """A set of rollout rows cut to the columns they use (no all-padding column)."""

    index: Tensor  # (b,) rows of the batch
    tokens: Tensor  # (b, p + t)
    attention: Tensor  # (b, p + t)
    prompt_len: int  # p
    response: slice  # the t response columns these rows use, out of the batch's T


def _rows(batch: Rollout, index: Tensor) -> _Rows:
    """Rows `index` of the batch, left prompt padding and right response padding every one of
    them has cut away (RoPE depends on relative positions only, so the log-probs are the
    same to rounding)."""
    attention = batch.attention_mask[index]  # (b, P + T)
    used = attention.any(dim=0)  # (P + T,)
    columns = used.nonzero().flatten()
    first = min(int(columns[0]), batch.prompt_len - 1)
    last = max(int(columns[-1]) + 1, batch.prompt_len + 1)
    return _Rows(
        index=index,
        tokens=batch.tokens[index, first:last],
        attention=attention[:, first:last],
        prompt_len=batch.prompt_len - first,
        response=slice(0, last - batch.prompt_len),
    )


@torch.no_grad()
def _forward_logprobs(model: torch.nn.Module, batch: Rollout, rows_per_forward: int) -> Tensor:
    """(B, T) log-probs of the response tokens under `model`, no gradient (0 on padding)."""
    out = torch.zeros_like(batch.sampler_logprobs)
    for index in torch.arange(batch.batch_size).split(rows_per_forward):
        part = _rows(batch, index)
        logp, _, _ = response_logprobs(model, part.tokens, part.attention, part.prompt_len)  # type: ignore[arg-type]
        out[index, part.response] = logp
    return out * batch.response_mask


@dataclass
class _UpdateStats:
    """Sums over the updates of one step, turned into metrics at the end."""

    optimizer_steps: int = 0
    loss: float = 0.0
    grad_norm: float = 0.0
    tokens: int = 0  # real tokens forwarded (prompt and response, all passes)
    mask_tokens: float = 0.0  # response tokens in the loss, all passes
    clipped: float = 0.0
    policy_kl: float = 0.0  # k3 of the policy against the one that sampled
    ratio_max: float = 0.0
    entropy_sum: float = 0.0  # first pass only
    entropy_tokens: float = 0.0
    logprob_gap: float | None = None  # first mini-batch of the first pass
    violations: dict[str, float] = field(default_factory=dict)
    max_violation: float | None = None


def carries_gradient(advantages: Tensor, beta: float) -> Tensor:
    """(B,) bool: rows whose loss has a gradient: a non-zero advantage, or a KL term."""
    return advantages != 0 if beta == 0 else torch.ones_like(advantages, dtype=torch.bool)


def policy_update(
    parts: GRPOParts,
    batch: Rollout,
    advantages: Tensor,
    loss_mask: Tensor,
    old_logp: Tensor,
    ref_logp: Tensor | None,
    loss: LossConfig,
    *,
    horizon: int,
    grad_clip: float,
    generator: torch.Generator,
) -> _UpdateStats:
    """`loss.updates_per_batch` passes over the batch in seeded mini-batches, one optimizer
    step each. advantages (B,); loss_mask, old_logp, ref_logp (B, T)."""
    model, stats = parts.model, _UpdateStats()
    B = batch.batch_size
    active = loss_mask.any(dim=1) & carries_gradient(advantages, loss.beta)  # (B,)
    minibatch_rows = loss.minibatch_rows or B
    for update in range(loss.updates_per_batch):
        for mb_index, minibatch in enumerate(minibatches(B, minibatch_rows, generator)):
            minibatch = minibatch.sort().values  # a fixed row order inside the mini-batch
            denominator = loss_denominator(loss_mask[minibatch], loss.aggregation)
            trained = minibatch[active[minibatch]]
            parts.optimizer.zero_grad(set_to_none=True)
            load: dict[int, Tensor] = {}
            mb_loss = 0.0
            micro = trained.split(loss.microbatch_rows or len(trained)) if len(trained) else ()
            for index in micro:
                part = _rows(batch, index)
                logp, logits, out = response_logprobs(
                    model.module,  # type: ignore[arg-type]
                    part.tokens,
                    part.attention,
                    part.prompt_len,
                )
                mask = loss_mask[index, part.response]
                terms = grpo_token_loss(
                    logp,
                    old_logp[index, part.response],
                    advantages[index],
                    loss.clip_low,
                    loss.clip_high,
                    ref_logp=None if ref_logp is None else ref_logp[index, part.response],
                    beta=loss.beta,
                    kl_estimator=loss.kl_estimator,
                    kl_ratio_weighted=loss.kl_ratio_weighted,
                )
                numerator = loss_numerator(terms.loss, mask, loss.aggregation, horizon=horizon)
                objective = numerator / denominator
                if out.aux_loss is not None:
                    # The balance loss is a mean over sequences: weigh it by this share.
                    objective = objective + out.aux_loss * (len(index) / len(trained))
                objective.backward()
                mb_loss += float(objective.detach())
                add_expert_load(load, out.expert_load)
                with torch.no_grad():
                    m = mask.float()
                    stats.tokens += int(part.attention.sum())
                    stats.mask_tokens += float(m.sum())
                    stats.clipped += float((terms.clipped.float() * m).sum())
                    drift = kl_k3(logp.detach(), old_logp[index, part.response])
                    stats.policy_kl += float((drift * m).sum())
                    if m.any():
                        stats.ratio_max = max(stats.ratio_max, float(terms.ratio[mask].max()))
                    if update == 0:
                        stats.entropy_sum += float((entropy_from_logits(logits) * m).sum())
                        stats.entropy_tokens += float(m.sum())
                    if update == 0 and mb_index == 0:
                        real = batch.response_mask[index, part.response]
                        gap = (logp.detach() - batch.sampler_logprobs[index, part.response]).abs()
                        worst = float(gap[real].max()) if real.any() else 0.0
                        stats.logprob_gap = max(stats.logprob_gap or 0.0, worst)
            if len(trained) == 0:
                # Nothing carries a gradient: the step a zero loss would give (AdamW's
                # moments still move the weights), so skipping rows never changes a run.
                for p in model.module.parameters():
                    if p.requires_grad:
                        p.grad = torch.zeros_like(p)
            grad_norm = clip_grad_norm(model.module.parameters(), grad_clip)
            parts.optimizer.step()
            parts.scheduler.step()
            violations = model.after_step(load)
            stats.optimizer_steps += 1
            stats.loss += mb_loss
            stats.grad_norm += grad_norm
            stats.violations = violations
            worst_router = [max_load_violation(v) for v in load.values()]
            if worst_router:
                stats.max_violation = max(worst_router)
    return stats


def step_seed(seed: int, step: int) -> int:
    """The sampling seed of GRPO step `step` (0-based) of a run seeded `seed`."""
    digest = hashlib.sha256(f"r1f-grpo:{seed}:{step}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def grpo_step(
    parts: GRPOParts, prompts: Sequence[RLPrompt], cfg: GRPOConfig, step: int
) -> dict[str, Any]:
    """One GRPO step (module docstring) on `prompts`; returns its metrics record. `step` is
    the number of GRPO steps done before this one."""
    began = time.perf_counter()
    G = cfg.rollout.group_size
    params = SamplingParams(
        temperature=cfg.rollout.temperature,
        top_p=cfg.rollout.top_p,
        max_tokens=cfg.rollout.max_tokens,
        seed=step_seed(cfg.seed, step),
    )
    rebuild_before = parts.sampler.rebuild_seconds
    batch = parts.sampler.rollout([p.rendered() for p in prompts], G, params)
    rollout_seconds = time.perf_counter() - began

    scored_at = time.perf_counter()
    items = reward_inputs(batch, prompts)
    results = score(parts.rewards, items)
    rewards, valid = combine_rewards(results, cfg.rewards.weights)
    reward_seconds = time.perf_counter() - scored_at

    updated_at = time.perf_counter()
    advantages = group_advantages(
        rewards, G, valid=valid, scale_by_std=cfg.loss.scale_by_std, eps=cfg.loss.std_eps
    ).to(batch.tokens.device)
    loss_mask = batch.response_mask & valid.to(batch.tokens.device)[:, None]  # (B, T)
    rows_per_forward = cfg.loss.microbatch_rows or batch.batch_size
    parts.model.module.train()
    old_logp = (
        _forward_logprobs(parts.model.module, batch, rows_per_forward)
        if parts.recompute_old
        else batch.sampler_logprobs
    )
    ref_logp = None
    if parts.reference is not None:
        ref_logp = _forward_logprobs(parts.reference, batch, rows_per_forward)
    generator = torch.Generator().manual_seed(step_seed(cfg.seed, step) ^ 0x5EED)
    stats = policy_update(
        parts,
        batch,
        advantages,
        loss_mask,
        old_logp,
        ref_logp,
        cfg.loss,
        horizon=cfg.rollout.max_tokens,
        grad_clip=cfg.optim.grad_clip,
        generator=generator,
    )
    refreshed = False
    if parts.reference is not None and reference_refresh_due(step + 1, cfg.reference.refresh_every):
        copy_weights_(parts.reference, parts.model.base)
        refreshed = True
    update_seconds = time.perf_counter() - updated_at

    # Metrics
    mask_f = batch.response_mask.float()
    lengths = mask_f.sum(dim=1)  # (B,) sampled tokens per row
    grouped = torch.where(valid, rewards, 0.0).view(-1, G)
    group_valid = valid.view(-1, G)
    flat_groups = [
        bool(ok.sum() >= 2 and (r[ok] == r[ok][0]).all())
        for r, ok in zip(grouped, group_valid, strict=True)
    ]
    record: dict[str, Any] = {
        "kind": "train",
        "step": step + 1,
        "reward": float(rewards[valid].mean()) if valid.any() else float("nan"),
        "reward_std": float(rewards[valid].std()) if int(valid.sum()) > 1 else 0.0,
        "valid_share": float(valid.float().mean()),
        "flat_group_share": sum(flat_groups) / len(flat_groups),
        **reward_metrics(results),
        **completion_metrics(items, cfg.rewards.language),
        "response_length": float(lengths.mean()),
        "response_length_max": float(lengths.max()),
        "truncated_share": sum(c.finish_reason == "length" for c in batch.completions)
        / batch.batch_size,
        "loss": stats.loss / max(stats.optimizer_steps, 1),
        "grad_norm": stats.grad_norm / max(stats.optimizer_steps, 1),
        "lr": float(parts.optimizer.param_groups[0]["lr"]),
        "optimizer_steps": stats.optimizer_steps,
        "clip_fraction": stats.clipped / max(stats.mask_tokens, 1.0),
        "policy_kl": stats.policy_kl / max(stats.mask_tokens, 1.0),
        "ratio_max": stats.ratio_max,
        "entropy": stats.entropy_sum / max(stats.entropy_tokens, 1.0),
        "trained_rows": int(
            (loss_mask.any(dim=1) & carries_gradient(advantages, cfg.loss.beta)).sum()
        ),
        "sampled_tokens": int(mask_f.sum()),
        "sample_tokens_per_s": float(mask_f.sum()) / max(rollout_seconds, 1e-9),
        "update_tokens_per_s": stats.tokens / max(update_seconds, 1e-9),
        "rollout_seconds": rollout_seconds,
        "engine_rebuild_seconds": parts.sampler.rebuild_seconds - rebuild_before,
        "reward_seconds": reward_seconds,
        "update_seconds": update_seconds,
        "seconds": time.perf_counter() - began,
        "reference_refreshed": refreshed,
    }
    if "accuracy" in results:
        record["accuracy"] = record["reward/accuracy"]
    if stats.logprob_gap is not None:
        record["logprob_gap"] = stats.logprob_gap
    if ref_logp is not None:
        with torch.no_grad():
            kl = kl_k3(batch.sampler_logprobs, ref_logp)  # the policy that sampled vs ref
        record["kl"] = float((kl * mask_f).sum() / mask_f.sum().clamp(min=1.0))
    if stats.max_violation is not None:
        record["max_violation"] = stats.max_violation
    record.update(stats.violations)
    return record


# ----------------------------------------------------------------------------------------------
# The run


@dataclass
class GRPOSummary:
    out_dir: Path
    stage: str
    steps: int
    resumed_from: int | None
    prompts: DataSource
    parent: dict[str, Any]
    seconds: float  # the whole run: model, evaluation, checkpoints
    cpu_seconds: float
    rollout_seconds: float  # of the steps this process ran
    update_seconds: float
    reward_seconds: float
    final: dict[str, float]  # means over the last few logged steps
    eval_before: EvalReport | None
    eval_after: EvalReport | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "stage": self.stage,
            "steps": self.steps,
            "resumed_from": self.resumed_from,
            "prompts": self.prompts.to_dict(),
            "parent": self.parent,
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
            "rollout_seconds": self.rollout_seconds,
            "update_seconds": self.update_seconds,
            "reward_seconds": self.reward_seconds,
            "final": self.final,
            "eval_before": self.eval_before.to_dict() if self.eval_before else None,
            "eval_after": self.eval_after.to_dict() if self.eval_after else None,
        }


def _uses_fp8(module: torch.nn.Module) -> bool:
    from trainer.fp8.linear import Fp8Linear

    return any(isinstance(m, Fp8Linear) for m in module.modules())


def run_grpo(
    cfg: GRPOConfig,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    eval_problems: Sequence[EvalProblem] = (),
    transforms: Sequence[Callable[[torch.nn.Module], torch.nn.Module]] = (),
    say: Callable[[str], None] = print,
    cpu_budget: float | None = None,
) -> GRPOSummary:
    """GRPO from `cfg.model.checkpoint` on the prompts of `cfg.prompts.source`; the policy is
    published in `out_dir` (Hugging Face layout) with its checkpoints, metrics.jsonl,
    tensorboard/ and grpo.png beside it, and `train_summary.json` written last.

    cpu_budget: stop after the step at which this process's CPU-seconds spent in GRPO steps
    reach it (`loop.steps` is then a cap); the summary's `steps` says how many ran. Used to give
    RL the same compute as another run (the recipe study's student), not to bound wall time.

    resume: continue from the latest complete checkpoint under out_dir (a fresh start when
    there is none). eval_problems: held-out problems scored before and after (and every
    `loop.eval_every` steps). transforms: applied to the model before the optimizer is built
    (FP8: then old log-probs come from the training forward, not the high-precision sampler).
    """
    started, cpu_started = time.perf_counter(), time.process_time()
    out = Path(out_dir or cfg.out_dir)
    if cfg.loop.threads is not None:
        torch.set_num_threads(cfg.loop.threads)
    parent_dir = Path(str(cfg.model.checkpoint))
    if not (parent_dir / "config.json").is_file():
        raise TrainError(
            f"model.checkpoint: no checkpoint at {parent_dir} (config.json missing); train the "
            "base first (r1f train pretrain --config configs/pretrain-toy.yaml) or point to one"
        )
    tok_dir = Path(cfg.model.tokenizer or parent_dir)
    if not (tok_dir / "tokenizer.json").is_file():
        raise TrainError(f"no tokenizer.json in {tok_dir}: the checkpoint needs its tokenizer")
    tokenizer = R1Tokenizer.from_dir(tok_dir)

    from store.store import Store

    store = Store.from_config(cfg.store)
    if not cfg.prompts.source:
        raise TrainError("prompts.source: name the prompt table version (NAME@V) or a release")
    source, prompts = load_prompts(cfg.prompts.source, store)
    missing_gold = sum(p.gold is None for p in prompts)
    say(
        f"prompts {source.ref} ({source.content_hash[:12]}): {len(prompts)} prompts, "
        f"{missing_gold} without gold"
    )

    model = build_model(cfg.model, tokenizer.vocab_size, cfg.seed)
    assert isinstance(model, DeepSeekV3Model)
    remove_partials(out)
    if not resume:  # a fresh start must never pick up an older run's checkpoints
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    checkpoint = latest_checkpoint(out) if resume else None
    reference: Transformer | None = None
    if cfg.loss.beta > 0:
        reference = copy.deepcopy(model.base).eval().requires_grad_(False)
    if checkpoint is not None:
        load_weights(model, checkpoint)
        if reference is not None and (checkpoint / REFERENCE_FILE).is_file():
            reference.load_state_dict(load_file(str(checkpoint / REFERENCE_FILE)))
    for transform in transforms:
        model.module = transform(model.module)
    recompute_old = cfg.loss.old_logprobs == "recompute" or _uses_fp8(model.module)
    optimizer = build_optimizer(
        model.module,
        lr=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay,
        betas=(cfg.optim.beta1, cfg.optim.beta2),
        eps=cfg.optim.eps,
    )
    minibatch_rows = (
        cfg.loss.minibatch_rows or cfg.rollout.prompts_per_step * cfg.rollout.group_size
    )
    per_step = cfg.loss.updates_per_batch * math.ceil(
        cfg.rollout.prompts_per_step * cfg.rollout.group_size / minibatch_rows
    )
    scheduler = build_scheduler(
        optimizer,
        warmup_steps=cfg.optim.warmup_steps,
        total_steps=cfg.loop.steps * per_step,
        min_lr_ratio=cfg.optim.min_lr_ratio,
    )
    start_step, data_state = 0, None
    if checkpoint is not None:
        point = load_training_state(checkpoint, optimizer=optimizer, scheduler=scheduler)
        start_step, data_state = point.step, point.data
        say(f"resuming from {checkpoint} (step {start_step})")
    stream = PromptStream(prompts, cfg.seed, data_state)

    metadata = grpo_metadata(cfg, source, tokenizer)
    log = MetricsLog(
        out, tensorboard=cfg.loop.tensorboard, resume_step=start_step if checkpoint else None
    )

    def save(step: int) -> None:
        def save_model(directory: Path) -> None:
            model.save(
                directory, tokenizer_dir=tok_dir, extra_config={**metadata, "r1f_step": step}
            )
            refreshed = cfg.reference.refresh_every > 0 and step >= cfg.reference.refresh_every
            if reference is not None and refreshed:
                save_file(
                    {k: v.contiguous() for k, v in reference.state_dict().items()},
                    str(directory / REFERENCE_FILE),
                )

        save_training_checkpoint(
            out,
            step,
            save_model=save_model,
            optimizer=optimizer,
            scheduler=scheduler,
            data=stream.state(),
            metadata=metadata,
            keep=cfg.loop.keep_checkpoints,
        )

    def run_eval(step: int) -> EvalReport | None:
        if not eval_problems:
            return None
        report = evaluate_model(model, tokenizer, eval_problems, cfg.eval)
        model.module.train()
        log.write({"kind": "eval", "step": step, **report.summary()})
        return report

    before = run_eval(0) if checkpoint is None and cfg.eval.before else None
    progress = Progress(cfg.loop.steps, start_step, label="reward") if cfg.loop.progress else None
    records: list[dict[str, Any]] = []
    last_step = cfg.loop.steps  # fewer when a CPU budget stops the run first
    try:
        with reward_functions(cfg.rewards, cfg.rollout.max_tokens) as functions:
            parts = GRPOParts(
                model=model,
                reference=reference,
                sampler=PolicySampler(
                    model.base,
                    tokenizer,
                    max_batch_rows=cfg.rollout.max_batch_rows,
                    mtp=cfg.rollout.mtp,
                ),
                optimizer=optimizer,
                scheduler=scheduler,
                rewards=functions,
                recompute_old=recompute_old,
            )
            steps_cpu = 0.0
            for step in range(start_step, cfg.loop.steps):
                step_cpu = time.process_time()
                record = grpo_step(parts, stream.next(cfg.rollout.prompts_per_step), cfg, step)
                steps_cpu += time.process_time() - step_cpu
                records.append(record)
                done = step + 1
                spent = cpu_budget is not None and steps_cpu >= cpu_budget
                if done % cfg.loop.log_every == 0 or done == cfg.loop.steps or spent:
                    log.write(record)
                if progress is not None:
                    progress.update(done, record["sampled_tokens"], record["reward"])
                if cfg.loop.eval_every > 0 and done % cfg.loop.eval_every == 0:
                    run_eval(done)
                if (
                    done == cfg.loop.steps
                    or spent
                    or (cfg.loop.checkpoint_every > 0 and done % cfg.loop.checkpoint_every == 0)
                ):
                    save(done)
                if spent:
                    say(f"CPU budget of {cpu_budget:.1f} s spent after {done} steps")
                    last_step = done
                    break
        if latest_checkpoint(out) is None:
            save(start_step)
        final_checkpoint = latest_checkpoint(out)
        assert final_checkpoint is not None
        publish_model(final_checkpoint, out)
        from trainer.rl.plots import plot_grpo

        plot_grpo(out, out / PLOT_FILE)
        after = run_eval(last_step)
        seconds = time.perf_counter() - started
        log.write(
            {
                "kind": "run",
                "step": last_step,
                "seconds": seconds,
                "cpu_seconds": time.process_time() - cpu_started,
                "rollout_seconds": sum(r["rollout_seconds"] for r in records),
                "update_seconds": sum(r["update_seconds"] for r in records),
                "reward_seconds": sum(r["reward_seconds"] for r in records),
                "load_average": os.getloadavg()[0],
            }
        )
    finally:
        log.close()
    record_use(store, source, out, cfg.stage, last_step, metadata["r1f_config_hash"])
    summary = GRPOSummary(
        out_dir=out,
        stage=cfg.stage,
        steps=last_step,
        resumed_from=start_step if checkpoint is not None else None,
        prompts=source,
        parent=metadata["r1f_parent"],
        seconds=seconds,
        cpu_seconds=time.process_time() - cpu_started,
        rollout_seconds=sum(r["rollout_seconds"] for r in records),
        update_seconds=sum(r["update_seconds"] for r in records),
        reward_seconds=sum(r["reward_seconds"] for r in records),
        final=final_means(out),
        eval_before=before,
        eval_after=after,
    )
    # Written last: its presence says the run finished and the model in out_dir is final.
    tmp = out / f".{SUMMARY_FILE}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    tmp.replace(out / SUMMARY_FILE)
    return summary


def grpo_metadata(cfg: GRPOConfig, source: DataSource, tokenizer: R1Tokenizer) -> dict[str, Any]:
    """What a GRPO checkpoint says about its origin (config.json `r1f_*`): the stage, the
    parent checkpoint and its weights' hash, the prompt table version and content hash."""
    from trainer.init import checkpoint_hash

    parent = str(cfg.model.checkpoint)
    return {
        "bos_token_id": tokenizer.bos_id,
        "eos_token_id": tokenizer.eos_id,
        "pad_token_id": tokenizer.pad_id,
        "r1f_stage": cfg.stage,
        "r1f_seed": cfg.seed,
        "r1f_data": source.to_dict(),
        "r1f_parent": {"path": parent, "hash": checkpoint_hash(parent)},
        "r1f_config_hash": config_hash(cfg),
        "r1f_config": config_to_dict(cfg),
    }


FINAL_KEYS = ("reward", "accuracy", "format_rate", "mixed_language_rate", "response_length")


def final_means(run_dir: Path, last: int = 5) -> dict[str, float]:
    """Means of the headline metrics over the last `last` logged steps (a single step's
    rollout of a few prompts is noisy)."""
    from trainer.metrics import read_metrics

    records = read_metrics(run_dir, "train")[-last:]
    out = {}
    for key in FINAL_KEYS:
        values = [float(r[key]) for r in records if key in r and math.isfinite(float(r[key]))]
        if values:
            out[key] = sum(values) / len(values)
    return out


__all__ = [
    "DataError",
    "GRPOParts",
    "GRPOSummary",
    "PromptStream",
    "RLPrompt",
    "final_means",
    "grpo_metadata",
    "grpo_step",
    "load_prompts",
    "policy_update",
    "reward_functions",
    "run_grpo",
    "step_seed",
]
