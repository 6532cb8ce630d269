"""GRPO benchmark: our GRPO against TRL 1.16's `GRPOTrainer`, side by side on the CPU.

    python bench/grpo.py           # full
    python bench/grpo.py --quick   # small: under a minute

What it measures today (2 is the cost of keeping rollouts on the current policy):

1. The loss check. One fixed batch (G samples of a few prompts, ragged response masks,
   per-token log-probs of the policy, of the policy that sampled and of a reference, rewards),
   and for every loss type both sides have, our loss (`trainer.rl.core`) against TRL's own
   `GRPOTrainer._compute_loss` run on the same log-probs (the trainer is built on our tiny
   DeepSeek-V3 checkpoint loaded as `DeepseekV3ForCausalLM`, CPU, fp32; only its model
   forward is replaced, by the fixed log-probs, so what is compared is the loss code path):
   the scalar loss and its gradient with respect to every per-token log-prob, with and
   without the k3 KL term, with a ratio away from 1 so that both clip ranges act.
   TRL `grpo` is our `seq-mean-token-mean`, `bnpo` and `dapo` (one process, no accumulation)
   our `token-mean`, `dr_grpo` our `seq-mean-token-sum-norm` with the horizon
   `max_completion_length`. Advantages: ours with eps 1e-4 against TRL's formula (group mean,
   unbiased `trl.trainer.utils.nanstd`, + 1e-4).

2. Rollouts after an update: the decode engine is rebuilt from the updated weights before
   the next rollout; its cost against the rollout's, and the sampler/training log-prob gap.

3. The step time. One GRPO step, rollout and update, ours (`trainer.rl.grpo.grpo_step`:
   the cached sampler, rewards, advantages, one clipped update with AdamW) against TRL's
   (`GRPOTrainer.train`, one optimizer step: `model.generate`, rewards, advantages, the same
   update), on the same tiny DeepSeek-V3 checkpoint (TRL loads it as `DeepseekV3ForCausalLM`),
   the same rendered prompts, group size, horizon, temperature 1, loss type (`grpo` =
   `seq-mean-token-mean`), beta 0 and reward (the completion's length in characters, so every
   group has a spread and every row is trained on both sides). One torch thread each; each
   side runs a warm-up step first, then the best of the timed steps counts (the machine is
   shared). `ratio` in the JSON line is TRL's step time over ours (higher is better). Both
   sides sample until EOS or the horizon; the sampled tokens per step are printed for each, so
   a difference in work is visible.

The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import Tensor

from bench._common import emit_json, print_table

# TRL loss type -> ours. `dapo` divides by the generation batch's token count, which with one
# process and no accumulation is this batch's: the same token mean as `bnpo`.
LOSS_TYPES = {
    "grpo": "seq-mean-token-mean",
    "bnpo": "token-mean",
    "dapo": "token-mean",
    "dr_grpo": "seq-mean-token-sum-norm",
}
# TRL adds this to the group std (a literal in its advantage code); ours takes it as eps.
TRL_STD_EPS = 1e-4
# Agreement required of the loss and of every gradient entry (fp32 on both sides).
LOSS_TOL = 1e-6


@dataclass(frozen=True)
class FixedBatch:
    """One GRPO batch as both trainers see it. B = prompts * G rows, T response tokens."""

    prompt_ids: Tensor  # (B, P), left-padded
    prompt_mask: Tensor  # (B, P)
    completion_ids: Tensor  # (B, T), right-padded
    completion_mask: Tensor  # (B, T)
    logp: Tensor  # (B, T) the policy being optimised
    old_logp: Tensor  # (B, T) the policy that sampled
    ref_logp: Tensor  # (B, T) the reference model
    rewards: Tensor  # (B,)
    group_size: int


def fixed_batch(
    seed: int = 0, prompts: int = 3, group: int = 4, horizon: int = 12, vocab: int = 300
) -> FixedBatch:
    g = torch.Generator().manual_seed(seed)
    B = prompts * group
    lengths = torch.randint(1, horizon + 1, (B,), generator=g)
    lengths[0] = horizon  # at least one response uses the whole horizon
    completion_mask = (torch.arange(horizon)[None, :] < lengths[:, None]).long()
    prompt_mask = torch.ones(B, 5, dtype=torch.long)
    prompt_mask[:group, :2] = 0  # the first prompt is shorter: left padding
    logp = -torch.rand(B, horizon, generator=g) * 3  # log-probs in (-3, 0]
    # The policy has moved since sampling (a later update on the same batch): ratios spread
    # over about [0.6, 1.6], so both clip ranges (0.2 low, 0.28 high) take effect.
    old_logp = logp + (torch.rand(B, horizon, generator=g) - 0.5)
    ref_logp = logp + (torch.rand(B, horizon, generator=g) - 0.5) * 0.4
    rewards = torch.randint(0, 3, (B,), generator=g).float()
    return FixedBatch(
        prompt_ids=torch.randint(10, vocab, (B, 5), generator=g),
        prompt_mask=prompt_mask,
        completion_ids=torch.randint(10, vocab, (B, horizon), generator=g) * completion_mask,
        completion_mask=completion_mask,
        logp=logp,
        old_logp=old_logp,
        ref_logp=ref_logp,
        rewards=rewards,
        group_size=group,
    )


def our_loss(
    batch: FixedBatch, mode: str, beta: float, eps_low: float, eps_high: float, kl_weighted: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """(loss, d loss / d logp (B, T), advantages (B,)) from trainer.rl.core."""
    from trainer.rl.core import aggregate_loss, group_advantages, grpo_token_loss

    logp = batch.logp.clone().requires_grad_()
    adv = group_advantages(batch.rewards, batch.group_size, eps=TRL_STD_EPS)
    per_token = grpo_token_loss(
        logp,
        batch.old_logp,
        adv,
        eps_low,
        eps_high,
        ref_logp=batch.ref_logp,
        beta=beta,
        kl_estimator="k3",
        kl_ratio_weighted=kl_weighted,
    ).loss
    horizon = batch.completion_mask.shape[1]
    loss = aggregate_loss(per_token, batch.completion_mask, mode, horizon=horizon)
    (grad,) = torch.autograd.grad(loss, logp)
    return loss.detach(), grad, adv


def trl_advantages(rewards: Tensor, group: int) -> Tensor:
    """TRL's group advantage: (r - group mean) / (unbiased group std + 1e-4), its nanstd."""
    from trl.trainer.utils import nanstd

    grouped = rewards.view(-1, group)
    mean = torch.nanmean(grouped, dim=1).repeat_interleave(group)
    std = nanstd(grouped, dim=1).repeat_interleave(group)
    return (rewards - mean) / (std + TRL_STD_EPS)


