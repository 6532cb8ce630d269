"""One training step of a tiny MoE model (MTP and balance loss on) under DP, EP, PP-1F1B,
PP-DualPipeV and EP+PP on gloo gives the single-process loss, gradients and router biases.

Workers are started with `trainer.parallel.launch.spawn` (fresh processes, file rendezvous,
a deadline that kills them all). Each group of layouts shares one process start: the layouts
run one after the other in the same workers, and each test checks one layout's results.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
import torch
from torch import Tensor

from trainer.model import ModelArgs, tiny
from trainer.parallel.check import (
    StepRecord,
    merge_ranks,
    parallel_steps,
    reference_step,
    shard_loads,
)
from trainer.parallel.launch import spawn
from trainer.parallel.parallelize import ParallelDims
from trainer.parallel.simulate import dualpipev

pytestmark = pytest.mark.dist

SEED, GAMMA = 0, 0.01
# Generous: four processes share two busy cores; the guard is against hangs, not slowness.
DEADLINE_S = 600.0
# fp32 rounding: sums over ranks and micro-batches in another order than one process.
GRAD_TOL = 1e-6

TWO_RANKS = {
    "dp-fsdp": ParallelDims(dp=2, microbatches=2),
    "dp-ddp": ParallelDims(dp=2, microbatches=2, data_parallel="ddp"),
    "ep": ParallelDims(ep=2),
    "ep-ddp": ParallelDims(ep=2, data_parallel="ddp"),
    "pp-1f1b": ParallelDims(pp=2, microbatches=4),
    "pp-dualpipev": ParallelDims(pp=2, microbatches=4, schedule="dualpipev"),
    "pp-dualpipev-overlap": ParallelDims(pp=2, microbatches=4, schedule="dualpipev", overlap=True),
}
FOUR_RANKS = {
    "ep-pp-dualpipev": ParallelDims(ep=2, pp=2, microbatches=4, schedule="dualpipev"),
    "ep-pp-1f1b": ParallelDims(ep=2, pp=2, microbatches=4),
    "dp-pp-dualpipev": ParallelDims(dp=2, pp=2, microbatches=4, schedule="dualpipev"),
    "ep-pp-dualpipev-overlap-ddp": ParallelDims(
        ep=2, pp=2, microbatches=4, schedule="dualpipev", overlap=True, data_parallel="ddp"
    ),
}


FULL_MESH = ParallelDims(pp=2, dp=2, ep=2, microbatches=4, schedule="dualpipev")


def model_args() -> ModelArgs:
    # 4 layers (the first dense) + 1 MTP module, 8 experts in 4 groups, balance loss on.
    return tiny(vocab_size=64, seq_aux_alpha=0.01)


def global_batch(size: int, seq: int = 16) -> tuple[Tensor, Tensor]:
    data = torch.randint(0, 64, (size, seq + 1), generator=torch.Generator().manual_seed(1))
    return data[:, :-1], data[:, 1:]


@functools.cache
def reference(batch: int = 8) -> StepRecord:
    return reference_step(model_args(), SEED, *global_batch(batch), GAMMA)


@functools.cache
def run(world_size: int) -> dict[str, list[StepRecord]]:
    configs = TWO_RANKS if world_size == 2 else FOUR_RANKS
    per_rank = spawn(
        parallel_steps,
        world_size,
        (configs, model_args(), SEED, *global_batch(8), GAMMA),
        timeout_s=DEADLINE_S,
    )
    return {name: [ranks[name] for ranks in per_rank] for name in configs}


def assert_matches_reference(records: list[StepRecord], batch: int = 8) -> None:
    ref = reference(batch)
    for record in records:  # every rank reports the global loss
        assert record.loss == pytest.approx(ref.loss, rel=1e-6, abs=0)
    grads, biases = merge_ranks(records)
    assert grads.keys() == ref.grads.keys()
    worst = max((grads[n] - ref.grads[n]).abs().max().item() for n in ref.grads)
    assert worst < GRAD_TOL, worst
    assert biases.keys() == ref.biases.keys()
    for name, bias in ref.biases.items():  # the same update on every rank, bit for bit
        assert torch.equal(biases[name], bias), name
    # The update moved the biases: the check above compared something.
    assert any(b.abs().sum() > 0 for b in ref.biases.values())


@pytest.mark.parametrize("name", list(TWO_RANKS))
def test_two_ranks_match_one_process(name: str) -> None:
    assert_matches_reference(run(2)[name])


@pytest.mark.parametrize("name", list(FOUR_RANKS))
def test_four_ranks_match_one_process(name: str) -> None:
    assert_matches_reference(run(4)[name])


def test_overlap_ran_the_pairs_the_schedule_has() -> None:
    # As many F&B pairs ran overlapped on each rank as the simulator's DualPipeV has.
    expected = [sum(op.overlapped for op in ops) for ops in dualpipev(4, 4).ops]
    assert min(expected) > 0
    assert [r.overlapped_pairs for r in run(2)["pp-dualpipev-overlap"]] == expected
    assert [r.overlapped_pairs for r in run(2)["pp-dualpipev"]] == [0, 0]


def routed_rows(load: dict[int, Tensor], layers: Any, experts: range, inside: bool) -> int:
    """Pairs of `layers` routed to an expert in (inside) or outside `experts`."""
    return sum(
        int(count)
        for layer in layers
        for expert, count in enumerate(load[layer].tolist())
        if (expert in experts) == inside
    )


def expected_traffic(
    records: list[StepRecord], dims: ParallelDims, args: ModelArgs
) -> list[dict[str, int]]:
    """Per rank, the all-to-all rows and bytes the routing implies: from the single-process
    model's expert load on each data rank's slice of the batch, the rows whose expert lives
    on another rank of the EP group (dispatch), the rows peers send this rank's experts
    (returned in the combine), and the same again for the gradients."""
    tokens, _ = global_batch(8)
    loads = shard_loads(args, SEED, tokens, dims.data_size)
    per_ep = args.n_routed_experts // dims.ep
    out = []
    for rank, record in enumerate(records):
        ep_rank = rank % dims.ep  # mesh (pp, dp, ep): ep is the fastest-moving coordinate
        data_rank = (rank // dims.ep) % dims.dp * dims.ep + ep_rank
        mine = range(ep_rank * per_ep, (ep_rank + 1) * per_ep)
        layers = record.load.keys()  # the layers this rank's stages run
        peers = [data_rank - ep_rank + e for e in range(dims.ep) if e != ep_rank]
        dispatch = routed_rows(loads[data_rank], layers, mine, inside=False)
        combine = sum(routed_rows(loads[p], layers, mine, inside=True) for p in peers)
        row_bytes = args.dim * 4  # fp32
        out.append(
            {
                "dispatch_rows": dispatch,
                "combine_rows": combine,
                "backward_rows": dispatch + combine,
                "bytes": 2 * (dispatch + combine) * row_bytes,
            }
        )
    return out


@pytest.mark.parametrize(("world_size", "name"), [(2, "ep"), (4, "ep-pp-dualpipev")])
def test_all_to_all_volume_equals_the_routing(world_size: int, name: str) -> None:
    records = run(world_size)[name]
    dims = (TWO_RANKS | FOUR_RANKS)[name]
    expected = expected_traffic(records, dims, model_args())
    measured = [
        {k: r.all_to_all[k] for k in ("dispatch_rows", "combine_rows", "backward_rows", "bytes")}
        for r in records
    ]
    assert measured == expected
    assert all(e["dispatch_rows"] > 0 for e in expected)


@pytest.mark.slow
def test_pp_dp_ep_on_one_mesh_matches_one_process() -> None:
    """All three at once: 8 processes, mesh (pp=2, dp=2, ep=2), DualPipeV, FSDP2."""
    per_rank = spawn(
        parallel_steps,
        FULL_MESH.world_size,
        ({"full": FULL_MESH}, model_args(), SEED, *global_batch(16), GAMMA),
        timeout_s=DEADLINE_S * 2,
    )
    assert_matches_reference([ranks["full"] for ranks in per_rank], batch=16)
