"""A GRPO run's curves as one PNG: rewards, accuracy and format rate, response length, KL and
clip fraction, entropy, and held-out accuracy at each evaluation."""

from __future__ import annotations

import os
from pathlib import Path

from trainer.metrics import read_metrics


def plot_grpo(run_dir: str | os.PathLike[str], out_png: str | os.PathLike[str]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = read_metrics(run_dir, "train")
    evals = read_metrics(run_dir, "eval")
    steps = [r["step"] for r in train]

    def series(key: str) -> tuple[list[int], list[float]]:
        pairs = [(r["step"], float(r[key])) for r in train if key in r]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5), dpi=110)
    ax = axes[0, 0]
    for key, label in (
        ("reward", "reward (weighted sum)"),
        ("accuracy", "accuracy"),
        ("format_rate", "format rate"),
        ("mixed_language_rate", "mixed-language rate"),
    ):
        x, y = series(key)
        if x:
            ax.plot(x, y, label=label)
    ax.set_title("rollouts")
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    x, y = series("response_length")
    ax.plot(x, y, label="mean")
    x, y = series("response_length_max")
    ax.plot(x, y, label="max", alpha=0.5)
    ax.set_title("response length (tokens)")
    ax.legend(fontsize=7)
    ax = axes[0, 2]
    for key in ("kl", "policy_kl"):
        x, y = series(key)
        if x:
            ax.plot(x, y, label={"kl": "KL to reference", "policy_kl": "KL to sampler"}[key])
    x, y = series("clip_fraction")
    ax.plot(x, y, label="clip fraction")
    ax.set_title("KL (k3) and clipping")
    ax.legend(fontsize=7)
    ax = axes[1, 0]
    x, y = series("entropy")
    ax.plot(x, y)
    ax.set_title("entropy of the policy (nats/token)")
    ax = axes[1, 1]
    families = sorted({k.split("/")[0] for r in evals for k in r if k.endswith("/greedy")})
    for family in families:
        pts = [(r["step"], r[f"{family}/greedy"]) for r in evals if f"{family}/greedy" in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{family} greedy")
        fmt = [
            (r["step"], r[f"{family}/format_sampled"])
            for r in evals
            if f"{family}/format_sampled" in r
        ]
        ax.plot(
            [p[0] for p in fmt], [p[1] for p in fmt], marker="x", ls="--", label=f"{family} format"
        )
    ax.set_title("held-out problems")
    ax.set_ylim(0, 1)
    if families:
        ax.legend(fontsize=7)
    ax = axes[1, 2]
    for key, label in (("sample_tokens_per_s", "sampling"), ("update_tokens_per_s", "update")):
        x, y = series(key)
        ax.plot(x, y, label=label)
    ax.set_title("tokens/s")
    ax.legend(fontsize=7)
    for a in axes.flat:
        a.grid(True, alpha=0.3)
        a.set_xlabel("GRPO step")
    if steps:
        fig.suptitle(f"{Path(run_dir).name}: {len(steps)} logged steps")
    fig.tight_layout()
    path = Path(out_png)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path