def tiny_checkpoint(out: Path) -> Path:
    """A tiny DeepSeek-V3 checkpoint (random weights) with a small tokenizer, in the Hugging
    Face layout: enough for the loss check, which replaces the model's forward."""
    from trainer.init import init_checkpoint
    from trainer.model import tiny
    from trainer.tokenizer import train_tokenizer

    texts = [
        f"<think>{a}+{b}={a + b}</think><answer>{a + b}</answer>"
        for a in range(20)
        for b in range(5)
    ]
    tokenizer = train_tokenizer(texts, vocab_size=300)
    path, _ = init_checkpoint(tiny(max_seq_len=256), seed=0, out_dir=out, tokenizer=tokenizer)
    return path


def trl_trainer(checkpoint: Path, work: Path, group: int, horizon: int) -> Any:
    """TRL's GRPOTrainer on our checkpoint (loaded by transformers as DeepseekV3ForCausalLM),
    on the CPU in fp32, without vLLM."""
    from datasets import Dataset
    from transformers.utils import logging as hf_logging
    from trl import GRPOConfig, GRPOTrainer

    # transformers lists the MTP module's tensors, which DeepseekV3ForCausalLM does not use,
    # as unexpected on loading: expected here, and not worth a screenful.
    hf_logging.set_verbosity_error()

    config = GRPOConfig(
        output_dir=str(work / "trl"),
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=group,
        num_generations=group,
        max_completion_length=horizon,
        beta=0.0,
        report_to="none",
        logging_strategy="no",
        save_strategy="no",
    )
    dataset = Dataset.from_dict({"prompt": ["1+1=", "2+2="] * group})

    def length_reward(completions: list[str], **_: Any) -> list[float | None]:
        return [float(len(c)) for c in completions]

    return GRPOTrainer(
        model=str(checkpoint), reward_funcs=length_reward, args=config, train_dataset=dataset
    )


