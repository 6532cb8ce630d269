"""Parallel training, applied to a built model from outside (the model knows nothing of ranks).

- `training`: the training loop distributed (`r1f train STAGE --nproc N`): the placement
  `run_training` uses when `TrainConfig.parallel` asks for several processes, the loop's model
  adapter over ranks, checkpoints in the single-process layout, layout checks;
- `parallelize(model, ParallelConfig(dp=, ep=, pp=, schedule=, microbatches=))` spreads a
  Transformer over one (pp, dp, ep) device mesh and returns a `ParallelModel` whose
  `forward_backward` runs this rank's share of a step;
- `expert`: expert parallelism (all-to-all token dispatch and combine, traffic meter);
- `pipeline`: stages for torch's Schedule1F1B and ScheduleDualPipeV, MTP on the last stage;
- `overlap`: DualPipeV's overlapped forward/backward pairs run concurrently;
- `data`: FSDP2 or DDP over the data group;
- `simulate`: the schedule simulator that reproduces the DeepSeek-V3 table;
- `launch`: joining a process group, torchrun for the CLI, and spawning local ranks (tests,
  benchmarks);
- `check`: one training step single-process and distributed, for comparing them.

See docs/parallel.md and docs/dualpipe.md.
"""

from trainer.config import ParallelConfig
from trainer.parallel.expert import AllToAllMeter, ExpertParallelMoE, apply_expert_parallel
from trainer.parallel.launch import WorkerError, init_distributed, spawn
from trainer.parallel.parallelize import (
    ParallelModel,
    StepOutput,
    build_mesh,
    data_rank,
    parallelize,
)

__all__ = [
    "AllToAllMeter",
    "ExpertParallelMoE",
    "ParallelConfig",
    "ParallelModel",
    "StepOutput",
    "WorkerError",
    "apply_expert_parallel",
    "build_mesh",
    "data_rank",
    "init_distributed",
    "parallelize",
    "spawn",
]
