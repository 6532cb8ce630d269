"""`parallelize(model, dims)`: data, expert and pipeline parallelism on one device mesh.

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
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from trainer.model import Transformer, add_expert_load, update_router_bias
from trainer.parallel.data import (
    DataParallelMode,
    apply_ddp,
    apply_fsdp,
    divide_expert_gradients,
    reduce_gradients,
)
from trainer.parallel.expert import AllToAllMeter, apply_expert_parallel, expert_groups
from trainer.parallel.overlap import OverlapCounter, register_overlap
from trainer.parallel.pipeline import (
    SCHEDULE_NAMES,
    ScheduleName,
    StageModule,
    build_schedule,
    build_stage_modules,
    training_loss,
)

MESH_DIMS = ("pp", "dp", "ep")


@dataclass(frozen=True)
class ParallelDims:
    """How a training run is spread over ranks (world size = pp x dp x ep)."""

    dp: int = 1  # data-parallel replicas
    ep: int = 1  # expert-parallel ranks (also data parallel for the dense parameters)
    pp: int = 1  # pipeline ranks
    schedule: ScheduleName = "1f1b"  # pipeline schedule when pp > 1
    microbatches: int = 1  # per step and data rank: pipeline micro-batches, or accumulation
    data_parallel: DataParallelMode = "fsdp"
    # DualPipeV only: run each overlapped pair (one micro-batch's forward, another's backward)
    # concurrently instead of one after the other; see trainer/parallel/overlap.py.
    overlap: bool = False

    def __post_init__(self) -> None:
        for name in ("dp", "ep", "pp", "microbatches"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ParallelDims.{name}={value!r}: must be a positive integer")
        if self.schedule not in SCHEDULE_NAMES:
            raise ValueError(
                f"ParallelDims.schedule={self.schedule!r}: one of {', '.join(SCHEDULE_NAMES)}"
            )
        if self.data_parallel not in ("fsdp", "ddp"):
            raise ValueError(f"ParallelDims.data_parallel={self.data_parallel!r}: fsdp or ddp")
        if self.overlap and (self.schedule != "dualpipev" or self.pp == 1):
            raise ValueError("ParallelDims.overlap needs schedule='dualpipev' and pp > 1")
        if self.overlap and self.data_parallel == "fsdp" and self.data_size > 1:
            raise ValueError(
                "ParallelDims.overlap with FSDP: its gathers and reductions from the overlapped "
                "forward and backward would share one process group; use data_parallel='ddp'"
            )

    @property
    def world_size(self) -> int:
        return self.pp * self.dp * self.ep

    @property
    def data_size(self) -> int:
        return self.dp * self.ep


def build_mesh(dims: ParallelDims, device_type: str = "cpu") -> DeviceMesh:
    """The (pp, dp, ep) mesh over the current process group, whose size must match."""
    world = dist.get_world_size()
    if world != dims.world_size:
        raise ValueError(
            f"{world} processes for pp={dims.pp} x dp={dims.dp} x ep={dims.ep} = "
            f"{dims.world_size}: launch {dims.world_size} or change the dims"
        )
    return init_device_mesh(device_type, (dims.pp, dims.dp, dims.ep), mesh_dim_names=MESH_DIMS)


def data_rank(mesh: DeviceMesh) -> int:
    """This rank's index in the data group: which slice of the global batch it reads."""
    return mesh.get_local_rank("dp") * mesh.size(MESH_DIMS.index("ep")) + mesh.get_local_rank("ep")


@dataclass
class StepResult:
    loss: float  # mean loss of the whole global batch: the same number on every rank
    # Tokens each router of this rank's layers sent to each expert, this rank's tokens only
    # (layer id -> (E,)); `ParallelModel.update_router_bias` sums them over the data group.
    expert_load: dict[int, Tensor]
    # Expert all-to-all traffic this rank sent during the step (AllToAllMeter fields).
    all_to_all: dict[str, int] = field(default_factory=dict)
    # DualPipeV with overlap: forward/backward pairs this rank ran concurrently.
    overlapped_pairs: int = 0