def trl_loss(
    trainer: Any,
    batch: FixedBatch,
    loss_type: str,
    beta: float,
    eps_low: float,
    eps_high: float,
    kl_weighted: bool,
    advantages: Tensor,
) -> tuple[Tensor, Tensor]:
    """(loss, d loss / d logp) from TRL's own `_compute_loss`, its model forward replaced by
    the batch's log-probs. The loss settings are the attributes `_compute_loss` reads."""
    logp = batch.logp.clone().requires_grad_()
    entropies = torch.zeros_like(batch.logp)
    trainer._get_per_token_logps_and_entropies = lambda *args, **kwargs: (logp, entropies, None)
    trainer.loss_type = loss_type
    trainer.beta = beta
    trainer.epsilon_low, trainer.epsilon_high = eps_low, eps_high
    trainer.args.use_bias_correction_kl = kl_weighted
    # What the training loop sets before a step: one micro-batch per optimizer step.
    trainer.current_gradient_accumulation_steps = 1
    trainer.model.train()
    inputs = {
        "prompt_ids": batch.prompt_ids,
        "prompt_mask": batch.prompt_mask,
        "completion_ids": batch.completion_ids,
        "completion_mask": batch.completion_mask,
        "advantages": advantages,
        "old_per_token_logps": batch.old_logp,
        "ref_per_token_logps": batch.ref_logp,
        "num_items_in_batch": batch.completion_mask.sum(),
    }
    loss = trainer._compute_loss(trainer.model, inputs)
    (grad,) = torch.autograd.grad(loss, logp)
    return loss.detach(), grad


def loss_parity(trainer: Any, batch: FixedBatch) -> list[dict[str, Any]]:
    """Ours against TRL for every shared loss type, without and with the KL term."""
    rows = []
    eps_low, eps_high = 0.2, 0.28
    # beta 0; the k3 KL as DeepSeekMath and R1 add it; the KL times the ratio (TRL's default,
    # use_bias_correction_kl=True, from DeepSeek-V3.2).
    kl_settings = [(0.0, False), (0.04, False), (0.04, True)]
    for loss_type, mode in LOSS_TYPES.items():
        for beta, weighted in kl_settings:
            ours, our_grad, adv = our_loss(batch, mode, beta, eps_low, eps_high, weighted)
            trl_adv = trl_advantages(batch.rewards, batch.group_size)
            theirs, trl_grad = trl_loss(
                trainer, batch, loss_type, beta, eps_low, eps_high, weighted, trl_adv
            )
            rows.append(
                {
                    "trl": loss_type,
                    "ours": mode,
                    "beta": beta,
                    "kl_ratio_weighted": weighted,
                    "loss_ours": float(ours),
                    "loss_trl": float(theirs),
                    "loss_abs_err": abs(float(ours) - float(theirs)),
                    "grad_max_abs_err": float((our_grad - trl_grad).abs().max()),
                    "adv_max_abs_err": float((adv - trl_adv).abs().max()),
                }
            )
    return rows


def engine_refresh(checkpoint: Path, prompts: int, group: int, tokens: int) -> dict[str, float]:
    """What keeping rollouts on the current policy costs: one rollout (prompts x group samples
    of `tokens` tokens) with the engine current, then an in-place weight update (as an
    optimizer step makes) and the next rollout, which rebuilds the engine first."""
    from trainer.checkpoint import load_checkpoint
    from trainer.generate import SamplingParams
    from trainer.rl.rollout import PolicySampler, logprob_gap
    from trainer.tokenizer import R1Tokenizer

    model, _ = load_checkpoint(checkpoint)
    tokenizer = R1Tokenizer.from_dir(checkpoint)
    texts = [f"<think>{a}+{a + 3}=" for a in range(prompts)]
    params = SamplingParams(temperature=1.0, max_tokens=tokens, ignore_eos=True, seed=0)
    sampler = PolicySampler(model, tokenizer)
    sampler.rollout(texts, group, params)  # warm-up: first build, allocator, kernels
    rebuild_s, rollout_s = [], []
    for step in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1.0 + 1e-3)  # in place: bumps every version counter, as AdamW does
        before, began = sampler.rebuild_seconds, time.perf_counter()
        batch = sampler.rollout(texts, group, dataclasses.replace(params, seed=step + 1))
        rollout_s.append(time.perf_counter() - began)
        rebuild_s.append(sampler.rebuild_seconds - before)
    gap = logprob_gap(model, batch)
    return {
        "rebuild_ms": 1000 * min(rebuild_s),
        "rollout_s": min(rollout_s),
        "rebuild_share": min(rebuild_s) / min(rollout_s),
        "rollouts": 4,
        "rebuilds": sampler.rebuilds,
        "logprob_gap": gap,
    }


