"""Parallel training, applied to a built model from outside (the model knows nothing of ranks).

- `parallelize(model, ParallelDims(dp=, ep=, pp=, schedule=, microbatches=))` spreads a
  Transformer over one (pp, dp, ep) device mesh and returns a `ParallelModel` whose `step`
  runs one forward/backward of this rank's slice of the global batch;
- `expert`: expert parallelism (all-to-all token dispatch and combine, traffic meter);
- `pipeline`: stages for torch's Schedule1F1B and ScheduleDualPipeV, MTP on the last stage;
- `overlap`: DualPipeV's overlapped forward/backward pairs run concurrently;
- `data`: FSDP2 or DDP over the data group;
- `simulate`: the schedule simulator that reproduces the DeepSeek-V3 table;
- `launch`: joining a process group (torchrun) and spawning local ranks (tests, benchmarks);
- `check`: one step single-process and distributed, for comparing them.

See docs/parallel.md and docs/dualpipe.md.
"""

from trainer.parallel.expert import AllToAllMeter, ExpertParallelMoE, apply_expert_parallel
from trainer.parallel.launch import WorkerError, init_distributed, spawn
from trainer.parallel.parallelize import (
    ParallelDims,
    ParallelModel,
    StepResult,
    build_mesh,
    data_rank,
    parallelize,
)

__all__ = [
    "AllToAllMeter",
    "ExpertParallelMoE",
    "ParallelDims",
    "ParallelModel",
    "StepResult",
    "WorkerError",
    "apply_expert_parallel",
    "build_mesh",
    "data_rank",
    "init_distributed",
    "parallelize",
    "spawn",
]
