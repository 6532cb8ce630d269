"""Probe: does a toy base know single arithmetic steps? (docs/training.md, "The toy base model")

    PYTHONPATH=. python scripts/fact_probe.py work/runs/pretrain-toy

A probe, not a benchmark: it measures no speed against an anchor, so it lives here rather
than in bench/ (whose every script `make bench` runs).

Each fact is asked as the corpus's drills write it: a drill line, two solved facts, then
`a op b=`; the greedy completion up to its first `.` must be the result. Three sets: the 81
one-digit sums, the 64 one-digit products (2..9), and 200 facts drawn as the arithmetic and
countdown problems use them (`solution_facts`, a fixed seed). Then the steps inside the
model's own answers: 8 samples at temperature 1 for each of the 50 held-out problems of each
family (task seed 1000, as the evaluation draws them), every `a op b=c` step checked. One
torch thread.
"""

from __future__ import annotations

import random
import re
import sys
from fractions import Fraction

import torch

from generators.tasks.corpus import solution_facts
from trainer.checkpoint import load_checkpoint
from trainer.evaluate import render_prompt, sampler_for
from trainer.tokenizer import BOS, R1Tokenizer

CONTEXT = "Arithmetic practice.\n3+5=8.\n12+7=19.\n"


def score(sample: object, facts: list[str]) -> tuple[int, list[str]]:
    """(right, a few answers as written) for facts like `7*8=56.`."""
    questions = [BOS + CONTEXT + fact.split("=")[0] + "=" for fact in facts]
    outs = sample(questions, 0.0, 1, 5, 0)  # type: ignore[operator]
    answers = [out[0].split(".")[0] for out in outs]
    right = sum(a == f.split("=")[1].rstrip(".") for a, f in zip(answers, facts, strict=True))
    shown = [f"{f.split('=')[0]}={a}" for f, a in zip(facts[:6], answers[:6], strict=True)]
    return right, shown


_STEP = re.compile(r"(\d+)\s*([-+*/])\s*(\d+)\s*=\s*(\d+)")


def steps_in_answers(sample: object, family: str) -> tuple[int, int, list[str]]:
    """(right, steps, a few wrong ones) over 8 samples of each held-out problem."""
    from flows.train import toy_problems

    problems = toy_problems([family], 50, 1000, 1)
    prompts = [render_prompt(p.prompt, think=p.think) for p in problems]
    outs = sample(prompts, 1.0, 8, 64, 0)  # type: ignore[operator]
    right = total = 0
    wrong: list[str] = []
    for texts in outs:
        for text in texts:
            for a, op, b, c in _STEP.findall(text):
                x, y = int(a), int(b)
                value = {"+": x + y, "-": x - y, "*": x * y}.get(op)
                if op == "/":
                    value = Fraction(x, y) if y else None
                total += 1
                if value == int(c):
                    right += 1
                elif len(wrong) < 6:
                    wrong.append(f"{a}{op}{b}={c}")
    return right, total, wrong


def main() -> None:
    if len(sys.argv) != 2:
        print("usage: PYTHONPATH=. python scripts/fact_probe.py MODEL_DIR", file=sys.stderr)
        raise SystemExit(2)
    torch.set_num_threads(1)
    model, _ = load_checkpoint(sys.argv[1])
    model.eval()
    sample = sampler_for(model, R1Tokenizer.from_dir(sys.argv[1]))
    stream = solution_facts(random.Random(5), ["toy-arithmetic", "toy-countdown"], [1])
    sets = {
        "one-digit sums": [f"{a}+{b}={a + b}." for a in range(1, 10) for b in range(1, 10)],
        "one-digit products": [f"{a}*{b}={a * b}." for a in range(2, 10) for b in range(2, 10)],
        "facts as the problems use them": [next(stream) for _ in range(200)],
    }
    for name, facts in sets.items():
        right, shown = score(sample, facts)
        print(f"{name}: {right} / {len(facts)}   e.g. {', '.join(shown)}")
    for family in ("toy-arithmetic", "toy-countdown"):
        right, total, wrong = steps_in_answers(sample, family)
        share = right / max(total, 1)
        print(f"{family} steps in sampled answers: {right} / {total} right ({share:.1%})", end="")
        print(f"   wrong e.g. {', '.join(wrong)}")


if __name__ == "__main__":
    main()
