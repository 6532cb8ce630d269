"""The training loop, distributed: the same `run_training` and `train_step` on every rank.

    r1f train pretrain --config FILE --nproc 4      # torchrun, 4 ranks, the config's layout

A config's `parallel` section (`trainer.config.ParallelConfig`: dp, ep, pp, schedule,
microbatches, data_parallel) says how the run is spread; `run_training` asks
`trainer.placement.place` where this process stands, which gives a `Distributed` placement
when the layout has more than one process. Its jobs:

- `stream(dataset, rows, state)`: this data rank's share of every micro-batch;
- `distribute(model)` wraps the loop's model adapter in a `DistributedModel`, the same
  interface (`trainer.adapters.TrainableModel`) computed over ranks: our DeepSeek-V3 goes
  through `trainer.parallel.parallelize` (data, expert and pipeline parallelism on one mesh);
  a transformers model (distillation's student) trains data parallel under DDP.
- `whole_model(model)` gathers the model as one process holds it onto rank 0, which saves it
  (the Hugging Face layout, full weights) and evaluates it.
- `optimizer_state(optimizer)` reads and writes the optimizer's state laid out as one process
  holds it: the parameters numbered as the single-process optimizer numbers them, each
  state tensor whole. So a checkpoint written by any layout resumes under any other, one
  process included, and the checkpoint format is the single-process one.

What makes a distributed step the single-process step (tested to fp32 rounding, through the
loop's own `train_step`, for DP, EP, PP-1F1B, PP-DualPipeV and EP+PP):

- the global batch is the same rows: `loop.rows_per_micro_batch` is global and every data rank
  reads its share of each micro-batch (`BatchStream(rank=, world_size=)`);
- the step's target counts are summed over the data group before any forward, and every loss
  is a token sum divided by them (`DeepSeekV3Model.objective`, the loop's own function, also
  on the pipeline's last stage), times the data-group size because the data group averages
  gradients. The sequence-wise balance loss, a mean over rows, is divided by the rows' share
  instead. So micro-batches and ranks that score different numbers of tokens (packed SFT rows)
  weigh exactly as in one process;
- the gradient norm is taken over every rank's gradients once (shards, experts and pipeline
  stages each counted once, replicas not again) and every rank clips by the same factor;
- the router load is summed over the data group, so every rank moves the router bias the same
  way; an expert no token reached has no gradient, as in one process;
- logged losses, counts and MaxVio are the whole step's, on every rank.

Rank 0 alone writes (checkpoints, metrics, progress, the published model, the summary); the
other ranks wait at a barrier while it evaluates or writes.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.tensor import DTensor, distribute_tensor

from trainer.adapters import DeepSeekV3Model, HFCausalLM, Losses, TrainableModel
from trainer.config import ModelConfig, ParallelConfig, TrainConfig
from trainer.data import Batch, BatchStream, DataState, PackedDataset
from trainer.model import Transformer, update_router_bias
from trainer.optim import parameter_groups
from trainer.parallel.data import expert_parameters
from trainer.parallel.parallelize import (
    ParallelModel,
    StepOutput,
    build_mesh,
    data_rank,
)
from trainer.train_state import StatefulOptimizer

# ----------------------------------------------------------------------------------------------
# Layouts that cannot work, found before any process starts


@dataclass(frozen=True)
class ModelFacts:
    """What a layout check needs to know of the model a config builds."""

    kind: str  # "deepseek_v3" or "hf"
    n_layers: int
    n_routed_experts: int
    described: str  # for messages: "preset tiny", "checkpoint DIR", ...


def model_facts(cfg: ModelConfig) -> ModelFacts:
    """The model's layer and expert counts, read from its preset, args file or checkpoint
    config without building it."""
    if cfg.kind == "hf":
        source = cfg.checkpoint or cfg.hf_config or ""
        path = Path(source) / "config.json" if cfg.checkpoint else Path(source)
        settings = json.loads(path.read_text()) if path.is_file() else {}
        return ModelFacts("hf", int(settings.get("num_hidden_layers", 0)), 0, f"{path}")
    if cfg.checkpoint is not None:
        from trainer.checkpoint import args_from_hf_config, load_hf_config

        args = args_from_hf_config(load_hf_config(cfg.checkpoint))
        described = f"checkpoint {cfg.checkpoint}"
    else:
        from trainer.init import model_args

        args = model_args(cfg.preset, cfg.args_file)
        described = f"preset {cfg.preset}" + (f" with {cfg.args_file}" if cfg.args_file else "")
    return ModelFacts("deepseek_v3", args.n_layers, args.n_routed_experts, described)


def layout_problem(cfg: TrainConfig, facts: ModelFacts) -> str | None:
    """Why `cfg.parallel` (dp filled in: `ParallelConfig.for_processes`) cannot run this model
    and loop (one line naming the key), or None."""
    p, loop = cfg.parallel, cfg.loop
    if facts.kind == "hf" and (p.ep > 1 or p.pp > 1):
        return (
            "parallel.ep / parallel.pp: expert and pipeline parallelism split our DeepSeek-V3; "
            "a transformers model (model.kind: hf) trains data parallel only (parallel.dp)"
        )
    if facts.kind == "hf" and p.dp_size > 1 and p.data_parallel == "fsdp":
        return (
            "parallel.data_parallel: fsdp shards our DeepSeek-V3; a transformers model "
            "(model.kind: hf) trains under ddp: set data_parallel: ddp or leave it out"
        )
    if p.ep > 1 and (facts.n_routed_experts == 0 or facts.n_routed_experts % p.ep):
        return (
            f"parallel.ep: {p.ep} does not divide the {facts.n_routed_experts} routed experts "
            f"of the model ({facts.described}); choose a divisor of {facts.n_routed_experts}"
        )
    if p.pp > 1 and p.stages > facts.n_layers:
        per = " (2 per rank under dualpipev)" if p.schedule == "dualpipev" else ""
        return (
            f"parallel.pp: {p.pp} pipeline ranks make {p.stages} stages{per}, but the model "
            f"({facts.described}) has {facts.n_layers} layers; every stage needs one"
        )
    if loop.rows_per_micro_batch % p.data_size:
        return (
            f"loop.rows_per_micro_batch: {loop.rows_per_micro_batch} rows do not split over "
            f"dp {p.dp_size} x ep {p.ep} = {p.data_size} data ranks; make it a multiple of "
            f"{p.data_size}"
        )
    if p.pp > 1:
        rows = loop.rows_per_micro_batch // p.data_size * loop.grad_accum
        micro = p.microbatches or loop.grad_accum
        key = "parallel.microbatches" if p.microbatches else "loop.grad_accum"
        if rows % micro:
            return (
                f"{key}: a data rank's {rows} rows of a step do not split into {micro} equal "
                "pipeline micro-batches"
            )
        if p.schedule == "dualpipev" and micro < p.stages:
            return (
                f"{key}: DualPipeV over pp {p.pp} ({p.stages} stages) needs at least "
                f"{p.stages} pipeline micro-batches per step, got {micro}"
            )
    return None


# ----------------------------------------------------------------------------------------------
# The placement


class Distributed:
    """One rank of a distributed run (`trainer.placement.Placement`). The process group must be
    joined already (`trainer.parallel.launch.init_distributed`, which torchrun's workers and
    `spawn` call)."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.rank = dist.get_rank()
        self.mesh = build_mesh(cfg.parallel)
        self.data_rank = data_rank(self.mesh)
        self.data_size = cfg.parallel.data_size
        self.model: DistributedModel | None = None

    def barrier(self) -> None:
        dist.barrier()

    def stream(
        self, dataset: PackedDataset, rows_per_micro_batch: int, state: DataState | None
    ) -> BatchStream:
        """Every data rank reads the same global stream and keeps its share of each
        micro-batch (pipeline ranks of one data rank read the same rows), so one saved
        position resumes every layout."""
        if rows_per_micro_batch % self.data_size:  # layout_problem says it first, with the key
            raise ValueError(f"{rows_per_micro_batch} rows over {self.data_size} data ranks")
        return BatchStream(
            dataset,
            rows_per_micro_batch // self.data_size,
            state=state,
            rank=self.data_rank,
            world_size=self.data_size,
        )

    def distribute(self, model: TrainableModel) -> TrainableModel:
        if isinstance(model, DeepSeekV3Model):
            args = model.base.args
            facts = ModelFacts("deepseek_v3", args.n_layers, args.n_routed_experts, "the model")
        else:
            facts = ModelFacts("hf", 0, 0, "the model")
        problem = layout_problem(self.cfg, facts)
        if problem is not None:
            from trainer.train import TrainError

            raise TrainError(problem)
        self.model = DistributedModel(model, self.cfg.parallel, self.mesh)
        return self.model

    def whole_model(self, model: TrainableModel) -> TrainableModel | None:
        return self._distributed(model).whole()

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> StatefulOptimizer:
        assert self.model is not None, "distribute() the model first"
        return SingleProcessLayout(self.model, optimizer)

    def _distributed(self, model: TrainableModel) -> DistributedModel:
        if model is not self.model or self.model is None:
            raise TypeError("whole_model takes the model this placement distributed")
        return self.model


