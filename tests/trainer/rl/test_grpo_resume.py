"""Kill-and-resume for GRPO: a real `r1f train grpo` process SIGKILLed mid-run, resumed with
--resume, writes exactly the metrics of the run that was never interrupted (CPU, fp32, one
thread: bitwise equal, every logged value of every step but the wall-clock ones), with the KL
reference refreshed before the kill and restored from the checkpoint after it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from trainer.init import init_checkpoint
from trainer.metrics import read_metrics
from trainer.model import debug
from trainer.rl.grpo import REFERENCE_FILE
from trainer.tokenizer import render_prompt, train_tokenizer
from trainer.train_state import latest_checkpoint

STEPS = 8
CONFIG = """\
stage: grpo
seed: 5
store:
  root: {store}
model:
  checkpoint: {base}
prompt_set:
  table: toy-rl-resume
  seed: 1
  families: {{toy-arithmetic: 30, toy-countdown: 10}}
rollout:
  prompts_per_step: 2
  group_size: 4
  max_tokens: 8
loss:
  beta: 0.05
  clip_high: 0.28
  updates_per_batch: 2
  minibatch_rows: 4
reference:
  refresh_every: 2
rewards:
  weights: {{accuracy: 0.5, format: 0.5, language: 1.0}}
optim:
  lr: 3.0e-3
  warmup_steps: 2
  min_lr_ratio: 0.1
loop:
  steps: {steps}
  log_every: 1
  checkpoint_every: 3
  threads: 1
  tensorboard: false
  progress: false
eval:
  problems: 0
"""
# Figures that measure the wall clock, which differs between any two runs.
WALL_CLOCK = {
    "seconds",
    "rollout_seconds",
    "reward_seconds",
    "update_seconds",
    "engine_rebuild_seconds",
    "sample_tokens_per_s",
    "update_tokens_per_s",
}


def _base(path: Path) -> Path:
    """A random-weight checkpoint whose vocabulary holds Chinese characters, so that its
    random chains of thought mix languages to different degrees: the language reward then
    varies within every group and the run has gradients from its first step."""
    prompts = [f"Compute {a}+{b}-{c}." for a in range(9) for b in range(5) for c in range(3)]
    chinese = ["首先，我们计算", "然后得到结果", "所以答案是", "最后，检查一下"]  # noqa: RUF001
    texts = [render_prompt(p) for p in prompts] + [f"{a}+{a}={2 * a}." for a in range(20)]
    texts += [f"{zh}{a}+{a}={2 * a}。" for zh in chinese for a in range(10)]
    checkpoint, _ = init_checkpoint(
        debug(n_mtp_depth=1, init_std=0.05, max_seq_len=512),
        seed=0,
        out_dir=path,
        tokenizer=train_tokenizer(texts, vocab_size=500),
    )
    return checkpoint


def _grpo(config: Path, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "flows.cli", "train", "grpo", "--config", str(config)]
    return subprocess.Popen(
        [*cmd, "--out", str(out), *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _records(run: Path) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in read_metrics(run, "train")]


def _logged_step(run: Path) -> int:
    path = run / "metrics.jsonl"
    if not path.exists():
        return 0
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return max((json.loads(line)["step"] for line in lines), default=0)


def test_sigkilled_grpo_run_resumes_to_the_same_metrics(tmp_path: Path) -> None:
    config = tmp_path / "grpo.yaml"
    base = _base(tmp_path / "base")
    config.write_text(CONFIG.format(store=tmp_path / "store", base=base, steps=STEPS))

    straight = tmp_path / "straight"
    proc = _grpo(config, straight)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-2000:]
    expected = _records(straight)
    assert [r["step"] for r in expected] == list(range(1, STEPS + 1))
    assert len({r["reward"] for r in expected}) > 1  # the run moves

    killed = tmp_path / "killed"
    proc = _grpo(config, killed)
    deadline = time.monotonic() + 600
    while _logged_step(killed) < 4:  # past the checkpoint at 3, before the one at 6
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    reached = _logged_step(killed)
    assert reached < STEPS
    checkpoint = latest_checkpoint(killed)
    assert checkpoint is not None and int(checkpoint.name.split("-")[1]) < reached
    assert (checkpoint / REFERENCE_FILE).is_file()  # the reference was refreshed at step 2

    proc = _grpo(config, killed, "--resume")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b"resuming from" in err
    assert _records(killed) == expected  # rewards, KL, clip fraction, grad norm, MaxVio, ...
    assert (killed / "model.safetensors").read_bytes() == (
        straight / "model.safetensors"
    ).read_bytes()
