"""Pipeline schedules: the DeepSeek-V3 table simulated beside its formulas, and the real
schedules' step times measured on gloo.

    python bench/pipeline.py           # full: PP up to 16, 10 timed steps
    python bench/pipeline.py --quick   # small: under a minute on two idle cores

1. Simulation (`trainer.parallel.simulate`): for several PP and op times, every schedule's
   bubble, parameters, activations and devices, simulated and from the table. A case whose
   op times meet the formula's conditions must match it exactly; `formulas_match` is true when
   all of them do. Cases outside the conditions are printed too (there the simulation is the
   right number and the formula an estimate). Writes the timelines of one case as a PNG.
2. Real schedules (`trainer.parallel`, gloo on loopback, 2 processes, one torch thread each):
   the training loop's step (`trainer.train.train_step`) of a tiny DeepSeek-V3 (MLA, MoE, MTP)
   on the same global batch of packed rows under
   Schedule1F1B (2 stages), ScheduleDualPipeV (4 stages folded on 2 ranks), and DualPipeV with
   the overlap hook; and the plain single-process step as the anchor. Median wall time per
   step. `ratio` is 1F1B's step time over DualPipeV's (higher: DualPipeV faster);
   `overlap_ratio` is DualPipeV's over DualPipeV-with-overlap. On a CPU the schedules' bubbles
   are not hidden by anything and the overlap threads share the same cores: these numbers
   say what the schedules cost here, not what they buy on GPUs.

The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench._common import emit_json, print_table, rounded

WORK = Path("work/bench/pipeline")

# Op-time sets: the paper's figure (F = I = W, F&B drawn as F + B), the same with an overlap
# that saves half a forward, a heavier backward, and two sets outside DualPipe's conditions.
OP_TIMES = {
    "figure": (1.0, 2.0, 1.0, 3.0),
    "overlap": (1.0, 2.0, 1.0, 2.5),
    "heavy-B": (2.0, 4.0, 1.5, 5.0),
    "F<I": (1.0, 2.0, 0.5, 2.5),
    "W>F": (1.0, 3.0, 1.5, 3.5),
}


def simulation(pps: list[int], png: Path) -> dict[str, Any]:
    from trainer.parallel.simulate import (
        BUILDERS,
        SCHEDULES,
        OpTimes,
        draw_timeline,
        formula_exact,
        formulas,
        simulate,
    )

    rows = []
    exact = matched = outside = 0
    for pp in pps:
        micro = {"1F1B": 2 * pp, "ZB1P": 2 * pp, "DualPipe": 2 * pp, "DualPipeV": pp}
        for label, (F, B, W, FB) in OP_TIMES.items():
            times = OpTimes(F=F, B=B, W=W, FB=FB)
            for name in SCHEDULES:
                result = simulate(BUILDERS[name](pp, micro[name]), times)
                row = formulas(name, pp, times)
                holds = formula_exact(name, pp, micro[name], times)
                same = (
                    abs(result.bubble - row.bubble) < 1e-9
                    and result.parameters == row.parameters
                    and result.activations == row.activations
                    and result.schedule.n_ranks == row.devices
                )
                if holds:
                    exact += 1
                    matched += same
                else:
                    outside += 1
                rows.append(
                    [
                        pp,
                        label,
                        name,
                        micro[name],
                        rounded(result.bubble),
                        rounded(row.bubble),
                        f"{result.parameters}x/{row.parameters}x",
                        f"{result.activations}/{row.activations}",
                        f"{result.schedule.n_ranks}/{row.devices}",
                        "yes" if holds else "no",
                    ]
                )
    print_table(
        [
            "PP",
            "op times",
            "schedule",
            "m",
            "bubble sim",
            "formula",
            "params",
            "act",
            "dev",
            "conds",
        ],
        rows,
    )
    times = OpTimes(*OP_TIMES["figure"])
    pp = 8
    results = [simulate(BUILDERS[n](pp, 20 if n != "DualPipeV" else 10), times) for n in SCHEDULES]
    png.parent.mkdir(parents=True, exist_ok=True)
    draw_timeline(results, png)
    print(f"timelines (PP=8, figure op times): {png}")
    return {
        "formulas_match": exact > 0 and matched == exact,
        "cases_in_conditions": exact,
        "cases_matching": matched,
        "cases_outside_conditions": outside,
    }


def real_schedules(quick: bool) -> dict[str, Any]:
    from trainer.config import LoopConfig, OptimConfig, ParallelConfig
    from trainer.model import tiny
    from trainer.parallel.check import StepCase, loop_steps, loop_steps_many, random_documents
    from trainer.parallel.launch import spawn

    steps = 3 if quick else 10
    batch, seq, micro = (8, 32, 4) if quick else (16, 64, 8)
    args = tiny()
    # The loop's own step (trainer.train.train_step) on packed rows of random documents; the
    # single process runs the step's rows as one micro-batch, the pipelines as `micro`.
    case = StepCase(
        args,
        random_documents(batch * steps * 4, args.vocab_size, seed=0),
        seq_len=seq,
        loop=LoopConfig(rows_per_micro_batch=batch, grad_accum=1),
        optim=OptimConfig(lr=1e-3, warmup_steps=1),
        steps=1,  # the first step warms up
        timed_steps=steps,
    )
    layouts = {
        "1f1b": ParallelConfig(pp=2, microbatches=micro),
        "dualpipev": ParallelConfig(pp=2, microbatches=micro, schedule="dualpipev"),
        "dualpipev_overlap": ParallelConfig(
            pp=2, microbatches=micro, schedule="dualpipev", overlap=True
        ),
    }
    started = time.perf_counter()
    cases = {name: case.under(layout) for name, layout in layouts.items()}
    per_rank = spawn(loop_steps_many, 2, (cases,), timeout_s=900)
    wall = time.perf_counter() - started
    torch.set_num_threads(1)
    single = statistics.median(loop_steps(0, 1, case).seconds)
    figures: dict[str, Any] = {"step_s_single_process": rounded(single, 4)}
    rows = [["single process", 1, 1, rounded(single, 4), 1.0]]
    for name, layout in layouts.items():
        # A step ends with the logged sums' all-reduce: ranks finish together; take the
        # slower one.
        per_step = [max(r[name].seconds[i] for r in per_rank) for i in range(steps)]
        step = statistics.median(per_step)
        figures[f"step_s_{name}"] = rounded(step, 4)
        rows.append([name, layout.pp, layout.stages, rounded(step, 4), rounded(step / single, 2)])
    print(
        f"\nreal schedules on gloo: 2 processes x 1 thread, tiny model, batch {batch} x "
        f"{seq} tokens, {micro} micro-batches, median of {steps} steps"
    )
    print_table(["schedule", "ranks", "stages", "step s", "x single"], rows)
    figures.update(
        {
            "ratio": rounded(figures["step_s_1f1b"] / figures["step_s_dualpipev"], 3),
            "overlap_ratio": rounded(
                figures["step_s_dualpipev"] / figures["step_s_dualpipev_overlap"], 3
            ),
            "batch": batch,
            "seq": seq,
            "microbatches": micro,
            "timed_steps": steps,
            "threads_per_rank": 1,
            "spawn_wall_s": rounded(wall, 1),
        }
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small run, under a minute")
    opts = parser.parse_args()
    pps = [4, 8] if opts.quick else [4, 8, 16]
    figures: dict[str, Any] = {"bench": "pipeline", "quick": opts.quick}
    figures.update(simulation(pps, WORK / "timelines.png"))
    figures.update(real_schedules(opts.quick))
    emit_json(figures)


if __name__ == "__main__":
    main()
