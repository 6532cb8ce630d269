"""Probe: does a toy base know single arithmetic steps? (docs/training.md, "The toy base model")

    python bench/fact_probe.py work/runs/pretrain-toy

Each fact is asked as the corpus's drills write it: a drill line, two solved facts, then
`a op b=`; the greedy completion up to its first `.` must be the result. Three sets: the 81
one-digit sums, the 64 one-digit products (2..9), and 200 facts drawn as the arithmetic and
countdown problems use them (`solution_facts`, a fixed seed). One torch thread.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

# Run as a script, bench/ comes first on sys.path and bench/store.py would shadow the `store`
# package: put the repo root there instead.
_BENCH_DIR = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH_DIR]
sys.path.insert(0, str(_BENCH_DIR.parent))

import torch  # noqa: E402

from generators.tasks.corpus import solution_facts  # noqa: E402
from trainer.checkpoint import load_checkpoint  # noqa: E402
from trainer.evaluate import sampler_for  # noqa: E402
from trainer.tokenizer import BOS, R1Tokenizer  # noqa: E402

CONTEXT = "Arithmetic practice.\n3+5=8.\n12+7=19.\n"


def score(sample: object, facts: list[str]) -> tuple[int, list[str]]:
    """(right, a few answers as written) for facts like `7*8=56.`."""
    questions = [BOS + CONTEXT + fact.split("=")[0] + "=" for fact in facts]
    outs = sample(questions, 0.0, 1, 5, 0)  # type: ignore[operator]
    answers = [out[0].split(".")[0] for out in outs]
    right = sum(a == f.split("=")[1].rstrip(".") for a, f in zip(answers, facts, strict=True))
    shown = [f"{f.split('=')[0]}={a}" for f, a in zip(facts[:6], answers[:6], strict=True)]
    return right, shown


def main() -> None:
    if len(sys.argv) != 2:
        print("usage: python bench/fact_probe.py MODEL_DIR", file=sys.stderr)
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


if __name__ == "__main__":
    main()
