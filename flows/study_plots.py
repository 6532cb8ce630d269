"""The recipe study's plots (flows/study.py): the figures of results.json with their 95%
intervals, and the per-step curves of the seeds' GRPO runs (response length, format rate,
rollout accuracy, mixed-language rate), read from each run's metrics.jsonl."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

BARS_FILE = "results.png"
CURVES_FILE = "grpo-curves.png"


def _bar(ax: Any, labels: list[str], entries: list[Mapping[str, Any]], title: str) -> None:
    means = [100 * e["mean"] for e in entries]
    lows = [100 * (e["mean"] - e["ci95"][0]) if e.get("ci95") else 0.0 for e in entries]
    highs = [100 * (e["ci95"][1] - e["mean"]) if e.get("ci95") else 0.0 for e in entries]
    ax.bar(range(len(means)), means, yerr=[lows, highs], capsize=4, color="#4c72b0")
    for i, e in enumerate(entries):
        for v in e.get("values") or []:
            ax.plot(i, 100 * v, "k.", markersize=4)
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("%")
    ax.set_title(title, fontsize=9)


def plot_study(arms: Mapping[str, Any], results: Mapping[str, Any], out_dir: Path) -> list[str]:
    """Write the plots into out_dir; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trainer.metrics import read_metrics

    r0, dist, lang, filt = (
        results["r1_zero"],
        results["distillation"],
        results["language"],
        results["filtering"],
    )
    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    _bar(
        axes[0],
        ["base", "R1-Zero", "format after"],
        [r0["accuracy_before"], r0["accuracy_after"], r0["format_rate_after"]],
        "1. R1-Zero: held-out accuracy, format rate",
    )
    _bar(
        axes[1],
        ["distilled (SFT)", "pure GRPO"],
        [dist["student_distilled"], dist["student_rl"]],
        "2. student: distilled vs RL, same CPU-s",
    )
    _bar(
        axes[2],
        ["mixed without", "mixed with", "acc without", "acc with"],
        [
            lang["mixed_rate_without"],
            lang["mixed_rate_with"],
            lang["accuracy_without"],
            lang["accuracy_with"],
        ],
        "3. language-consistency reward",
    )
    _bar(
        axes[3],
        ["filtered", "unfiltered"],
        [filt["student_filtered"], filt["student_unfiltered"]],
        "4. student: filtered vs unfiltered",
    )
    fig.suptitle(f"held-out, mean and 95% CI over seeds {results['seeds']} (dots: seeds)")
    fig.tight_layout()
    fig.savefig(out_dir / BARS_FILE, dpi=90)
    plt.close(fig)

    keys = ("response_length", "format_rate", "accuracy", "mixed_language_rate")
    fig, axes = plt.subplots(1, len(keys), figsize=(16, 3.6))
    for name, arm in sorted(arms.items()):
        kind = name.split("/")[0]
        if kind not in ("r1_zero", "language", "student_rl"):
            continue
        records = read_metrics(arm["dir"], "train")
        style = {"r1_zero": "-", "language": "--", "student_rl": ":"}[kind]
        for ax, key in zip(axes, keys, strict=True):
            points = [(r["step"], r[key]) for r in records if key in r]
            if points:
                ax.plot(*zip(*points, strict=True), style, label=name, linewidth=1)
    for ax, key in zip(axes, keys, strict=True):
        ax.set_title(f"rollouts: {key}", fontsize=9)
        ax.set_xlabel("GRPO step")
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out_dir / CURVES_FILE, dpi=90)
    plt.close(fig)
    return [BARS_FILE, CURVES_FILE]
