"""`parallelize(model, config)`: data, expert and pipeline parallelism on one device mesh.

The mesh has three named dimensions, `init_device_mesh(device, (pp, dp, ep), ("pp", "dp",
"ep"))`:

- "pp": pipeline ranks; each runs one stage (1F1B) or two (DualPipeV);
- "ep": expert-parallel ranks; each keeps 1/ep of every MoE layer's routed experts;
- "dp": replicas of everything else.

The ranks of "dp" x "ep" at one pipeline position form the data group: each reads its own
slice of the global batch, dense gradients are averaged over all of them, and the router's
load counts are summed over all of them before the bias update, so the bias stays identical on
every rank. A rank's place in the global batch is its data index, dp_coord * ep + ep_coord
(`data_rank`).

The order things are applied in matters and is fixed here: expert parallelism swaps the MoE
layers, the pipeline cuts the model into this rank's stage modules, data parallelism wraps
each part (FSDP2 or DDP), and the pipeline schedule is built on the wrapped parts at the first
step (stages are static: built for the micro-batch shape of that step).

`ParallelModel.forward_backward` takes this rank's micro-batches of a training step and an
objective (how a micro-batch's outputs become the loss to back-propagate); the training loop's
adapter (`trainer.parallel.training.DistributedModel`) supplies the loop's own objective, scaled
so that the averaged gradients are the single-process step's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from trainer.config import ParallelConfig
from trainer.data import Batch
from trainer.model import MoE, Transformer, add_expert_load, update_router_bias
from trainer.model.model import Block, MTPModule
from trainer.parallel.data import (
    apply_ddp,
    apply_fsdp,
    divide_expert_gradients,
    reduce_gradients,
)
from trainer.parallel.expert import AllToAllMeter, apply_expert_parallel, expert_groups
from trainer.parallel.overlap import OverlapCounter, register_overlap
from trainer.parallel.pipeline import (
    Objective,
    PipelineLoss,
    StageModule,
    build_schedule,
    build_stage_modules,
)

MESH_DIMS = ("pp", "dp", "ep")


def build_mesh(config: ParallelConfig, device_type: str = "cpu") -> DeviceMesh:
    """The (pp, dp, ep) mesh over the current process group, whose size must match."""
    world = dist.get_world_size()
    if world != config.world_size:
        raise ValueError(
            f"{world} processes for pp={config.pp} x dp={config.dp_size} x ep={config.ep} = "
            f"{config.world_size}: launch {config.world_size} or change the layout"
        )
    return init_device_mesh(
        device_type, (config.pp, config.dp_size, config.ep), mesh_dim_names=MESH_DIMS
    )


def data_rank(mesh: DeviceMesh) -> int:
    """This rank's index in the data group: which slice of the global batch it reads."""
    return mesh.get_local_rank("dp") * mesh.size(MESH_DIMS.index("ep")) + mesh.get_local_rank("ep")


@dataclass
class StepOutput:
    """What one `forward_backward` leaves besides the gradients."""

    # Token-summed losses of this rank's micro-batches, as the objective returned them (under
    # a pipeline: the last stage's, on every rank of the pipeline).
    sums: dict[str, float]
    # Tokens each router of this rank's layers sent to each expert over the step, summed over
    # the data group (layer id -> (E,)): what the router-bias update takes.
    expert_load: dict[int, Tensor]
    # Expert all-to-all traffic this rank sent during the step (AllToAllMeter fields).
    all_to_all: dict[str, int] = field(default_factory=dict)
    # DualPipeV with overlap: forward/backward pairs this rank ran concurrently.
    overlapped_pairs: int = 0


