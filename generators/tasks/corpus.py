"""The toy universe's corpus: the texts a fresh checkpoint's tokenizer is trained on."""

from __future__ import annotations


def toy_corpus() -> list[str]:
    """Every toy task family's prompts (rendered as chat prompts) and worked solutions,
    difficulties 1-3, a fixed seed: the texts `r1f model init` trains its tokenizer on."""
    from generators.tasks import SOURCES, render_pretraining_text
    from trainer.tokenizer import render_prompt

    tasks = [
        task
        for source in SOURCES.values()
        for difficulty in (1, 2, 3)
        for task in source.generate(100, seed=0, difficulty=difficulty)
    ]
    return [render_pretraining_text(t) for t in tasks] + [render_prompt(t.prompt) for t in tasks]
