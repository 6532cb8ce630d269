"""DualPipeV's overlapped pair, run overlapped: one micro-batch's forward beside another's
backward.

`ScheduleDualPipeV` emits `OVERLAP_F_B` actions (a forward of one stage and a full backward of
the rank's other stage, on different micro-batches) and runs their two halves one after the
other unless a function is registered for them. `register_overlap` registers one that runs the
backward on a second thread while the calling thread runs the forward. Whenever one of them
waits (for an expert all-to-all above all: DeepSeek-V3 hides the dispatch and combine of one
micro-batch under the computation of the other), the other can compute.

What makes it safe:

- Pipeline sends and receives stay on the schedule's thread: the pair's inputs are waited for
  before either half starts, and outputs handed to a neighbouring stage on the same rank
  after both have finished.
- The expert all-to-alls of forwards and of backwards run on two process groups over the same
  ranks (`trainer.parallel.expert.ExpertGroups`), so the two threads' collectives cannot meet
  out of order on another rank.
- Nothing else may issue collectives inside a forward or a backward. FSDP does (its parameter
  gathers and gradient reductions, on one process group for both directions), so
  `ParallelDims(overlap=True)` refuses FSDP; with DDP the gradients are averaged after the
  schedule, outside the pair.

The numbers are the sequential schedule's (tested: same loss and gradients). What the overlap
buys is a GPU matter (compute kernels on one stream while NCCL moves the other micro-batch's
tokens); on the CPU with gloo both threads share the same cores, and `bench/pipeline.py`
reports the measured step time with and without it rather than a claim.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from typing import Any


@dataclass
class OverlapCounter:
    """How many forward/backward pairs ran overlapped (the caller resets it per step)."""

    pairs: int = 0


def register_overlap(schedule: Any) -> OverlapCounter:
    """Run every OVERLAP_F_B action of a ScheduleDualPipeV with its halves overlapped."""
    from torch.distributed.pipelining.schedules import OVERLAP_F_B

    counter = OverlapCounter()
    schedule.register_custom_function(
        OVERLAP_F_B, functools.partial(overlapped_forward_backward, counter=counter)
    )
    return counter


def overlapped_forward_backward(
    action: Any, ctx: Any, *, counter: OverlapCounter | None = None
) -> None:
    """The registered function: (forward action, full-backward action) of one OVERLAP_F_B.

    Mirrors what the runtime does for each half alone (torch 2.13's
    `_PipelineScheduleRuntime._step_microbatches`), except that the two computations run at
    the same time.
    """
    from torch.distributed.pipelining.schedules import _wait_batch_p2p

    schedule = ctx.schedule_ref
    stages = {stage.stage_index: stage for stage in schedule._stages}
    fwd, bwd = action.sub_actions
    f_stage, f_mb = stages[fwd.stage_index], fwd.microbatch_index
    b_stage, b_mb = stages[bwd.stage_index], bwd.microbatch_index

    # Inputs first, on this thread. A stage whose neighbour is on this rank gets its input
    # handed over locally (the bottom of the V) and has nothing to receive.
    if not f_stage.is_first and f_stage.stage_index - 1 not in stages:
        _wait_batch_p2p(schedule.fwd_recv_ops.pop((f_stage.stage_index, f_mb)))
    if not b_stage.is_last and b_stage.stage_index + 1 not in stages:
        _wait_batch_p2p(schedule.bwd_recv_ops.pop((b_stage.stage_index, b_mb)))

    schedule.backward_counter[b_stage.stage_index] += 1
    last_backward = schedule.backward_counter[b_stage.stage_index] == schedule._n_microbatches
    loss = schedule._maybe_get_loss(b_stage, b_mb)
    failure: list[BaseException] = []

    def backward() -> None:
        try:
            b_stage.backward_one_chunk(
                b_mb, loss=loss, full_backward=True, last_backward=last_backward
            )
        except BaseException as exc:  # handed to the schedule's thread below
            failure.append(exc)

    worker = threading.Thread(target=backward, name=f"overlap-backward-{b_stage.stage_index}")
    worker.start()
    try:
        output = f_stage.forward_one_chunk(f_mb, ctx.arg_mbs[f_mb], ctx.kwarg_mbs[f_mb])
        schedule._maybe_compute_loss(f_stage, output, ctx.target_mbs, f_mb)
    finally:
        worker.join()
    if failure:
        raise failure[0]
    if counter is not None:
        counter.pairs += 1

    # Outputs to a neighbouring stage on this rank, after both halves are done.
    if f_stage.stage_index + 1 in stages:
        stages[f_stage.stage_index + 1].set_local_fwd_input(output, f_mb)
    if b_stage.stage_index - 1 in stages:
        stages[b_stage.stage_index - 1].set_local_bwd_input(
            b_stage.get_local_bwd_output(b_mb), b_mb
        )
