"""Expert parallelism: the routed experts of every MoE layer sharded across the ranks of an
expert-parallel (EP) group, tokens sent to their experts and back with all-to-all.

Rank e of an EP group of size P keeps experts [e E/P, (e+1) E/P); the others become
`RemoteExpert` placeholders without parameters, so a parameter keeps its name (and hub name)
whichever rank holds it. Everything else in the layer (router, shared experts, attention) is
replicated, and the ranks of an EP group see different tokens: for those parameters EP is data
parallelism (`trainer.parallel.data` reduces their gradients over the whole data group).

One MoE forward on one rank, with its N tokens routed to k experts each:

1. sort the N k (token, expert) pairs by expert, which groups them by owning rank;
2. exchange the per-expert counts (an all-to-all of E integers), so every rank knows how many
   rows it will receive from each peer for each of its experts;
3. dispatch: one variable-size `all_to_all_single` of the token rows;
4. regroup the received rows by local expert, run each local expert once, and put the rows
   back in arrival order;
5. combine: the reverse `all_to_all_single`; the rows land in the order of step 1 and the MoE
   gates and sums them as it does without EP.

The backward of each all-to-all is the all-to-all with the splits swapped. Forward exchanges
run on one process group and backward ones on a second group over the same ranks, so that a
forward and a backward may run at the same time (DualPipeV's overlapped F&B) without their
collectives meeting out of order.

Every row that crosses ranks is counted by an `AllToAllMeter` (rows a rank sends to a peer;
its own rows never leave it), in both directions and in bytes; `tests/trainer/parallel`
checks the count against the routing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.device_mesh import DeviceMesh

from trainer.model import MoE, MTPModule, Transformer
from trainer.model.model import Block


@dataclass(frozen=True)
class ExpertGroups:
    """The EP group twice over the same ranks: forward exchanges on one, gradients on the other."""

    forward: dist.ProcessGroup
    backward: dist.ProcessGroup
    rank: int  # this rank's index in the group
    size: int


def expert_groups(mesh: DeviceMesh, dim: str = "ep") -> ExpertGroups:
    """The EP groups of `mesh` along `dim`. Every rank must call this (it creates a process
    group for every EP group of the mesh, in the same order on all ranks)."""
    forward = mesh.get_group(dim)
    mine = dist.get_process_group_ranks(forward)
    # All EP groups of the mesh: fix every other coordinate, vary `dim`.
    axis = list(mesh.mesh_dim_names or ()).index(dim)
    lines = mesh.mesh.movedim(axis, -1).reshape(-1, mesh.mesh.shape[axis]).tolist()
    backward = None
    for ranks in lines:
        group = dist.new_group(ranks)
        if ranks == mine:
            backward = group
    assert backward is not None  # this rank is on exactly one line
    return ExpertGroups(forward, backward, mine.index(dist.get_rank()), len(mine))


class AllToAllMeter:
    """Rows and bytes the expert all-to-alls moved between ranks since the last `reset`.

    `dispatch_rows` / `combine_rows`: token rows sent to another rank in the forward dispatch
    and combine; `backward_rows`: the same for their gradients in the backward; `bytes`: all of
    them times the row size; `count_bytes`: the per-expert counts exchanged before each
    dispatch. Thread-safe: an overlapped forward and backward may add at once.
    """

    FIELDS = ("dispatch_rows", "combine_rows", "backward_rows", "bytes", "count_bytes", "calls")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(self.FIELDS, 0)

    def add(self, **amounts: int) -> None:
        with self._lock:
            for name, value in amounts.items():
                self._counts[name] += value

    def reset(self) -> None:
        with self._lock:
            self._counts = dict.fromkeys(self.FIELDS, 0)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


def _off_rank(splits: list[int], me: int) -> int:
    return sum(n for peer, n in enumerate(splits) if peer != me)


class _AllToAll(torch.autograd.Function):
    """Differentiable variable-size all-to-all of rows: row blocks of `in_splits` go to each
    peer, blocks of `out_splits` arrive from each peer. Its backward is the reverse exchange."""

    @staticmethod
    def forward(
        ctx: Any,
        rows: Tensor,
        out_splits: list[int],
        in_splits: list[int],
        groups: ExpertGroups,
        meter: AllToAllMeter,
        phase: str,
    ) -> Tensor:
        ctx.splits = (out_splits, in_splits)
        ctx.groups, ctx.meter = groups, meter
        out = rows.new_empty(sum(out_splits), *rows.shape[1:])
        dist.all_to_all_single(out, rows.contiguous(), out_splits, in_splits, group=groups.forward)
        sent = _off_rank(in_splits, groups.rank)
        meter.add(**{f"{phase}_rows": sent, "bytes": sent * _row_bytes(rows)})
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        out_splits, in_splits = ctx.splits
        groups: ExpertGroups = ctx.groups
        grad_in = grad.new_empty(sum(in_splits), *grad.shape[1:])
        dist.all_to_all_single(
            grad_in, grad.contiguous(), in_splits, out_splits, group=groups.backward
        )
        sent = _off_rank(out_splits, groups.rank)
        ctx.meter.add(backward_rows=sent, bytes=sent * _row_bytes(grad))
        return grad_in, None, None, None, None, None


def _row_bytes(rows: Tensor) -> int:
    return rows[0].numel() * rows.element_size() if rows.shape[0] else 0


class RemoteExpert(nn.Module):
    """Stands in for a routed expert that lives on another rank of the EP group."""

    def __init__(self, owner: int) -> None:
        super().__init__()
        self.owner = owner

    def forward(self, x: Tensor) -> Tensor:
        raise RuntimeError(
            f"this expert lives on EP rank {self.owner}; tokens reach it by all-to-all"
        )

    def extra_repr(self) -> str:
        return f"owner={self.owner}"


class ExpertParallelMoE(MoE):
    """A MoE whose routed experts are spread over an EP group (see the module docstring).

    Takes over an existing MoE's router, shared experts and this rank's routed experts; the
    forward (routing, gating, shared experts, balance loss, load counts) is MoE's own, only
    `run_experts` changes.
    """

    def __init__(self, moe: MoE, groups: ExpertGroups, meter: AllToAllMeter) -> None:
        # nn.Module's constructor only: MoE's would build a fresh set of experts.
        nn.Module.__init__(self)
        n_experts = len(moe.experts)
        if n_experts % groups.size:
            raise ValueError(
                f"{n_experts} routed experts do not split evenly over an EP group of "
                f"{groups.size} ranks: choose ep dividing n_routed_experts"
            )
        self.n_local = n_experts // groups.size
        self.first_local = groups.rank * self.n_local
        self.seq_aux_alpha = moe.seq_aux_alpha
        self.gate = moe.gate
        self.shared_experts = moe.shared_experts
        self.experts = nn.ModuleList(
            expert if self.is_local(j) else RemoteExpert(j // self.n_local)
            for j, expert in enumerate(moe.experts)
        )
        self.groups = groups
        self.meter = meter

    def is_local(self, expert: int) -> bool:
        return self.first_local <= expert < self.first_local + self.n_local

    def local_experts(self) -> Iterator[nn.Module]:
        return iter(self.experts[self.first_local : self.first_local + self.n_local])

    def run_experts(self, flat: Tensor, indices: Tensor, load: Tensor) -> Tensor:
        """flat (N, dim), indices (N, k), load (E,) -> (N*k, dim) expert outputs in pair order."""
        k = indices.shape[-1]
        size, n_local = self.groups.size, self.n_local
        # 1. Pairs sorted by expert: a stable sort keeps token order inside an expert.
        order = indices.flatten().argsort(stable=True)  # (N*k,)
        send = flat[order // k]  # (N*k, dim), grouped by owning rank, then expert
        # 2. Counts: sent[p, j] rows for peer p's local expert j; received[p, j] from peer p.
        sent_counts = load.view(size, n_local)  # (P, E/P)
        received = torch.empty_like(sent_counts)
        dist.all_to_all_single(received, sent_counts.contiguous(), group=self.groups.forward)
        self.meter.add(
            count_bytes=2 * _off_rank([n_local] * size, self.groups.rank) * load.element_size(),
            calls=1,
        )
        in_splits = sent_counts.sum(dim=1).tolist()
        out_splits = received.sum(dim=1).tolist()
        # 3. Dispatch.
        arrived = _AllToAll.apply(send, out_splits, in_splits, self.groups, self.meter, "dispatch")
        # 4. Arrival order is (peer, expert): block p * n_local + j. Run each local expert
        # once on its rows from every peer, then put the pieces back where they arrived.
        # Every local expert runs, on no rows if none arrived: under FSDP each rank of a group
        # must call the same modules in the same order whatever the routing, or their
        # gathers and reductions pair up wrongly and hang.
        blocks = list(arrived.split(received.flatten().tolist()))
        for j, expert in enumerate(self.local_experts()):
            sizes = received[:, j].tolist()
            out = expert(torch.cat([blocks[p * n_local + j] for p in range(size)]))
            for p, piece in enumerate(out.split(sizes)):
                blocks[p * n_local + j] = piece
        processed = torch.cat(blocks)
        # 5. Combine.
        returned = _AllToAll.apply(
            processed, in_splits, out_splits, self.groups, self.meter, "combine"
        )
        per_pair = flat.new_empty(indices.numel(), flat.shape[-1])
        per_pair[order] = returned  # (N*k, dim), row j: pair j's expert output
        return per_pair


def moe_blocks(model: Transformer) -> Iterator[Block]:
    """Every block of the model and of its MTP modules whose feed-forward is a MoE."""
    blocks = [*model.layers, *(m.block for m in model.mtp if isinstance(m, MTPModule))]
    for block in blocks:
        if isinstance(block, Block) and isinstance(block.ffn, MoE):
            yield block


def apply_expert_parallel(
    model: Transformer, groups: ExpertGroups, meter: AllToAllMeter | None = None
) -> AllToAllMeter:
    """Shard the routed experts of every MoE layer (MTP modules included) over `groups`, in
    place. Experts this rank does not keep are dropped (their memory is freed). Returns the
    meter that counts the all-to-all traffic."""
    meter = meter or AllToAllMeter()
    for block in moe_blocks(model):
        moe = block.ffn
        assert isinstance(moe, MoE)  # moe_blocks yields MoE blocks only
        if isinstance(moe, ExpertParallelMoE):
            raise ValueError("expert parallelism is already applied to this model")
        block.ffn = ExpertParallelMoE(moe, groups, meter)
    return meter
