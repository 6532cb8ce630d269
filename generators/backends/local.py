"""The local torch backend: a checkpoint directory in, completions out, via `trainer.generate`.

    from generators.backends.local import LocalBackend
    from trainer.generate import SamplingParams

    backend = LocalBackend("work/model")
    outs = backend.generate(["Compute 12+4."], SamplingParams(temperature=0.6, n=4, seed=0))
    outs[0][2].text, backend.model_id, backend.model_hash

This is the one place the data side reaches into the trainer (ARCHITECTURE.md): it loads the
checkpoint, renders prompts with the checkpoint's chat template, and hands token ids to
`trainer.generate.generate`. Sampling semantics (seeds, stop strings, log-probs) are that
function's; see docs/generation.md.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from trainer.checkpoint import load_checkpoint
from trainer.generate import Completion, DecodeEngine, GenerationStats, SamplingParams, generate
from trainer.init import checkpoint_hash
from trainer.tokenizer import BOS, CHAT_TEMPLATE, EOS, R1Tokenizer, render_prompt


class LocalBackend:
    """A checkpoint loaded in this process. Not thread-safe; one per worker."""

    name = "local"

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        max_batch_rows: int = 32,
    ) -> None:
        root = Path(model_dir)
        if not (root / "tokenizer.json").is_file():
            raise FileNotFoundError(
                f"{root}: no tokenizer.json; a checkpoint for generation carries its tokenizer "
                "(r1f model init writes one)"
            )
        self.model_dir = root
        self.model, self.args = load_checkpoint(root, device=device, dtype=dtype)
        self.model.eval()
        self.tokenizer = R1Tokenizer.from_dir(root)
        self.max_batch_rows = max_batch_rows
        # The directory's name says which model; the weights' hash says which weights.
        self.model_id = root.resolve().name
        self.model_hash = checkpoint_hash(root)
        self.chat_template = _chat_template(root)
        self._engine: DecodeEngine | None = None

    @property
    def identity(self) -> str:
        """`local:<model_id>@<first 16 hex of the weights' hash>`."""
        return f"{self.name}:{self.model_id}@{self.model_hash[:16]}"

    def render(self, prompt: str, *, think: bool = True) -> str:
        """One user turn and an open assistant turn, in the checkpoint's chat template."""
        if self.chat_template is None or self.chat_template == CHAT_TEMPLATE:
            return render_prompt(prompt, think=think)
        return _render_jinja(self.chat_template, prompt, think)

    def generate(
        self,
        prompts: Sequence[str],
        params: SamplingParams | Sequence[SamplingParams],
        *,
        raw: bool = False,
        think: bool = True,
        mtp: bool = False,
        stats: GenerationStats | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[list[Completion]]:
        """result[i][j]: sample j of prompt i. Prompts are rendered with the chat template
        unless `raw` (then encoded as they are, no BOS added)."""
        texts = list(prompts) if raw else [self.render(p, think=think) for p in prompts]
        if self._engine is None or not self._engine.is_current():
            self._engine = DecodeEngine(self.model)
        return generate(
            self.model,
            self.tokenizer,
            texts,
            params,
            mtp=mtp,
            max_batch_rows=self.max_batch_rows,
            engine=self._engine,
            stats=stats,
            progress=progress,
        )


def _chat_template(root: Path) -> str | None:
    config = root / "tokenizer_config.json"
    if not config.is_file():
        return None
    template = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
    return template if isinstance(template, str) else None


def _render_jinja(template: str, prompt: str, think: bool) -> str:
    """Render another checkpoint's template the way transformers does (sandboxed Jinja)."""
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(
        messages=[{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        bos_token=BOS,
        eos_token=EOS,
        think=think,
    )
