"""Distil a Qwen2-style student from a mixture the factory assembled, and score it before and
after on held-out toy problems: the issue's distillation figure, reproducible end to end.

    PYTHONPATH=. python scripts/distill_toy.py --teacher DIR [--work work/distill]

DIR is a toy base run's output directory (`r1f train pretrain --config
configs/pretrain-toy.yaml`, or the demo's `work/base/<hash>/`): the student takes its
tokenizer, as a student distilled from a teacher does. Every step is the factory's own command
on a scratch store under --work (R1F_STORE):

1. the worked solutions of every toy family (`generators.tasks`, task seed 0, difficulty 1;
   the "teacher's" verified reasoning at toy scale) are written as sample rows
   (`flows.demo.reference_rows`, what the demo imports) and imported: `r1f datasets import`;
2. judged: `r1f verify table` (math answers against gold, R1 format);
3. filtered and assembled into a mixture version: `r1f filter run --config
   configs/filter-distill.yaml` (rejection, decontamination, dedup, selection, mixture);
4. the student distilled on that version: `r1f train distill --config
   configs/distill-factory.yaml`, which scores held-out problems (task seed 1000, which the
   mixture never used) with the student's random initial weights and again after training.

The commands' own output is printed as it runs; the last lines are the before/after table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Worked solutions per family: the student is scored on arithmetic and countdown.
FAMILIES = {
    "toy-arithmetic": 4000,
    "toy-countdown": 4000,
    "toy-linear": 400,
    "toy-algebra": 400,
    "toy-greeting": 100,
    "toy-self-cognition": 100,
    "toy-facts": 200,
    "toy-translation": 200,
}


def reference_file(path: Path) -> int:
    from flows.demo import reference_rows
    from generators.tasks import SOURCES

    tasks = [
        task
        for name, n in FAMILIES.items()
        for task in SOURCES[name].generate(n, seed=0, difficulty=1)
    ]
    rows = reference_rows(tasks)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return len(rows)


def r1f(*args: str, env: dict[str, str]) -> None:
    command = [sys.executable, "-m", "flows.cli", *args]
    print(f"\n$ r1f {' '.join(args)}", flush=True)
    subprocess.run(command, env=env, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", required=True, help="toy base output directory")
    parser.add_argument("--work", default="work/distill", help="scratch directory (replaced)")
    opts = parser.parse_args()
    teacher, work = Path(opts.teacher), Path(opts.work)
    if not (teacher / "tokenizer.json").is_file():
        sys.exit(f"--teacher {teacher}: no tokenizer.json; name a toy base's output directory")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {
        **os.environ,
        "R1F_STORE": str(work / "store"),
        "R1F_CARDS": str(work / "cards"),
        "R1F_TEACHER": str(teacher),
        "HF_HUB_OFFLINE": "1",
    }
    rows = work / "reference.jsonl"
    print(f"{reference_file(rows)} worked solutions -> {rows}", flush=True)
    r1f("datasets", "import", str(rows), "--table", "distill-reference", env=env)
    r1f("verify", "table", "distill-reference", env=env)
    r1f("filter", "run", "--config", "configs/filter-distill.yaml", env=env)
    r1f("datasets", "show", "distill-mixture", env=env)
    r1f(
        "train",
        "distill",
        "--config",
        "configs/distill-factory.yaml",
        "--out",
        str(work / "student"),
        env=env,
    )


if __name__ == "__main__":
    main()
