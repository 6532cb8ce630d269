"""trainer.rl.grpo: one GRPO step and the run around it, on a small model.

What is checked: the first update's ratio is 1 against the sampler; skipping rows without a
gradient, trimming padding and micro-batching give exactly the full-batch gradient of the
formula; the KL reference is refreshed on schedule and saved once it differs; the prompt
stream resumes where it stopped; a run writes the checkpoint layout, metrics and lineage; and
GRPO raises a reward the model can learn.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import torch
from torch.optim.lr_scheduler import LambdaLR

from store.lineage import Lineage
from store.record import to_table, validate_sample
from store.store import Store, StoreConfig
from trainer.adapters import DeepSeekV3Model
from trainer.checkpoint import load_checkpoint
from trainer.config import ModelConfig, OptimConfig, RunLoopConfig
from trainer.data import DataState
from trainer.generate import SamplingParams
from trainer.init import checkpoint_hash, init_checkpoint
from trainer.metrics import read_metrics
from trainer.model import MoE, debug
from trainer.rl.config import (
    GRPOConfig,
    LossConfig,
    PromptsConfig,
    ReferenceConfig,
    RewardsConfig,
    RolloutConfig,
)
from trainer.rl.core import aggregate_loss, group_advantages, grpo_token_loss
from trainer.rl.grpo import (
    REFERENCE_FILE,
    GRPOParts,
    PromptStream,
    RLPrompt,
    grpo_step,
    policy_update,
    run_grpo,
)
from trainer.rl.rewards import FormatReward, RewardInput, RewardResult
from trainer.rl.rollout import PolicySampler, response_logprobs
from trainer.tokenizer import R1Tokenizer, render_prompt, train_tokenizer
from trainer.train_state import latest_checkpoint


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _prompts(n: int) -> list[RLPrompt]:
    return [RLPrompt(f"p{i}", f"Compute {i % 7}+{i % 5}.", str(i % 7 + i % 5)) for i in range(n)]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small DeepSeek-V3 checkpoint (debug shape, one MTP module) whose tokenizer knows the
    chat template, so prompts are short."""
    texts = [render_prompt(p.prompt) for p in _prompts(40)]
    texts += [
        f"{a}+{b}={a + b}.</think><answer>{a + b}</answer>" for a in range(7) for b in range(5)
    ]
    tokenizer = train_tokenizer(texts * 3, vocab_size=400)
    path, _ = init_checkpoint(
        debug(n_mtp_depth=1, init_std=0.05, max_seq_len=256),
        seed=0,
        out_dir=tmp_path_factory.mktemp("base") / "ckpt",
        tokenizer=tokenizer,
    )
    return path


