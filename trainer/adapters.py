"""One interface for every model the loop trains: our DeepSeek-V3 and any transformers causal LM.

    model = DeepSeekV3Model(transformer)          # or HFCausalLM(AutoModelForCausalLM...)
    counts = model.count_targets(batch)           # scored positions, per loss term
    counts = model.sum_over_ranks(counts)         # the step's counts over every data rank
    parts = model.forward_backward(batches, counts)   # gradients in the parameters
    norm = model.clip_grad_norm(max_norm)         # the global gradient norm, before clipping
    model.after_step(step_load)                   # router-bias update; MaxVio per router
    model.save(dir, tokenizer_dir=..., extra_config=...)

The loop sees only this interface, so the model-specific parts (MTP, router balancing,
how packed documents reach attention, how weights are saved) live here and nowhere else.

`module` is what runs the forward and what the optimizer trains; transforms applied from
outside (FP8 swaps nn.Linear in place; a data-parallel wrapper wraps it) replace or modify it
with `model.module = wrap(model.module)`. `base` stays the unwrapped model, which is what is
saved and what the router update reaches into.

Losses are sums over tokens divided by the step's counts (summed over all micro-batches of
the optimizer step before any forward), so a step of k micro-batches has exactly the gradient
of one batch k times as large: accumulation changes nothing but memory.

The two adapters here run in one process (`OneProcess`: `sum_over_ranks` returns its input,
`forward_backward` runs the micro-batches one after the other, `clip_grad_norm` clips the
module's own gradients). `trainer.parallel.training.DistributedModel` implements the same
interface over ranks: counts summed over the data group, the forward/backward spread over
data, expert and pipeline ranks, the norm taken over every rank's gradients.
"""

from __future__ import annotations

import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.data import IGNORE_INDEX, Batch
from trainer.model import Transformer, add_expert_load, update_router_bias
from trainer.model.losses import lm_loss, mtp_targets
from trainer.model.model import document_positions
from trainer.optim import clip_grad_norm


@dataclass
class Losses:
    """One micro-batch's contribution to the step."""

    total: Tensor  # differentiable; sum over micro-batches is the step's objective
    sums: dict[str, float] = field(default_factory=dict)  # token-summed losses, for logging
    expert_load: dict[int, Tensor] = field(default_factory=dict)


class TrainableModel(Protocol):
    module: nn.Module

    @property
    def base(self) -> nn.Module: ...

    def count_targets(self, batch: Batch) -> dict[str, int]: ...

    def sum_over_ranks(self, values: Mapping[str, float]) -> dict[str, float]: ...

    def forward_backward(
        self, micro_batches: Sequence[Batch], counts: Mapping[str, int]
    ) -> list[Losses]: ...

    def clip_grad_norm(self, max_norm: float) -> float: ...

    def after_step(self, load: Mapping[int, Tensor]) -> dict[str, float]: ...

    def save(
        self,
        out_dir: Path,
        *,
        tokenizer_dir: str | os.PathLike[str] | None,
        extra_config: Mapping[str, Any],
    ) -> None: ...


def _sum_ce(logits: Tensor, targets: Tensor) -> Tensor:
    return lm_loss(logits, targets, IGNORE_INDEX, reduction="sum")


class OneProcess(ABC):
    """The step's collective parts for a model trained in one process; each adapter gives
    its own `losses`."""

    module: nn.Module

    @abstractmethod
    def losses(self, batch: Batch, counts: Mapping[str, int], micro_batches: int) -> Losses:
        """The micro-batch's loss parts, each a token sum divided by the step's `counts`."""

    def sum_over_ranks(self, values: Mapping[str, float]) -> dict[str, float]:
        """Sums over data ranks: with one process, the values themselves."""
        return dict(values)

    def forward_backward(
        self, micro_batches: Sequence[Batch], counts: Mapping[str, int]
    ) -> list[Losses]:
        """Forward and backward of each micro-batch in turn; gradients accumulate."""
        parts = []
        for batch in micro_batches:
            part = self.losses(batch, counts, len(micro_batches))
            part.total.backward()
            part.total = part.total.detach()
            parts.append(part)
        return parts

    def clip_grad_norm(self, max_norm: float) -> float:
        return clip_grad_norm(self.module.parameters(), max_norm)