# ----------------------------------------------------------------------------------------------
# The model over ranks


class DistributedModel:
    """A `TrainableModel` whose step runs over the ranks of `mesh` (see the module docstring).

    `module` (what the optimizer trains and `train()`/`eval()` switch) holds this rank's
    parts: FSDP shards, expert-parallel experts, pipeline stages. `base` is the inner
    adapter's model, of which this rank holds its pieces only; `whole()` gathers it."""

    def __init__(self, inner: TrainableModel, config: ParallelConfig, mesh: Any) -> None:
        self.inner = inner
        self.config = config
        self.mesh = mesh
        # The optimizer layout of one process, taken before anything is split or wrapped.
        self.canonical_groups = _group_names(inner.module)
        self.parallel: ParallelModel | None = None
        self._experts: set[str] = set()
        self.last_step: StepOutput | None = None
        if isinstance(inner, DeepSeekV3Model):
            self.parallel = ParallelModel(inner.base, config, mesh, mtp=inner.uses_mtp)
            parts = self.parallel.parts
            self.data_group = self.parallel.data_group
            self._experts = {name for name, _ in expert_parameters(inner.base)}
        else:
            from torch.nn.parallel import DistributedDataParallel

            self.data_group = mesh["dp", "ep"]._flatten("data").get_group()
            wrapped = DistributedDataParallel(
                inner.module, process_group=self.data_group, forward_sync_buffers=False
            )
            inner.module = wrapped  # HFCausalLM.losses runs its forward through DDP
            parts = [wrapped]
        self.module: nn.Module = nn.ModuleList(parts)
        dp, ep = mesh.get_local_rank("dp"), mesh.get_local_rank("ep")
        # Each tensor is counted (in the norm) and saved by one rank only: a dense tensor by
        # the first data rank, an expert-parallel expert by the first of its dp replicas.
        self._dense_owner = dp == 0 and ep == 0
        self._expert_owner = dp == 0

    @property
    def base(self) -> nn.Module:
        return self.inner.base

    def owns(self, name: str) -> bool:
        """Whether this rank is the one that counts and saves the replicated tensor `name`."""
        return self._expert_owner if name in self._experts else self._dense_owner

    def local_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """(model name, parameter) of every parameter this rank holds, in model order."""
        return [(n, p) for n, p in self.base.named_parameters() if p.device.type != "meta"]

    # -- the step ------------------------------------------------------------------------------

    def count_targets(self, batch: Batch) -> dict[str, int]:
        return self.inner.count_targets(batch)

    def sum_over_ranks(self, values: Mapping[str, float]) -> dict[str, float]:
        """Sums over the data group (every rank passes the same keys)."""
        if self.data_group is None:  # one data rank (a pipeline alone)
            return dict(values)
        keys = sorted(values)
        summed = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
        dist.all_reduce(summed, group=self.data_group)
        return dict(zip(keys, summed.tolist(), strict=True))

    def forward_backward(
        self, micro_batches: Sequence[Batch], counts: Mapping[str, int]
    ) -> list[Losses]:
        """This rank's share of the step's forward and backward; counts are the step's over
        the data group. Each rank back-propagates its tokens' share of the global objective
        times the data-group size, which the data group's averaging cancels."""
        ranks = self.config.data_size
        step_micro = len(micro_batches)
        if self.parallel is None:
            return self._data_parallel_step(micro_batches, counts)
        inner = cast(DeepSeekV3Model, self.inner)

        def objective(
            logits: Tensor,
            mtp_logits: Sequence[Tensor],
            aux: Tensor | None,
            targets: Tensor,
            document_ids: Tensor,
            own_micro: int,
        ) -> tuple[Tensor, dict[str, float]]:
            # The balance loss is a mean over rows: each of the ranks' own_micro micro-batches
            # holds 1 / (own_micro x ranks) of the step's rows.
            total, sums = inner.objective(
                logits, mtp_logits, aux, targets, document_ids, counts, own_micro * ranks
            )
            if "aux" in sums:  # logged as the step's mean once summed over ranks (train_step)
                sums["aux"] *= step_micro / (own_micro * ranks)
            return total * ranks, sums

        out = self.parallel.forward_backward(micro_batches, objective)
        self.last_step = out
        return [Losses(torch.zeros(()), out.sums, out.expert_load)]

    def _data_parallel_step(
        self, micro_batches: Sequence[Batch], counts: Mapping[str, int]
    ) -> list[Losses]:
        from torch.nn.parallel import DistributedDataParallel

        ranks = self.config.data_size
        wrapped = cast(DistributedDataParallel, self.inner.module)
        parts = []
        for i, batch in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            with contextlib.nullcontext() if last else wrapped.no_sync():
                part = cast(HFCausalLM, self.inner).losses(
                    batch, counts, len(micro_batches) * ranks
                )
                (part.total * ranks).backward()
            part.total = part.total.detach()
            parts.append(part)
        return parts

    @torch.no_grad()
    def clip_grad_norm(self, max_norm: float) -> float:
        """The global gradient norm over every rank's gradients (each counted once), and the
        same clipping factor on every rank, as `torch.nn.utils.clip_grad_norm_` computes it."""
        squares = torch.zeros((), dtype=torch.float64)
        local: list[Tensor] = []
        for name, param in self.local_parameters():
            grad = param.grad
            if grad is None:
                continue
            piece = grad.to_local() if isinstance(grad, DTensor) else grad
            local.append(piece)
            # A shard is this rank's alone; a whole tensor may be replicated.
            if isinstance(grad, DTensor) or self.owns(name):
                squares += piece.double().square().sum()
        dist.all_reduce(squares)
        total = squares.sqrt().float()
        if max_norm > 0:
            factor = torch.clamp(max_norm / (total + 1e-6), max=1.0)
            for piece in local:
                piece.mul_(factor)
        return float(total)

    def after_step(self, load: Mapping[int, Tensor]) -> dict[str, float]:
        """The router-bias update from the step's load (already summed over the data group),
        and every router's MaxVio, those of the other pipeline ranks' stages included."""
        if self.parallel is None or not load:
            return {}
        inner = cast(DeepSeekV3Model, self.inner)
        mine = update_router_bias(self.parallel.model, load, inner.gamma)
        everyone: list[dict[int, float] | None] = [None] * self.config.pp
        dist.all_gather_object(everyone, mine, group=self.mesh.get_group("pp"))
        merged = {layer: v for part in everyone for layer, v in (part or {}).items()}
        return {f"maxvio/layer{layer}": merged[layer] for layer in sorted(merged)}

    # -- the whole model -------------------------------------------------------------------------

    def whole(self) -> TrainableModel | None:
        """The model as one process holds it, on rank 0 (None elsewhere): the pieces of every
        rank gathered. Every rank must call it."""
        if self.parallel is None:  # DDP: every rank holds the whole model already
            return self.inner if dist.get_rank() == 0 else None
        inner = cast(DeepSeekV3Model, self.inner)
        state = {
            name: tensor.cpu()
            for name, tensor in self.parallel.full_state().items()
            if self.owns(name)
        }
        pieces = _gather_to_rank0(state)
        if pieces is None:
            return None
        merged = {name: t for piece in pieces for name, t in piece.items()}
        with torch.device("meta"):
            model = Transformer(inner.base.args)
        model.load_state_dict(merged, strict=True, assign=True)
        model.train(self.module.training)
        return DeepSeekV3Model(model, mtp_lambda=inner.mtp_lambda, bias_update_speed=inner.gamma)

    def save(
        self,
        out_dir: Path,
        *,
        tokenizer_dir: str | os.PathLike[str] | None,
        extra_config: Mapping[str, Any],
    ) -> None:
        """Gather and save on rank 0 (every rank must call it)."""
        whole = self.whole()
        if whole is not None:
            whole.save(out_dir, tokenizer_dir=tokenizer_dir, extra_config=extra_config)