def _parts(
    checkpoint: Path, rewards: Sequence[object], *, lr: float = 1e-3, beta: float = 0.0
) -> GRPOParts:
    model, _ = load_checkpoint(checkpoint)
    tok = R1Tokenizer.from_dir(checkpoint)
    policy = DeepSeekV3Model(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    reference = None
    if beta > 0:
        reference, _ = load_checkpoint(checkpoint)
        reference.eval().requires_grad_(False)
    return GRPOParts(
        model=policy,
        reference=reference,
        sampler=PolicySampler(model, tok),
        optimizer=optimizer,
        scheduler=LambdaLR(optimizer, lambda _: 1.0),
        rewards=list(rewards),  # type: ignore[arg-type]
        recompute_old=False,
    )


def _cfg(**sections: object) -> GRPOConfig:
    defaults: dict[str, object] = {
        "model": ModelConfig(checkpoint="unused"),
        "rollout": RolloutConfig(prompts_per_step=4, group_size=4, max_tokens=12),
        "rewards": RewardsConfig(weights={"format": 1.0}),
        "optim": OptimConfig(lr=1e-3, warmup_steps=0, grad_clip=0.0),
    }
    return GRPOConfig(**{**defaults, **sections})  # type: ignore[arg-type]


class ContainsReward:
    """1 when the completion holds `text`, else 0: a reward a random model can learn."""

    name = "format"  # stands in for the configured reward of that name

    def __init__(self, text: str) -> None:
        self.text = text

    def __call__(self, items: Sequence[RewardInput]) -> list[RewardResult]:
        return [RewardResult.ok(float(self.text in item.completion)) for item in items]


class LengthReward:
    """The completion's length in characters / 10: differs between samples of a group."""

    name = "format"

    def __call__(self, items: Sequence[RewardInput]) -> list[RewardResult]:
        return [RewardResult.ok(len(item.completion) / 10) for item in items]


def test_step_records_its_metrics_and_starts_at_ratio_one(base: Path) -> None:
    parts = _parts(base, [LengthReward()])
    record = grpo_step(parts, _prompts(4), _cfg(), step=0)
    for key in (
        "reward",
        "reward/format",
        "reward/format/unverifiable",
        "format_rate",
        "mixed_language_rate",
        "response_length",
        "clip_fraction",
        "policy_kl",
        "entropy",
        "sample_tokens_per_s",
        "update_tokens_per_s",
        "grad_norm",
        "lr",
        "rollout_seconds",
        "update_seconds",
    ):
        assert key in record, key
    assert record["step"] == 1 and record["optimizer_steps"] == 1
    assert record["trained_rows"] > 8
    # The sampler's log-probs are the training forward's: the ratio starts at 1.
    assert record["logprob_gap"] < 1e-5
    assert record["clip_fraction"] == 0.0
    assert record["ratio_max"] == pytest.approx(1.0, abs=2e-5)
    assert record["policy_kl"] < 1e-9
    assert record["entropy"] > 0.0
    assert 1 <= record["response_length"] <= 12


@pytest.mark.parametrize("mode", ["seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm"])
def test_update_equals_the_full_batch_gradient(base: Path, mode: str) -> None:
    """Rows without a gradient skipped, padding cut per micro-batch, micro-batches of 3 rows:
    the step is exactly -lr times the gradient of the loss formula over the whole batch."""
    parts = _parts(base, [FormatReward()], lr=1.0)
    for module in parts.model.base.modules():
        if isinstance(module, MoE):
            module.seq_aux_alpha = 0.0  # compare the GRPO loss alone
    G = 4
    batch = parts.sampler.rollout(
        [p.rendered() for p in _prompts(3)],
        G,
        SamplingParams(temperature=1.0, max_tokens=12, seed=5),
    )
    # Group 0 all equal (no gradient), groups 1 and 2 mixed; one sample masked.
    rewards = torch.tensor([1.0] * 4 + [0.0, 1.0, 0.0, 2.0] + [1.0, 0.0, 0.0, 0.0])
    valid = torch.ones(12, dtype=torch.bool)
    valid[9] = False
    adv = group_advantages(rewards, G, valid=valid)
    mask = batch.response_mask & valid[:, None]
    old = batch.sampler_logprobs + 0.05 * torch.randn_like(batch.sampler_logprobs)  # clip acts

    model = parts.model.base
    model.train()
    logp, _, _ = response_logprobs(model, batch.tokens, batch.attention_mask, batch.prompt_len)
    terms = grpo_token_loss(logp, old, adv, 0.2, 0.28)
    expected = aggregate_loss(terms.loss, mask, mode, horizon=12)
    grads = torch.autograd.grad(expected, [p for p in model.parameters()], allow_unused=True)
    before = [p.detach().clone() for p in model.parameters()]

    loss = LossConfig(clip_low=0.2, clip_high=0.28, aggregation=mode, microbatch_rows=3)
    stats = policy_update(
        parts,
        batch,
        adv,
        mask,
        old,
        None,
        loss,
        horizon=12,
        grad_clip=0.0,
        generator=torch.Generator().manual_seed(0),
    )
    assert stats.optimizer_steps == 1
    for p, b, g in zip(model.parameters(), before, grads, strict=True):
        step = b - p.detach()
        want = torch.zeros_like(b) if g is None else g
        assert torch.allclose(step, want, atol=1e-6, rtol=1e-4), (step - want).abs().max()


def test_reference_is_refreshed_on_schedule(base: Path) -> None:
    parts = _parts(base, [ContainsReward("1")], lr=0.05, beta=0.1)
    assert parts.reference is not None
    cfg = _cfg(loss=LossConfig(beta=0.1), reference=ReferenceConfig(refresh_every=2))

    def same() -> bool:
        assert parts.reference is not None
        return all(
            torch.equal(a, b)
            for a, b in zip(
                parts.model.base.state_dict().values(),
                parts.reference.state_dict().values(),
                strict=True,
            )
        )

    prompts = _prompts(4)
    first = grpo_step(parts, prompts, cfg, step=0)
    assert "kl" in first and first["kl"] == pytest.approx(0.0, abs=1e-6)  # ref = sampler
    assert not same() and not first["reference_refreshed"]
    second = grpo_step(parts, prompts, cfg, step=1)
    assert second["reference_refreshed"] and same()


def test_prompt_stream_resumes_and_wraps_epochs() -> None:
    prompts = _prompts(5)
    stream = PromptStream(prompts, seed=3)
    seen = [p.prompt_id for _ in range(4) for p in stream.next(3)]  # 12 prompts: 2.4 epochs
    assert sorted(seen[:5]) == sorted(p.prompt_id for p in prompts)  # each once per epoch
    assert stream.state() == DataState(2, 2)
    again = PromptStream(prompts, seed=3)
    again.next(3)
    resumed = PromptStream(prompts, seed=3, state=again.state())
    assert [p.prompt_id for _ in range(3) for p in resumed.next(3)] == seen[3:]


def _prompt_table(store: Store) -> str:
    rows = [
        validate_sample(
            {
                "prompt_id": p.prompt_id,
                "prompt": p.prompt,
                "completion": "",
                "gold": p.gold,
                "domain": "math",
                "track": "reasoning",
                "source": "test-sums",
                "language": "en",
            }
        )
        for p in _prompts(12)
    ]
    store.commit("rl-prompts", to_table(rows), lineage=Lineage(writer="test"), mode="overwrite")
    return "rl-prompts@0"


def test_run_writes_checkpoint_metrics_and_lineage(base: Path, tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    cfg = GRPOConfig(
        stage="grpo",
        seed=1,
        store=StoreConfig(root=str(tmp_path / "store")),
        model=ModelConfig(checkpoint=str(base)),
        prompts=PromptsConfig(source=_prompt_table(store)),
        rollout=RolloutConfig(prompts_per_step=2, group_size=4, max_tokens=10),
        loss=LossConfig(beta=0.05, updates_per_batch=2, minibatch_rows=4),
        reference=ReferenceConfig(refresh_every=2),
        rewards=RewardsConfig(weights={"accuracy": 1.0, "format": 0.5}),
        optim=OptimConfig(lr=1e-3, warmup_steps=0),
        loop=RunLoopConfig(
            steps=3, log_every=1, checkpoint_every=2, tensorboard=False, progress=False
        ),
    )
    (base / "metrics.jsonl").write_text('{"kind": "train", "step": 600}\n')
    (base / "loss.png").write_bytes(b"not the policy's")
    out = tmp_path / "run"
    summary = run_grpo(cfg, out_dir=out, say=lambda _: None)
    assert summary.steps == 3 and summary.resumed_from is None
    records = read_metrics(out, "train")
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(r["optimizer_steps"] == 4 for r in records)  # 2 passes x 2 mini-batches of 4
    assert all("accuracy" in r and "kl" in r for r in records)
    config = json.loads((out / "config.json").read_text())
    assert config["r1f_stage"] == "grpo" and config["r1f_step"] == 3
    assert config["r1f_parent"] == {"path": str(base), "hash": checkpoint_hash(base)}
    assert config["r1f_data"]["table"] == "rl-prompts" and config["r1f_data"]["version"] == 0
    assert config["r1f_data"]["content_hash"] == store.content_hash("rl-prompts", 0)
    final = latest_checkpoint(out)
    assert final is not None and (final / REFERENCE_FILE).is_file()  # refreshed at step 2
    assert not (out / REFERENCE_FILE).exists()  # the published model is the policy alone
    # The parent's own run files (its tokenizer directory is the parent) are not copied.
    assert not (final / "loss.png").exists() and not (final / "metrics.jsonl").exists()
    assert (out / "grpo.png").stat().st_size > 0
    assert json.loads((out / "train_summary.json").read_text())["prompts"]["table"] == "rl-prompts"
    reloaded, _ = load_checkpoint(out)
    original, _ = load_checkpoint(base)
    assert not torch.equal(reloaded.head.weight, original.head.weight)


def test_a_cpu_budget_stops_the_run_after_the_step_that_spends_it(
    base: Path, tmp_path: Path
) -> None:
    """`cpu_budget` (the recipe study gives the student's RL the CPU-seconds its SFT took):
    with a budget of 0 the first step spends it, so the run stops there, publishes that
    step's policy and says so; `loop.steps` is only a cap."""
    store = Store(tmp_path / "store")
    cfg = GRPOConfig(
        stage="grpo",
        seed=1,
        store=StoreConfig(root=str(tmp_path / "store")),
        model=ModelConfig(checkpoint=str(base)),
        prompts=PromptsConfig(source=_prompt_table(store)),
        rollout=RolloutConfig(prompts_per_step=2, group_size=4, max_tokens=8),
        rewards=RewardsConfig(weights={"format": 1.0}),
        optim=OptimConfig(lr=1e-3, warmup_steps=0),
        loop=RunLoopConfig(
            steps=50, log_every=10, checkpoint_every=0, tensorboard=False, progress=False
        ),
    )
    said: list[str] = []
    out = tmp_path / "run"
    summary = run_grpo(cfg, out_dir=out, say=said.append, cpu_budget=0.0)
    assert summary.steps == 1
    assert [r["step"] for r in read_metrics(out, "train")] == [1]  # logged though not due
    assert read_metrics(out, "run")[-1]["step"] == 1
    assert json.loads((out / "config.json").read_text())["r1f_step"] == 1
    assert json.loads((out / "train_summary.json").read_text())["steps"] == 1
    assert any("CPU budget" in line and "after 1 steps" in line for line in said)


def test_grpo_raises_a_learnable_reward(base: Path) -> None:
    """The loop learns: rewarding completions that contain `</think>` (the model's
    vocabulary has it as one token) raises the mean reward over a few steps."""
    parts = _parts(base, [ContainsReward("</think>")], lr=0.0)
    parts.optimizer = torch.optim.Adam(parts.model.base.parameters(), lr=3e-3)
    parts.scheduler = LambdaLR(parts.optimizer, lambda _: 1.0)
    cfg = _cfg(rollout=RolloutConfig(prompts_per_step=4, group_size=8, max_tokens=8))
    prompts = _prompts(4)
    rewards = [grpo_step(parts, prompts, cfg, step=s)["reward"] for s in range(16)]
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert last > first + 0.3, rewards
