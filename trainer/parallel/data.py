"""Data parallelism: FSDP2 (`fully_shard`) by default, DDP as the fallback.

FSDP2 runs on gloo and the CPU in torch 2.13 (measured here: `fully_shard` forward, backward
and the averaged, reduce-scattered gradients of a 2-rank run equal the single-process ones to
4e-9), so it is the default on every backend. DDP stays for backends or builds where FSDP2 is
not available; choose it with `mode="ddp"`.

Which gradients are averaged over which ranks. Every rank of the data group (the "dp" and "ep"
mesh dimensions together) sees different tokens, and the loss each rank back-propagates is the
mean over its own tokens, so the global gradient is the mean over the data group:

- dense parameters (attention, router, shared experts, norms, embedding, head): averaged over
  the whole data group, dp x ep ranks;
- routed experts under expert parallelism: each rank holds E/ep experts, and their gradient
  already sums what every rank of the EP group sent them (the all-to-all backward brings it
  home). They are averaged over "dp" (the replicas of the same experts) and divided by ep as
  well, i.e. divided by dp x ep in all.

FSDP2 shards each Block (and the root) over the data group and each MoE layer's local experts
over "dp" (averaging over dp), and `divide_expert_gradients` divides those by ep after the
step. DDP keeps the routed experts out of
its buckets (`reduce_gradients` averages them after the backward). Under a pipeline
schedule DDP's hooks are not used at all: `reduce_gradients` averages every gradient after
the schedule has run (see its docstring for why).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh

from trainer.model.model import Block
from trainer.parallel.expert import ExpertParallelMoE


def blocks_in(module: nn.Module) -> Iterator[Block]:
    """The transformer blocks inside `module` (MTP modules' blocks included)."""
    for sub in module.modules():
        if isinstance(sub, Block):
            yield sub


def expert_parameters(module: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """(name, parameter) of the routed experts held under expert parallelism."""
    for name, param in module.named_parameters():
        if ".experts." in name and _owner_is_ep(module, name):
            yield name, param


def _owner_is_ep(root: nn.Module, name: str) -> bool:
    owner_path = name.split(".experts.")[0]
    owner = root.get_submodule(owner_path)
    return isinstance(owner, ExpertParallelMoE)


def apply_fsdp(
    module: nn.Module, data_mesh: DeviceMesh, expert_mesh: DeviceMesh | None
) -> nn.Module:
    """Shard `module` (a Transformer or a pipeline stage module) with FSDP2, in place.

    data_mesh: the ranks that average dense gradients (dp x ep); expert_mesh: the ranks that
    hold the same experts ("dp"), or None without expert parallelism.
    """
    from torch.distributed.fsdp import FSDPModule, fully_shard

    for block in list(blocks_in(module)):
        ffn = block.ffn
        if isinstance(ffn, ExpertParallelMoE) and expert_mesh is not None:
            # This rank's experts as one FSDP group (one all-gather for all of them), averaged
            # over "dp"; `divide_expert_gradients` adds the factor ep after the step. (FSDP's
            # own divide factor would be exact in one go, but it reduces with PREMUL_SUM,
            # which gloo does not have.)
            fully_shard(list(ffn.local_experts()), mesh=expert_mesh)
        fully_shard(block, mesh=data_mesh)
    fully_shard(module, mesh=data_mesh)
    assert isinstance(module, FSDPModule)
    # Ranks route their tokens differently, so an expert may get a gradient on one rank and
    # none on another; FSDP must still reduce-scatter the same tensors everywhere.
    module.set_reduce_scatter_unused_params(True)
    return module


def apply_ddp(module: nn.Module, data_group: dist.ProcessGroup) -> nn.Module:
    """Wrap `module` in DDP over the data group; expert-parallel experts stay out of it."""
    from torch.nn.parallel import DistributedDataParallel

    ignored = [name for name, _ in expert_parameters(module)]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, ignored)
    return DistributedDataParallel(
        module,
        process_group=data_group,
        # A micro-batch may route no token to some expert (or, without EP, leave whole MoE
        # experts unused): DDP must not wait for their gradients.
        find_unused_parameters=True,
        # The router bias is a buffer moved by the balancing rule from all-reduced loads: it
        # is identical everywhere already; a broadcast every forward would only cost time.
        forward_sync_buffers=False,
    )


@torch.no_grad()
def divide_expert_gradients(module: nn.Module, ep_size: int) -> None:
    """Under FSDP: the factor ep the experts' averaging over "dp" leaves out (FSDP shards
    divide in place)."""
    for _, param in expert_parameters(module):
        if param.grad is not None:
            param.grad.div_(ep_size)


@torch.no_grad()
def reduce_gradients(
    module: nn.Module,
    data_group: dist.ProcessGroup | None,
    expert_group: dist.ProcessGroup | None,
    ep_size: int,
    *,
    dense: bool,
) -> None:
    """Average gradients by hand, after the step's last backward: the expert-parallel
    experts' always (over their replicas, and divided by ep as well: see the module
    docstring), the other parameters' too when `dense` (DDP's averaging, for pipeline stages:
    torch 2.13's DDP hooks under a pipeline schedule that splits backwards left the replicas'
    gradients different, measured; an explicit all-reduce after the schedule is exact)."""
    replicas = dist.get_world_size(expert_group) if expert_group is not None else 1
    experts = {id(p) for _, p in expert_parameters(module)}
    data_size = dist.get_world_size(data_group) if data_group is not None else 1
    for param in module.parameters():
        if param.device.type == "meta":
            continue
        if id(param) in experts:
            group, divide = expert_group, replicas * ep_size
        elif dense:
            group, divide = data_group, data_size
        else:
            continue
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        if group is not None and dist.get_world_size(group) > 1:
            dist.all_reduce(param.grad, group=group)
        param.grad /= divide