class ParallelModel:
    """A Transformer spread over a mesh (see the module docstring). `forward_backward` runs
    the forward and backward of this rank's micro-batches of one step and leaves the averaged
    gradients in the parameters; the caller's optimizer steps on `parameters()`.

    mtp: run the MTP modules (False when the objective gives them no weight)."""

    def __init__(
        self,
        model: Transformer,
        config: ParallelConfig,
        mesh: DeviceMesh,
        device: torch.device | str = "cpu",
        *,
        mtp: bool = True,
    ) -> None:
        self.model, self.config, self.mesh = model, config, mesh
        self.device = torch.device(device)
        self.mtp = mtp and len(model.mtp) > 0
        self.pp_rank = mesh.get_local_rank("pp")
        self.data_group: dist.ProcessGroup | None = None
        data_mesh: DeviceMesh | None = None
        if config.data_size > 1:
            data_mesh = mesh["dp", "ep"]._flatten("data")
            self.data_group = data_mesh.get_group()
        self.meter: AllToAllMeter | None = None
        if config.ep > 1:
            self.meter = apply_expert_parallel(model, expert_groups(mesh, "ep"))

        self.stage_modules: dict[int, StageModule] = {}
        parts: list[nn.Module] = [model]
        if config.pp > 1:
            self.stage_modules = build_stage_modules(
                model, config.schedule, self.pp_rank, config.pp, mtp=self.mtp
            )
            parts = list(self.stage_modules.values())

        # Gradients averaged by hand after each step (see trainer.parallel.data): under DDP,
        # the expert-parallel experts always, and everything when a pipeline runs the stages.
        self._manual_reduce: Literal["none", "experts", "all"] = "none"
        if data_mesh is not None and config.data_parallel != "ddp":  # None: fsdp
            expert_mesh = mesh["dp"] if config.ep > 1 else None
            parts = [apply_fsdp(p, data_mesh, expert_mesh) for p in parts]
        elif data_mesh is not None and config.pp == 1:
            assert self.data_group is not None
            parts = [apply_ddp(p, self.data_group) for p in parts]
            self._manual_reduce = "experts" if config.ep > 1 else "none"
        elif data_mesh is not None:
            self._manual_reduce = "all"
        self._expert_group = mesh.get_group("dp") if config.ep > 1 and config.dp_size > 1 else None
        self.parts = parts
        self._schedule: Any = None
        self._schedule_shape: tuple[int, int] | None = None
        self._loss = PipelineLoss()
        self._overlap: OverlapCounter | None = None

    # -- the step ------------------------------------------------------------------------------

    def forward_backward(self, micro_batches: Sequence[Batch], objective: Objective) -> StepOutput:
        """Forward and backward of this rank's micro-batches of one step (every rank calls
        it; pipeline ranks without the first or last stage use only the document ids).

        Without a pipeline the micro-batches run one after the other (gradient accumulation);
        with one, this rank's rows of the step are split into `config.microbatches` pipeline
        micro-batches (default: as many as were given). `objective` scores each micro-batch;
        the gradients it produces are averaged over the data group. Gradients must be zero
        (or None) on entry."""
        if self.meter is not None:
            self.meter.reset()
        if self._overlap is not None:
            self._overlap.pairs = 0
        if self.config.pp > 1:
            sums, load = self._pipeline_step(micro_batches, objective)
        else:
            sums, load = self._accumulation_step(micro_batches, objective)
        if self.config.data_parallel != "ddp" and self.config.ep > 1 and self.data_group:
            for part in self.parts:
                divide_expert_gradients(part, self.config.ep)
        if self._manual_reduce != "none":
            for part in self.parts:
                reduce_gradients(
                    _unwrapped(part),
                    self.data_group,
                    self._expert_group,
                    self.config.ep,
                    dense=self._manual_reduce == "all",
                )
        load = self._sum_over_data_group(load)
        self._drop_unused_expert_gradients(load)
        snapshot = self.meter.snapshot() if self.meter is not None else {}
        pairs = self._overlap.pairs if self._overlap is not None else 0
        return StepOutput(sums, load, snapshot, pairs)

    def _accumulation_step(
        self, micro_batches: Sequence[Batch], objective: Objective
    ) -> tuple[dict[str, float], dict[int, Tensor]]:
        (root,) = self.parts
        n = len(micro_batches)
        sums: dict[str, float] = {}
        load: dict[int, Tensor] = {}
        for i, batch in enumerate(micro_batches):
            last = i == n - 1
            _set_gradient_sync(root, last)
            with _ddp_sync(root, last):
                out = root(batch.inputs, document_ids=batch.document_ids, mtp=self.mtp)
                loss, part = objective(
                    out.logits, out.mtp_logits, out.aux_loss, batch.targets, batch.document_ids, n
                )
                loss.backward()
            _add_sums(sums, part)
            add_expert_load(load, out.expert_load)
        return sums, load

    def _pipeline_step(
        self, micro_batches: Sequence[Batch], objective: Objective
    ) -> tuple[dict[str, float], dict[int, Tensor]]:
        tokens = torch.cat([b.inputs for b in micro_batches])
        targets = torch.cat([b.targets for b in micro_batches])
        documents = torch.cat([b.document_ids for b in micro_batches])
        n = self.config.microbatches or len(micro_batches)
        if tokens.shape[0] % n:
            raise ValueError(
                f"{tokens.shape[0]} rows of a step do not split into {n} equal pipeline "
                "micro-batches"
            )
        shape = (tokens.shape[0] // n, tokens.shape[1])
        if self._schedule is None:
            self._schedule = build_schedule(
                {
                    s: cast(StageModule, p)
                    for s, p in zip(self.stage_modules, self.parts, strict=True)
                },
                self.model,
                schedule=self.config.schedule,
                pp_size=self.config.pp,
                pp_group=self.mesh.get_group("pp"),
                n_microbatches=n,
                microbatch_shape=shape,
                device=self.device,
                loss=self._loss,
                run_mtp=self.mtp,
            )
            self._schedule_shape = shape
            if self.config.overlap:
                self._overlap = register_overlap(self._schedule)
        elif shape != self._schedule_shape:
            raise ValueError(
                f"pipeline stages were built for micro-batches of {self._schedule_shape} "
                f"(batch, seq), got {shape}"
            )
        n_stages = self.config.stages
        has_first = 0 in self.stage_modules
        has_last = n_stages - 1 in self.stage_modules
        self._loss.start(objective, n)
        inputs = (tokens,) if has_first else ()
        extra: dict[str, Any] = {"document_ids": documents}
        if has_last:
            extra["target"] = torch.stack([targets, documents], dim=-1)  # (B, T, 2)
        self._schedule.step(*inputs, **extra)
        load: dict[int, Tensor] = {}
        for stage in self.stage_modules.values():
            add_expert_load(load, stage.take_expert_load())
        # Only the rank with the last stage scored the micro-batches: share its sums.
        gathered: list[dict[str, float] | None] = [None] * self.config.pp
        dist.all_gather_object(
            gathered, self._loss.sums if has_last else {}, group=self.mesh.get_group("pp")
        )
        sums: dict[str, float] = {}
        for part in gathered:
            _add_sums(sums, part or {})
        return sums, load

    def _sum_over_data_group(self, load: dict[int, Tensor]) -> dict[int, Tensor]:
        if self.data_group is None:
            return load
        summed = {}
        for layer in sorted(load):  # the same layers, in the same order, on the whole group
            counts = load[layer].clone()
            dist.all_reduce(counts, group=self.data_group)
            summed[layer] = counts
        return summed

    @torch.no_grad()
    def _drop_unused_expert_gradients(self, load: dict[int, Tensor]) -> None:
        """An expert no token of the step reached has no gradient in one process (None, so
        AdamW leaves it and its moments alone); here it may hold zeros (FSDP reduces every
        shard, an expert-parallel rank runs its experts on empty batches). Put it back to
        None, from the step's load summed over the data group: the same on every rank."""
        moes = _moe_layers(self.model)
        for layer, counts in load.items():
            for expert in (counts == 0).nonzero().flatten().tolist():
                for param in moes[layer].experts[expert].parameters():
                    param.grad = None

    # -- after the step ------------------------------------------------------------------------

    def update_router_bias(self, load: dict[int, Tensor], gamma: float) -> dict[int, float]:
        """The loss-free balancing update for this rank's routers, from the step's load
        summed over the data group (`StepOutput.expert_load`): every rank applies the same
        update. Returns MaxVio per router."""
        return update_router_bias(self.model, load, gamma)

    def parameters(self) -> Iterator[nn.Parameter]:
        """The parameters this rank updates (FSDP shards, or whole tensors)."""
        seen: set[int] = set()
        for part in self.parts:
            for p in part.parameters():
                if id(p) not in seen and p.device.type != "meta":
                    seen.add(id(p))
                    yield p

    def full_gradients(self) -> dict[str, Tensor]:
        """Model name -> whole gradient of every parameter this rank holds (FSDP shards are
        gathered, so every rank of a data group must call it). For tests and checks."""
        grads: dict[str, Tensor] = {}
        for name, param in self.model.named_parameters():
            if param.device.type == "meta":
                continue
            grad = param.grad
            if grad is None:
                continue
            full = grad.full_tensor() if hasattr(grad, "full_tensor") else grad
            grads[name] = full.detach().clone()
        return grads

    def full_state(self) -> dict[str, Tensor]:
        """Model name -> whole tensor of every parameter and buffer this rank holds (FSDP
        shards are gathered: every rank must call it)."""
        state: dict[str, Tensor] = {}
        for name, tensor in [*self.model.named_parameters(), *self.model.named_buffers()]:
            if tensor.device.type == "meta":
                continue
            full = tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor
            state[name] = full.detach().clone()
        return state


def parallelize(
    model: Transformer,
    config: ParallelConfig,
    mesh: DeviceMesh | None = None,
    device: torch.device | str = "cpu",
    *,
    mtp: bool = True,
) -> ParallelModel:
    """Spread a built model over the current process group (see the module docstring)."""
    if mesh is None:
        mesh = build_mesh(config, torch.device(device).type)
    return ParallelModel(model, config, mesh, device, mtp=mtp)


def _add_sums(total: dict[str, float], part: dict[str, float]) -> None:
    for key, value in part.items():
        total[key] = total.get(key, 0.0) + value


def _moe_layers(model: Transformer) -> dict[int, MoE]:
    """Every MoE of the model by layer id (blocks, then MTP modules): the keys of the expert
    load."""
    blocks = [*model.layers, *(cast(MTPModule, m).block for m in model.mtp)]
    return {
        layer: block.ffn
        for layer, block in enumerate(blocks)
        if isinstance(block, Block) and isinstance(block.ffn, MoE)
    }


def _unwrapped(module: nn.Module) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    return module.module if isinstance(module, DistributedDataParallel) else module


def _set_gradient_sync(module: nn.Module, sync: bool) -> None:
    from torch.distributed.fsdp import FSDPModule

    if isinstance(module, FSDPModule):
        module.set_requires_gradient_sync(sync)


def _ddp_sync(module: nn.Module, sync: bool) -> contextlib.AbstractContextManager[Any]:
    """DDP's `no_sync` for every micro-batch but the last; nothing for other modules."""
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(module, DistributedDataParallel) and not sync:
        return module.no_sync()
    return contextlib.nullcontext()