class CharLength:
    """The completion's length in characters / 10: a reward with a spread in every group (the
    same as TRL's side below), so neither side may skip a row."""

    name = "length"

    def __call__(self, items: Any) -> list[Any]:
        from trainer.rl.rewards import RewardResult

        return [RewardResult.ok(len(item.completion) / 10) for item in items]


def bench_prompts(n: int) -> list[str]:
    return [f"Compute {a % 9}+{a % 7}." for a in range(n)]


def our_step_time(
    checkpoint: Path, prompts: int, group: int, horizon: int, steps: int
) -> dict[str, float]:
    """Seconds of our GRPO step (best of `steps` after a warm-up) and the tokens it sampled."""
    from trainer.adapters import DeepSeekV3Model
    from trainer.checkpoint import load_checkpoint
    from trainer.config import ModelConfig, OptimConfig
    from trainer.optim import build_optimizer, build_scheduler
    from trainer.rl.config import GRPOConfig, LossConfig, RewardsConfig, RolloutConfig
    from trainer.rl.grpo import GRPOParts, RLPrompt, grpo_step
    from trainer.rl.rollout import PolicySampler
    from trainer.tokenizer import R1Tokenizer

    model, _ = load_checkpoint(checkpoint)
    tokenizer = R1Tokenizer.from_dir(checkpoint)
    optimizer = build_optimizer(model, lr=1e-6, weight_decay=0.0)
    parts = GRPOParts(
        model=DeepSeekV3Model(model),
        reference=None,
        sampler=PolicySampler(model, tokenizer),
        optimizer=optimizer,
        scheduler=build_scheduler(
            optimizer, warmup_steps=0, total_steps=steps + 1, min_lr_ratio=1.0
        ),
        rewards=[CharLength()],
        recompute_old=False,
    )
    cfg = GRPOConfig(
        model=ModelConfig(checkpoint=str(checkpoint)),
        rollout=RolloutConfig(prompts_per_step=prompts, group_size=group, max_tokens=horizon),
        loss=LossConfig(aggregation="seq-mean-token-mean", beta=0.0),
        rewards=RewardsConfig(weights={"length": 1.0}),
        optim=OptimConfig(lr=1e-6, warmup_steps=0, grad_clip=1.0),
    )
    batch = [RLPrompt(f"b{i}", text, None) for i, text in enumerate(bench_prompts(prompts))]
    times, tokens = [], []
    for step in range(steps + 1):
        began = time.perf_counter()
        record = grpo_step(parts, batch, cfg, step)
        if step > 0:
            times.append(time.perf_counter() - began)
            tokens.append(record["sampled_tokens"])
    best = min(range(len(times)), key=times.__getitem__)
    return {"step_s": times[best], "sampled_tokens": tokens[best], "trained_rows": prompts * group}