# ----------------------------------------------------------------------------------------------
# Optimizer state in the single-process layout


class SingleProcessLayout:
    """The optimizer's state as the single-process optimizer holds it: parameters numbered in
    its order (matrices, then vectors, each in model order), every state tensor whole.

    `state_dict()` gathers (every rank calls it; the result is complete on rank 0 only);
    `load_state_dict()` takes such a state on every rank and keeps this rank's pieces."""

    def __init__(self, model: DistributedModel, optimizer: torch.optim.Optimizer) -> None:
        self.model = model
        self.optimizer = optimizer
        self.names = {id(p): n for n, p in model.local_parameters()}
        self.order = [name for group in model.canonical_groups for name in group]
        self.index = {name: i for i, name in enumerate(self.order)}

    def state_dict(self) -> dict[str, Any]:
        mine: dict[str, dict[str, Any]] = {}
        for name, param in self.model.local_parameters():
            entry = self.optimizer.state.get(param)
            if not entry:
                continue
            whole = {key: _whole(value) for key, value in entry.items()}
            if self.model.owns(name):
                mine[name] = whole
        pieces = _gather_to_rank0(mine)
        if pieces is None:
            return {}
        merged = {name: entry for piece in pieces for name, entry in piece.items()}
        groups = []
        first = 0
        for group, names in zip(
            self.optimizer.param_groups, self.model.canonical_groups, strict=True
        ):
            settings = {k: v for k, v in group.items() if k != "params"}
            groups.append({**settings, "params": list(range(first, first + len(names)))})
            first += len(names)
        state = {self.index[name]: entry for name, entry in merged.items()}
        return {"state": dict(sorted(state.items())), "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict["state"]
        local_state: dict[int, dict[str, Any]] = {}
        groups = []
        k = 0
        for g, group in enumerate(self.optimizer.param_groups):
            ids = []
            for param in group["params"]:
                i = self.index[self.names[id(param)]]
                if i in saved:
                    local_state[k] = {
                        key: _in_layout_of(param, value) for key, value in saved[i].items()
                    }
                ids.append(k)
                k += 1
            settings = {
                key: value
                for key, value in state_dict["param_groups"][g].items()
                if key != "params"
            }
            groups.append({**settings, "params": ids})
        self.optimizer.load_state_dict({"state": local_state, "param_groups": groups})


def _group_names(module: nn.Module) -> list[list[str]]:
    """The parameter names of each optimizer group, as `build_optimizer` groups them."""
    names = {id(p): n for n, p in module.named_parameters()}
    groups = parameter_groups(module.named_parameters(), weight_decay=0.0)
    return [[names[id(p)] for p in cast(list[nn.Parameter], g["params"])] for g in groups]


def _whole(value: Any) -> Any:
    if isinstance(value, DTensor):
        value = value.full_tensor()
    if isinstance(value, Tensor):
        return value.detach().cpu().clone()
    return value


def _in_layout_of(param: Tensor, value: Any) -> Any:
    """A whole state tensor cut to this rank's shard when the parameter is sharded."""
    if isinstance(param, DTensor) and isinstance(value, Tensor) and value.shape == param.shape:
        return distribute_tensor(value, param.device_mesh, param.placements, src_data_rank=None)
    return value


def _gather_to_rank0(piece: Any) -> list[Any] | None:
    """Every rank's `piece` on rank 0, in rank order; None on the others."""
    rank = dist.get_rank()
    out: list[Any] | None = [None] * dist.get_world_size() if rank == 0 else None
    dist.gather_object(piece, out, dst=0)
    return out
