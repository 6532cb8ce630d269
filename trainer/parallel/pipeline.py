"""Pipeline parallelism on `torch.distributed.pipelining`: the model cut into stages, run by
`Schedule1F1B` (one stage per rank, the baseline) or `ScheduleDualPipeV` (two stages per rank
folded into a V, DeepSeek-V3's production schedule in its half-the-devices form).

What crosses a stage boundary is a tuple of three tensors:

- `h` (B, T, dim): the residual stream;
- `emb` (B, T, dim): the token embeddings, carried to the last stage because the MTP module
  at depth d reads Emb(t_{i+d}), the embeddings shifted by d. Carrying them (rather than a copy
  of the embedding table on the last stage, as Megatron does for tied embeddings) keeps one
  embedding table whose gradient flows back through the pipeline like any activation, and
  works for any stage layout. Under DualPipeV the first and last stages sit on the same rank
  anyway, the arrangement DeepSeek-V3 chose so that the MTP module shares the embedding and
  the output head physically;
- `aux` (1,): the sequence-wise balance loss of the layers so far, added to the loss by the last
  stage so that each layer's balance term back-propagates into its own stage.

Packed rows: every stage also gets the micro-batch's `document_ids` (B, T), as a keyword
argument the schedule hands to all stages, and builds from it the block-diagonal causal mask
and the positions restarting at each document, exactly as `Transformer.forward` does.

The last stage holds the final norm, the output head and every MTP module, and returns
`(logits, aux, *mtp_logits)` to the schedule's loss function (`PipelineLoss`), which scores
them with the training objective the caller sets for the step (the same function the
single-process loop uses: `trainer.adapters.DeepSeekV3Model.objective`). Its target is the
micro-batch's targets and document ids stacked, (B, T, 2), since the MTP targets stop at
document boundaries. Losses are already normalised by the step's token counts, so the
schedule does not scale gradients by the number of micro-batches (`scale_grads=False`).

Stage modules hold the model's own submodules under the model's names (`embed`,
`layers.<i>`, `norm`, `head`, `mtp.<d>`), so a stage's parameter names are the model's and
checkpoints need no renaming; the model file is not touched. Each stage records the expert
load of its MoE layers on every forward (`expert_load`), which the step collects and resets.
Parts of the model that no stage of this rank runs are moved to the meta device (freed).

Static stage shapes: the stages are built for one micro-batch shape (batch, seq) and the
schedule refuses others; metadata inference by a trial forward/backward (which would run the
expert all-to-alls on dummy data) is never used. Training rows are packed to one length.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from trainer.config import ScheduleName
from trainer.model import Transformer, add_expert_load
from trainer.model.model import MTPModule, attention_mask, document_positions

# One micro-batch's share of the step's objective: (logits, mtp_logits, aux, targets,
# document_ids, micro-batches this rank runs in the step) -> (the loss to back-propagate, the
# token-summed losses for logging).
Objective = Callable[
    [Tensor, Sequence[Tensor], Tensor | None, Tensor, Tensor, int],
    tuple[Tensor, dict[str, float]],
]


def stages_per_rank(schedule: ScheduleName) -> int:
    return 2 if schedule == "dualpipev" else 1


def stage_ids(schedule: ScheduleName, pp_rank: int, pp_size: int) -> list[int]:
    """The stages a pipeline rank runs: its own (1F1B), or d and 2 pp - 1 - d (the V)."""
    if schedule == "dualpipev":
        return [pp_rank, 2 * pp_size - 1 - pp_rank]
    return [pp_rank]


def split_layers(n_layers: int, n_stages: int) -> list[range]:
    """Contiguous blocks of layers, one per stage, sizes differing by at most one; the earlier
    stages get the extra layers (the last stage also carries the head and the MTP modules)."""
    if n_stages > n_layers:
        raise ValueError(
            f"{n_stages} pipeline stages for {n_layers} layers: every stage needs a layer "
            f"(use fewer stages, or a model with more layers)"
        )
    base, extra = divmod(n_layers, n_stages)
    bounds = [0]
    for s in range(n_stages):
        bounds.append(bounds[-1] + base + (1 if s < extra else 0))
    return [range(bounds[s], bounds[s + 1]) for s in range(n_stages)]


class StageModule(nn.Module):
    """Layers `layer_ids` of a Transformer, with the embedding on the first stage and the
    final norm, head and MTP modules on the last (see the module docstring)."""

    def __init__(
        self, model: Transformer, layer_ids: range, *, first: bool, last: bool, mtp: bool = True
    ) -> None:
        super().__init__()
        self.first, self.last = first, last
        self.run_mtp = mtp  # False: the loss gives MTP no weight, so the modules do not run
        self.n_layers = model.args.n_layers
        self.rotary = model.rotary
        self.embed = model.embed if first else None
        self.layers = nn.ModuleDict({str(i): model.layers[i] for i in layer_ids})
        self.norm = model.norm if last else None
        self.head = model.head if last else None
        self.mtp = model.mtp if last else None
        self.expert_load: dict[int, Tensor] = {}

    def forward(self, *inputs: Tensor, document_ids: Tensor) -> tuple[Tensor, ...]:
        """inputs: the tokens (B, T) on the first stage, else (h, emb, aux) from the previous
        one; document_ids (B, T): which packed document each position belongs to."""
        if self.first:
            (tokens,) = inputs
            assert self.embed is not None
            h = self.embed(tokens)  # (B, T, dim)
            emb, aux = h, h.new_zeros(1)
        else:
            h, emb, aux = inputs
        T = h.shape[1]
        rope = self.rotary(0, T, h.device, document_positions(document_ids))
        mask = attention_mask(T, 0, None, h.device, document_ids)
        loads: dict[int, Tensor] = {}
        for key, layer in self.layers.items():
            h, layer_aux, load = layer(h, rope, mask, start_pos=0, cache=None, absorb=False)
            aux = aux + layer_aux
            if load is not None:
                loads[int(key)] = load
        if not self.last:
            add_expert_load(self.expert_load, loads)
            return h, emb, aux
        assert self.norm is not None and self.head is not None and self.mtp is not None
        h = self.norm(h)
        logits = self.head(h)  # (B, T, V)
        # MTP as Transformer.forward runs it, with Emb(t_{i+d}) sliced from the carried
        # embeddings instead of looked up again.
        mtp_logits = []
        h_k = h
        for d, module in enumerate(self.mtp if self.run_mtp else (), 1):
            assert isinstance(module, MTPModule)
            docs = document_ids[:, : T - d]  # depth d at position i: inside i's document
            rope_d = self.rotary(0, T - d, h.device, document_positions(docs))
            mask_d = attention_mask(T - d, 0, None, h.device, docs)
            h_k, normed, depth_aux, load = module(
                h_k[:, :-1], emb[:, d:], rope_d, mask_d, start_pos=0, cache=None, absorb=False
            )
            mtp_logits.append(self.head(normed))  # (B, T - d, V)
            aux = aux + depth_aux
            if load is not None:
                loads[self.n_layers + d - 1] = load
        add_expert_load(self.expert_load, loads)
        return (logits, aux, *mtp_logits)

    def take_expert_load(self) -> dict[int, Tensor]:
        """The load recorded since the last call, and start afresh."""
        load, self.expert_load = self.expert_load, {}
        return load


class PipelineLoss:
    """The schedule's loss function: the last stage's outputs against one micro-batch's
    targets and document ids, (B, T, 2), scored by the step's objective. The caller sets
    `objective` and `microbatches` before each step; `sums` collects the logged losses."""

    def __init__(self) -> None:
        self.objective: Objective | None = None
        self.microbatches = 1
        self.sums: dict[str, float] = {}

    def start(self, objective: Objective, microbatches: int) -> None:
        self.objective, self.microbatches, self.sums = objective, microbatches, {}

    def __call__(self, outputs: tuple[Tensor, ...], target: Tensor) -> Tensor:
        assert self.objective is not None, "PipelineLoss.start sets the step's objective"
        logits, aux, *mtp_logits = outputs
        targets, document_ids = target[..., 0], target[..., 1]
        loss, sums = self.objective(
            logits, mtp_logits, aux.sum(), targets, document_ids, self.microbatches
        )
        for key, value in sums.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        return loss


def example_io(
    model: Transformer, stage: int, n_stages: int, batch: int, seq: int, *, run_mtp: bool = True
) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """Meta tensors with the shapes a stage receives and returns for one micro-batch: the
    static metadata `PipelineStage` is built with."""
    args = model.args
    dtype = model.embed.weight.dtype if model.embed.weight.device.type != "meta" else torch.float32
    hidden = torch.empty(batch, seq, args.dim, dtype=dtype, device="meta", requires_grad=True)
    aux = torch.empty(1, dtype=dtype, device="meta", requires_grad=True)
    carried = (hidden, hidden.clone(), aux)
    if stage == 0:
        inputs: tuple[Tensor, ...] = (torch.empty(batch, seq, dtype=torch.long, device="meta"),)
    else:
        inputs = carried
    if stage < n_stages - 1:
        return inputs, carried
    logits = torch.empty(
        batch, seq, args.vocab_size, dtype=dtype, device="meta", requires_grad=True
    )
    mtp = tuple(
        torch.empty(batch, seq - d, args.vocab_size, dtype=dtype, device="meta", requires_grad=True)
        for d in range(1, (len(model.mtp) if run_mtp else 0) + 1)
    )
    return inputs, (logits, aux, *mtp)


def build_stage_modules(
    model: Transformer, schedule: ScheduleName, pp_rank: int, pp_size: int, *, mtp: bool = True
) -> dict[int, StageModule]:
    """This rank's stage modules, keyed by stage index; frees the parts no stage here runs.
    mtp: run the MTP modules on the last stage (False when the loss gives them no weight)."""
    n_stages = pp_size * stages_per_rank(schedule)
    layers = split_layers(model.args.n_layers, n_stages)
    mine = {
        s: StageModule(model, layers[s], first=s == 0, last=s == n_stages - 1, mtp=mtp)
        for s in stage_ids(schedule, pp_rank, pp_size)
    }
    _release_unused(model, list(mine.values()))
    return mine


def _release_unused(model: Transformer, stages: Sequence[StageModule]) -> None:
    kept = {id(m) for stage in stages for m in stage.modules()}
    parts: list[nn.Module] = [model.embed, *model.layers, model.norm, model.head, *model.mtp]
    for part in parts:
        if id(part) not in kept:
            part.to("meta")


def _whole_backward() -> Callable[[], None]:
    """Under FSDP2, torch 2.13's split backward (an input half now, the weight half later)
    loses weight gradients: it looks for the stage's parameters in the autograd graph, and
    FSDP2 registers the shards there, not the gathered tensors autograd used (measured: the
    last DualPipeV stage's gradients off by up to 2e-2). With a `dw_builder` the stage runs
    the whole backward at the input half and this empty runner at the weight half: exact,
    at the price of DualPipeV's postponed weight gradients."""
    return _nothing


def _nothing() -> None:
    return None


def build_schedule(
    stages: dict[int, StageModule],
    model: Transformer,
    *,
    schedule: ScheduleName,
    pp_size: int,
    pp_group: Any,
    n_microbatches: int,
    microbatch_shape: tuple[int, int],
    device: torch.device,
    loss: PipelineLoss,
    run_mtp: bool = True,
) -> Any:
    """The `torch.distributed.pipelining` stages and schedule for this rank's stage modules
    (which may be wrapped for data parallelism by now)."""
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleDualPipeV

    n_stages = pp_size * stages_per_rank(schedule)
    pipeline_stages: list[Any] = []
    for index, module in sorted(stages.items()):
        inputs, outputs = example_io(model, index, n_stages, *microbatch_shape, run_mtp=run_mtp)
        pipeline_stages.append(
            PipelineStage(
                module,
                index,
                n_stages,
                device,
                input_args=inputs,
                output_args=outputs,
                group=pp_group,
                dw_builder=_whole_backward if isinstance(module, FSDPModule) else None,
            )
        )
    if schedule == "dualpipev":
        if n_microbatches < n_stages:
            raise ValueError(
                f"DualPipeV over {pp_size} pipeline ranks ({n_stages} stages) needs at least "
                f"{n_stages} micro-batches per step, got {n_microbatches}"
            )
        return ScheduleDualPipeV(pipeline_stages, n_microbatches, loss_fn=loss, scale_grads=False)
    return Schedule1F1B(pipeline_stages[0], n_microbatches, loss_fn=loss, scale_grads=False)