def trl_step_time(
    checkpoint: Path, work: Path, prompts: int, group: int, horizon: int, steps: int
) -> dict[str, float]:
    """Seconds of one `GRPOTrainer` optimizer step (best of `steps` after a warm-up; generation
    happens inside the step) and the tokens it sampled."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from transformers.utils import logging as hf_logging
    from trl import GRPOConfig, GRPOTrainer

    from trainer.tokenizer import render_prompt

    hf_logging.set_verbosity_error()
    config = GRPOConfig(
        output_dir=str(work / "trl-steps"),
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=prompts * group,
        gradient_accumulation_steps=1,
        num_generations=group,
        max_completion_length=horizon,
        temperature=1.0,
        loss_type="grpo",
        beta=0.0,
        learning_rate=1e-6,
        max_steps=steps + 1,
        report_to="none",
        logging_strategy="steps",
        logging_steps=1,
        save_strategy="no",
        dataloader_num_workers=0,
    )
    texts = [render_prompt(p) for p in bench_prompts(prompts)]
    dataset = Dataset.from_dict({"prompt": texts * (steps + 2)})

    def char_length(completions: list[str], **_: Any) -> list[float | None]:
        return [len(c) / 10 for c in completions]

    step_times: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            self.began = time.perf_counter()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            step_times.append(time.perf_counter() - self.began)

    trainer = GRPOTrainer(
        model=str(checkpoint),
        reward_funcs=char_length,
        args=config,
        train_dataset=dataset,
        callbacks=[StepClock()],
    )
    # The per-step log lines and progress bar would bury the bench's table.
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.train()
    lengths = [
        r["completions/mean_length"]
        for r in trainer.state.log_history
        if "completions/mean_length" in r
    ]
    timed = step_times[1:]
    best = min(range(len(timed)), key=timed.__getitem__)
    mean_length = lengths[1:][best] if len(lengths) == len(step_times) else float("nan")
    return {"step_s": timed[best], "sampled_tokens": mean_length * prompts * group}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run, under a minute")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")

    with tempfile.TemporaryDirectory(prefix="bench-grpo-") as tmp:
        work = Path(tmp)
        checkpoint = tiny_checkpoint(work / "ckpt")
        batch = fixed_batch()
        trainer = trl_trainer(checkpoint, work, batch.group_size, batch.completion_mask.shape[1])
        rows = loss_parity(trainer, batch)
        prompts, tokens = (4, 16) if args.quick else (16, 48)
        refresh = engine_refresh(checkpoint, prompts, batch.group_size * 2, tokens)
        group, timed_steps = 8, 2 if args.quick else 3
        ours = our_step_time(checkpoint, prompts, group, tokens, timed_steps)
        theirs = trl_step_time(checkpoint, work, prompts, group, tokens, timed_steps)
    ratio = theirs["step_s"] / ours["step_s"]

    print("loss on one fixed batch (12 rows, 12 tokens), ours against TRL 1.16's _compute_loss")
    print_table(
        [
            "TRL loss_type",
            "ours",
            "beta",
            "KL x ratio",
            "loss ours",
            "loss TRL",
            "|diff|",
            "grad max |diff|",
        ],
        [
            [
                r["trl"],
                r["ours"],
                r["beta"],
                "yes" if r["kl_ratio_weighted"] else "no",
                f"{r['loss_ours']:.8f}",
                f"{r['loss_trl']:.8f}",
                f"{r['loss_abs_err']:.1e}",
                f"{r['grad_max_abs_err']:.1e}",
            ]
            for r in rows
        ],
    )
    worst_loss = max(r["loss_abs_err"] for r in rows)
    worst_grad = max(r["grad_max_abs_err"] for r in rows)
    worst_adv = max(r["adv_max_abs_err"] for r in rows)
    match = max(worst_loss, worst_grad, worst_adv) <= LOSS_TOL
    print(f"advantages max |diff| {worst_adv:.1e}; formulas match: {match}")
    print(
        f"\nrollouts on the current policy ({prompts} prompts x {batch.group_size * 2} samples x "
        f"{tokens} tokens, tiny, fp32, 1 thread): engine rebuild after an update "
        f"{refresh['rebuild_ms']:.1f} ms against a {refresh['rollout_s']:.2f} s rollout "
        f"({100 * refresh['rebuild_share']:.1f}%); {refresh['rebuilds']} builds for "
        f"{refresh['rollouts']} rollouts; sampler vs training log-prob gap "
        f"{refresh['logprob_gap']:.1e}"
    )
    print(
        f"\none GRPO step (rollout + update), {prompts} prompts x {group} samples, horizon "
        f"{tokens}, tiny, fp32, 1 thread, best of {timed_steps} after a warm-up"
    )
    print_table(
        ["side", "step s", "sampled tokens"],
        [
            ["ours (grpo_step)", f"{ours['step_s']:.3f}", f"{ours['sampled_tokens']:.0f}"],
            ["TRL 1.16 GRPOTrainer", f"{theirs['step_s']:.3f}", f"{theirs['sampled_tokens']:.0f}"],
        ],
    )
    print(f"ratio (TRL step time / ours): {ratio:.2f}")
    emit_json(
        {
            "bench": "grpo",
            "quick": args.quick,
            "formulas_match": match,
            "loss_types": sorted(LOSS_TYPES),
            "loss_max_abs_err": worst_loss,
            "grad_max_abs_err": worst_grad,
            "adv_max_abs_err": worst_adv,
            "engine_rebuild_ms": round(refresh["rebuild_ms"], 2),
            "rollout_s": round(refresh["rollout_s"], 3),
            "engine_rebuild_share": round(refresh["rebuild_share"], 4),
            "logprob_gap": refresh["logprob_gap"],
            "step_prompts": prompts,
            "step_group": group,
            "step_horizon": tokens,
            "ours_step_s": round(ours["step_s"], 4),
            "trl_step_s": round(theirs["step_s"], 4),
            "ours_sampled_tokens": ours["sampled_tokens"],
            "trl_sampled_tokens": round(theirs["sampled_tokens"], 1),
            "ratio": round(ratio, 3),
        }
    )


if __name__ == "__main__":
    main()