class DeepSeekV3Model(OneProcess):
    """Our `Transformer`: the main loss, the MTP loss weighted by lambda, the sequence-wise
    balance loss, and the auxiliary-loss-free router-bias update after each step."""

    def __init__(
        self,
        model: Transformer,
        *,
        mtp_lambda: float | None = None,
        bias_update_speed: float | None = None,
        reduce: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        self._base = model
        self.module: nn.Module = model
        self.mtp_lambda = model.args.mtp_lambda if mtp_lambda is None else mtp_lambda
        self.gamma = (
            model.args.bias_update_speed if bias_update_speed is None else bias_update_speed
        )
        # Sums expert load over data-parallel ranks (the parallel wrapper passes an all-reduce).
        self.reduce = reduce
        self.depths = len(model.mtp)

    @property
    def base(self) -> Transformer:
        return self._base

    def count_targets(self, batch: Batch) -> dict[str, int]:
        counts = {"lm": batch.scored_tokens}
        for d in range(1, self.depths + 1):
            shifted = mtp_targets(batch.targets, d, batch.document_ids, IGNORE_INDEX)
            counts[f"mtp{d}"] = int((shifted != IGNORE_INDEX).sum())
        return counts

    @property
    def uses_mtp(self) -> bool:
        return self.depths > 0 and self.mtp_lambda > 0

    def losses(self, batch: Batch, counts: Mapping[str, int], micro_batches: int) -> Losses:
        out = self.module(batch.inputs, document_ids=batch.document_ids, mtp=self.uses_mtp)
        total, sums = self.objective(
            out.logits,
            out.mtp_logits,
            out.aux_loss,
            batch.targets,
            batch.document_ids,
            counts,
            micro_batches,
        )
        return Losses(total, sums, dict(out.expert_load))

    def objective(
        self,
        logits: Tensor,
        mtp_logits: Sequence[Tensor],
        aux_loss: Tensor | None,
        targets: Tensor,
        document_ids: Tensor,
        counts: Mapping[str, int],
        micro_batches: int,
    ) -> tuple[Tensor, dict[str, float]]:
        """One micro-batch's share of the step's objective from the model's outputs, and its
        token-summed losses for logging. The pipeline's last stage calls this too, so every
        layout optimises the same function."""
        lm_sum = _sum_ce(logits, targets)
        total = lm_sum / max(counts["lm"], 1)
        sums = {"lm": float(lm_sum.detach())}
        for d, depth_logits in enumerate(mtp_logits if self.uses_mtp else (), 1):
            shifted = mtp_targets(targets, d, document_ids, IGNORE_INDEX)
            depth_sum = _sum_ce(depth_logits, shifted)
            # L_MTP = lambda / D * sum_d (mean CE of depth d), as in the V3 paper.
            total = total + self.mtp_lambda / self.depths * depth_sum / max(counts[f"mtp{d}"], 1)
            sums[f"mtp{d}"] = float(depth_sum.detach())
        if aux_loss is not None:
            # The balance loss is a mean over sequences: average it over micro-batches.
            total = total + aux_loss / micro_batches
            sums["aux"] = float(aux_loss.detach())
        return total, sums

    def after_step(self, load: Mapping[int, Tensor]) -> dict[str, float]:
        if not load:
            return {}
        violations = update_router_bias(self._base, load, self.gamma, reduce=self.reduce)
        return {f"maxvio/layer{layer}": v for layer, v in violations.items()}

    def save(
        self,
        out_dir: Path,
        *,
        tokenizer_dir: str | os.PathLike[str] | None,
        extra_config: Mapping[str, Any],
    ) -> None:
        from trainer.checkpoint import save_checkpoint

        save_checkpoint(
            self._base,
            self._base.args,
            out_dir,
            tokenizer_dir=tokenizer_dir,
            extra_config=extra_config,
        )


class HFCausalLM(OneProcess):
    """Any transformers causal LM (a dense Qwen2 / Llama student, or our checkpoint loaded as
    `DeepseekV3ForCausalLM`). Packed documents reach its attention as a 4D block-diagonal
    causal mask with position ids restarting per document, which transformers takes as is."""

    def __init__(self, model: nn.Module) -> None:
        self._base = model
        self.module: nn.Module = model

    @property
    def base(self) -> nn.Module:
        return self._base

    def count_targets(self, batch: Batch) -> dict[str, int]:
        return {"lm": batch.scored_tokens}

    def losses(self, batch: Batch, counts: Mapping[str, int], micro_batches: int) -> Losses:
        T = batch.inputs.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool, device=batch.inputs.device).tril()
        same = batch.document_ids[:, :, None] == batch.document_ids[:, None, :]
        mask = (same & causal)[:, None]  # (B, 1, T, T), True where attention is allowed
        out = self.module(
            input_ids=batch.inputs,
            attention_mask=mask,
            position_ids=document_positions(batch.document_ids),
            use_cache=False,
        )
        lm_sum = F.cross_entropy(
            out.logits.flatten(0, 1).float(),
            batch.targets.flatten(),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )
        return Losses(lm_sum / max(counts["lm"], 1), {"lm": float(lm_sum.detach())})

    def after_step(self, load: Mapping[int, Tensor]) -> dict[str, float]:
        return {}

    def save(
        self,
        out_dir: Path,
        *,
        tokenizer_dir: str | os.PathLike[str] | None,
        extra_config: Mapping[str, Any],
    ) -> None:
        config = getattr(self._base, "config", None)
        if config is not None:
            for key, value in extra_config.items():
                setattr(config, key, value)
        self._base.save_pretrained(str(out_dir))  # type: ignore[operator]
        if tokenizer_dir is not None:
            for f in sorted(Path(tokenizer_dir).iterdir()):
                if f.is_file() and f.name in ("tokenizer.json", "tokenizer_config.json"):
                    shutil.copy2(f, out_dir / f.name)


def step_expert_load(losses: list[Losses]) -> dict[int, Tensor]:
    """The step's expert load: every micro-batch's forward summed."""
    total: dict[int, Tensor] = {}
    for part in losses:
        add_expert_load(total, part.expert_load)
    return total
