"""Where a run's numbers go: `metrics.jsonl`, TensorBoard event files, and a progress bar.

    log = MetricsLog(run_dir, tensorboard=True, resume_step=None)
    log.write({"step": 10, "loss": 2.31, "lr": 1e-3, ...})   # one JSON line, one scalar each
    log.close()

`metrics.jsonl` holds one JSON object per line, each with `step` and `kind` ("train", "eval",
"run"); every numeric value also goes to TensorBoard as `<kind>/<key>`. TensorBoard files are
written by tensorboardX (a pure-Python writer: protobuf and numpy, no TensorFlow, no server),
the lightest real writer of the format that works offline.

On resume, lines of steps after the checkpoint are dropped first (the killed run wrote them,
the resumed run writes them again), so the file reads as one uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class MetricsLog:
    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        *,
        tensorboard: bool = True,
        resume_step: int | None = None,
    ) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.unlink(missing_ok=True)
        else:
            truncate_after(self.path, resume_step)
        self._fh = self.path.open("a", encoding="utf-8")
        self._tb: Any = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(Path(run_dir) / TENSORBOARD_DIR), flush_secs=10)

    def write(self, record: Mapping[str, Any]) -> None:
        """One line: `record` must hold `step` and `kind`."""
        self._fh.write(json.dumps(dict(record), sort_keys=True, default=str) + "\n")
        self._fh.flush()
        if self._tb is not None:
            step, kind = int(record["step"]), str(record["kind"])
            for key, value in record.items():
                numeric = isinstance(value, int | float) and not isinstance(value, bool)
                if key not in ("step", "kind") and numeric and math.isfinite(float(value)):
                    self._tb.add_scalar(f"{kind}/{key}", float(value), step)

    def close(self) -> None:
        self._fh.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: str | os.PathLike[str], kind: str | None = None) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl (a run directory or the file), optionally of one kind."""
    file = Path(path)
    if file.is_dir():
        file = file / METRICS_FILE
    records = [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
    return [r for r in records if kind is None or r.get("kind") == kind]


def truncate_after(path: Path, step: int) -> None:
    """Keep only the records up to `step` (and a torn last line never survives)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill
        if int(record.get("step", 0)) <= step:
            kept.append(line)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(line + "\n" for line in kept))
    tmp.replace(path)


class Progress:
    """A one-line progress report on stderr: step, loss, tokens/s and ETA. On a terminal it
    redraws in place; otherwise it prints a line every `every` steps."""

    def __init__(
        self, total_steps: int, start_step: int = 0, *, every: int = 10, label: str = "loss"
    ) -> None:
        self.label = label  # what the third figure is: the loss, or GRPO's mean reward
        self.total = total_steps
        self.start_step = start_step
        self.every = every
        self.started = time.perf_counter()
        self.tokens = 0
        self.tty = sys.stderr.isatty()

    def update(self, step: int, tokens: int, loss: float) -> None:
        self.tokens += tokens
        elapsed = time.perf_counter() - self.started
        done = step - self.start_step
        rate = self.tokens / elapsed if elapsed > 0 else 0.0
        eta = elapsed / done * (self.total - step) if done > 0 else float("nan")
        line = (
            f"step {step}/{self.total}  {self.label} {loss:.4f}  {rate:,.0f} tok/s  "
            f"elapsed {_clock(elapsed)}  ETA {_clock(eta)}"
        )
        if self.tty:
            sys.stderr.write("\r" + line.ljust(80))
            if step >= self.total:
                sys.stderr.write("\n")
        elif step % self.every == 0 or step >= self.total:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--:--"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:d}:{secs:02d}"


def plot_losses(run_dir: str | os.PathLike[str], out_png: str | os.PathLike[str]) -> Path:
    """The run's loss curve (main loss, MTP loss when logged) against steps, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(run_dir, "train")
    steps = [r["step"] for r in records]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(steps, [r["loss"] for r in records], label="next-token loss")
    mtp = [(r["step"], r["mtp_loss"]) for r in records if "mtp_loss" in r]
    if mtp:
        ax.plot(*zip(*mtp, strict=True), label="MTP loss (depth 1)", alpha=0.8)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    # A log scale needs a positive loss; a run with none logged yet keeps the linear axis.
    if any(r["loss"] > 0 for r in records):
        ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(out_png)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path