class ParallelModel:
    """A Transformer spread over a mesh (see the module docstring). `step` runs one
    forward/backward over this rank's slice of the global batch and leaves the gradients in
    the parameters; the caller's optimizer steps on `parameters()`."""

    def __init__(
        self,
        model: Transformer,
        dims: ParallelDims,
        mesh: DeviceMesh,
        device: torch.device | str = "cpu",
    ) -> None:
        self.model, self.dims, self.mesh = model, dims, mesh
        self.device = torch.device(device)
        self.pp_rank = mesh.get_local_rank("pp")
        self.data_group: dist.ProcessGroup | None = None
        data_mesh: DeviceMesh | None = None
        if dims.data_size > 1:
            data_mesh = mesh["dp", "ep"]._flatten("data")
            self.data_group = data_mesh.get_group()
        self.meter: AllToAllMeter | None = None
        if dims.ep > 1:
            self.meter = apply_expert_parallel(model, expert_groups(mesh, "ep"))

        self.stage_modules: dict[int, StageModule] = {}
        parts: list[nn.Module] = [model]
        if dims.pp > 1:
            self.stage_modules = build_stage_modules(model, dims.schedule, self.pp_rank, dims.pp)
            parts = list(self.stage_modules.values())

        # Gradients averaged by hand after each step (see trainer.parallel.data): under DDP,
        # the expert-parallel experts always, and everything when a pipeline runs the stages.
        self._manual_reduce: Literal["none", "experts", "all"] = "none"
        if data_mesh is not None and dims.data_parallel == "fsdp":
            expert_mesh = mesh["dp"] if dims.ep > 1 else None
            parts = [apply_fsdp(p, data_mesh, expert_mesh) for p in parts]
        elif data_mesh is not None and dims.pp == 1:
            assert self.data_group is not None
            parts = [apply_ddp(p, self.data_group) for p in parts]
            self._manual_reduce = "experts" if dims.ep > 1 else "none"
        elif data_mesh is not None:
            self._manual_reduce = "all"
        self._expert_group = mesh.get_group("dp") if dims.ep > 1 and dims.dp > 1 else None
        self.parts = parts
        self._schedule: Any = None
        self._schedule_shape: tuple[int, int] | None = None
        self._overlap: OverlapCounter | None = None

    # -- the step ------------------------------------------------------------------------------

    def step(self, tokens: Tensor, targets: Tensor) -> StepResult:
        """Forward and backward of this rank's slice of the global batch, (B, T) tokens and
        their next-token targets; B must divide into `dims.microbatches` equal micro-batches.
        Every rank calls it (pipeline ranks without the first or last stage ignore the data).
        Gradients must be zero (or None) on entry: one call is one optimizer step's worth, and
        its averaging over ranks acts on whatever the parameters hold."""
        if tokens.shape[0] % self.dims.microbatches:
            raise ValueError(
                f"a batch of {tokens.shape[0]} sequences does not split into "
                f"{self.dims.microbatches} equal micro-batches"
            )
        if self.meter is not None:
            self.meter.reset()
        if self._overlap is not None:
            self._overlap.pairs = 0
        if self.dims.pp > 1:
            local_loss, load = self._pipeline_step(tokens, targets)
        else:
            local_loss, load = self._accumulation_step(tokens, targets)
        if self.dims.data_parallel == "fsdp" and self.dims.ep > 1 and self.data_group is not None:
            for part in self.parts:
                divide_expert_gradients(part, self.dims.ep)
        if self._manual_reduce != "none":
            for part in self.parts:
                reduce_gradients(
                    _unwrapped(part),
                    self.data_group,
                    self._expert_group,
                    self.dims.ep,
                    dense=self._manual_reduce == "all",
                )
        loss = torch.tensor([local_loss], dtype=torch.float64)
        if self.dims.pp > 1:  # only the rank with the last stage has it; the others hold 0
            dist.all_reduce(loss, group=self.mesh.get_group("pp"))
        if self.data_group is not None:
            dist.all_reduce(loss, group=self.data_group)
            loss /= self.dims.data_size
        snapshot = self.meter.snapshot() if self.meter is not None else {}
        pairs = self._overlap.pairs if self._overlap is not None else 0
        return StepResult(float(loss.item()), load, snapshot, pairs)

    def _accumulation_step(
        self, tokens: Tensor, targets: Tensor
    ) -> tuple[float, dict[int, Tensor]]:
        (root,) = self.parts
        n = self.dims.microbatches
        total = 0.0
        load: dict[int, Tensor] = {}
        for i, (tk, tg) in enumerate(zip(tokens.chunk(n), targets.chunk(n), strict=True)):
            last = i == n - 1
            _set_gradient_sync(root, last)
            with _ddp_sync(root, last):
                out = root(tk, mtp=len(self.model.mtp) > 0)
                assert out.aux_loss is not None
                loss = training_loss(
                    out.logits, out.mtp_logits, out.aux_loss, tg, self.model.args.mtp_lambda
                )
                (loss / n).backward()
            total += float(loss.detach()) / n
            add_expert_load(load, out.expert_load)
        return total, load

    def _pipeline_step(self, tokens: Tensor, targets: Tensor) -> tuple[float, dict[int, Tensor]]:
        n = self.dims.microbatches
        shape = (tokens.shape[0] // n, tokens.shape[1])
        if self._schedule is None:
            self._schedule = build_schedule(
                {
                    s: cast(StageModule, p)
                    for s, p in zip(self.stage_modules, self.parts, strict=True)
                },
                self.model,
                schedule=self.dims.schedule,
                pp_size=self.dims.pp,
                pp_group=self.mesh.get_group("pp"),
                n_microbatches=n,
                microbatch_shape=shape,
                device=self.device,
            )
            self._schedule_shape = shape
            if self.dims.overlap:
                self._overlap = register_overlap(self._schedule)
        elif shape != self._schedule_shape:
            raise ValueError(
                f"pipeline stages were built for micro-batches of {self._schedule_shape} "
                f"(batch, seq), got {shape}"
            )
        n_stages = self.dims.pp * len(self.stage_modules)
        has_first = 0 in self.stage_modules
        has_last = n_stages - 1 in self.stage_modules
        losses: list[Tensor] = []
        inputs = (tokens,) if has_first else ()
        extra: dict[str, Any] = {"target": targets, "losses": losses} if has_last else {}
        self._schedule.step(*inputs, **extra)
        local = sum(float(x.detach()) for x in losses) / n if has_last else 0.0
        load: dict[int, Tensor] = {}
        for stage in self.stage_modules.values():
            add_expert_load(load, stage.take_expert_load())
        return local, load

    # -- after the step ------------------------------------------------------------------------

    def update_router_bias(self, load: dict[int, Tensor], gamma: float) -> dict[int, float]:
        """The loss-free balancing update for this rank's routers, from the step's load summed
        over the data group: every rank applies the same update. Returns MaxVio per router."""
        group = self.data_group

        def over_data_group(counts: Tensor) -> Tensor:
            if group is not None:
                dist.all_reduce(counts, group=group)
            return counts

        return update_router_bias(self.model, load, gamma, reduce=over_data_group)

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
        """Model name -> whole tensor of every parameter and buffer this rank holds."""
        state: dict[str, Tensor] = {}
        for name, tensor in [*self.model.named_parameters(), *self.model.named_buffers()]:
            if tensor.device.type == "meta":
                continue
            full = tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor
            state[name] = full.detach().clone()
        return state


def parallelize(
    model: Transformer,
    dims: ParallelDims,
    mesh: DeviceMesh | None = None,
    device: torch.device | str = "cpu",
) -> ParallelModel:
    """Spread a built model over the current process group (see the module docstring)."""
    if mesh is None:
        mesh = build_mesh(dims, torch.device(device).type)
    return ParallelModel(model, dims, mesh, device)


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
