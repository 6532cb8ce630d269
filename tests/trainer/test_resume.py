"""Kill-and-resume: a real `r1f train pretrain` process SIGKILLed mid-run, resumed with
--resume, writes exactly the losses of the run that was never interrupted (CPU, fp32, one
thread: bitwise equal, every logged value of every step)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from store.store import Store
from store.usage import model_uses
from trainer.metrics import read_metrics
from trainer.train_state import latest_checkpoint

STEPS = 24
CONFIG = """\
stage: pretrain
seed: 3
store:
  root: {store}
corpus:
  table: toy-resume
  families: {{toy-arithmetic: 60, toy-countdown: 40, toy-facts: 20}}
  r1_format_share: 0.3
  mixed_language_share: 0.2
  text_documents: 10
model:
  preset: debug
data:
  seq_len: 64
  chat_share: 0.3
  loss_on: all
optim:
  lr: 3.0e-3
  warmup_steps: 5
loop:
  steps: {steps}
  rows_per_micro_batch: 4
  grad_accum: 2
  log_every: 1
  checkpoint_every: 5
  threads: 1
  tensorboard: false
  progress: false
eval:
  problems: 0
"""


def _train(config: Path, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "flows.cli", "train", "pretrain", "--config", str(config)]
    return subprocess.Popen(
        [*cmd, "--out", str(out), *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _train_records(run: Path) -> list[dict[str, Any]]:
    drop = {"seconds", "tokens_per_s"}  # wall-clock figures differ by nature
    return [{k: v for k, v in r.items() if k not in drop} for r in read_metrics(run, "train")]


def _logged_step(run: Path) -> int:
    path = run / "metrics.jsonl"
    if not path.exists():
        return 0
    steps = [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]
    return max(steps, default=0)


@pytest.mark.parametrize("kill_after", [7])
def test_sigkilled_run_resumes_to_the_same_losses(tmp_path: Path, kill_after: int) -> None:
    config = tmp_path / "train.yaml"
    config.write_text(CONFIG.format(store=tmp_path / "store", steps=STEPS))

    straight = tmp_path / "straight"
    proc = _train(config, straight)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-2000:]
    expected = _train_records(straight)
    assert [r["step"] for r in expected] == list(range(1, STEPS + 1))

    killed = tmp_path / "killed"
    proc = _train(config, killed)
    deadline = time.monotonic() + 600
    while _logged_step(killed) < kill_after:  # past a checkpoint (every 5), mid-way to the next
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    reached = _logged_step(killed)
    assert reached < STEPS
    checkpoint = latest_checkpoint(killed)
    assert checkpoint is not None and int(checkpoint.name.split("-")[1]) < reached

    proc = _train(config, killed, "--resume")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b"resuming from" in err
    resumed = _train_records(killed)
    assert resumed == expected  # loss, MTP loss, grad norm, lr, MaxVio: bit for bit
    # Both runs are on record as users of the corpus version, with its content hash.
    uses = model_uses(Store(tmp_path / "store"), "toy-resume", version=0)
    assert sorted(Path(u.model).name for u in uses) == ["killed", "straight"]
    assert {u.content_hash for u in uses} == {
        Store(tmp_path / "store").content_hash("toy-resume", 0)
    }
    config_json = json.loads((killed / "config.json").read_text())
    assert config_json["r1f_data"]["table"] == "toy-resume" and config_json["r1f_step"] == STEPS
    # The published models are the same bytes too.
    assert (killed / "model.safetensors").read_bytes() == (
        straight / "model.safetensors"
    ).read_bytes()
