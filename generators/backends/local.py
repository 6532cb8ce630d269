"""The local torch backend: a checkpoint directory in, completions out, via `trainer.generate`.

    from generators.backends.base import Request, Sampling
    from generators.backends.local import LocalBackend

    backend = LocalBackend("work/model")
    results = backend.sample([Request(prompt=rendered_text, seed=7, n=4)], Sampling(max_tokens=64))
    results[0].outputs[2].text, backend.model_id, backend.model_hash

    # The trainer-level call (token ids, log-probs, MTP statistics), as `r1f generate` uses it:
    outs = backend.generate(["Compute 12+4."], SamplingParams(temperature=0.6, n=4, seed=0))

This is the one place the data side reaches into the trainer (ARCHITECTURE.md): it loads the
checkpoint, renders prompts with the checkpoint's chat template, and hands token ids to
`trainer.generate.generate`. Sampling semantics (seeds, stop strings, log-probs) are that
function's; see docs/generation.md.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from generators.backends.base import Output, Progress, Request, Result, Sampling
from generators.templates import chat_template_of, render
from trainer.checkpoint import load_checkpoint
from trainer.generate import Completion, DecodeEngine, GenerationStats, SamplingParams, generate
from trainer.init import checkpoint_hash
from trainer.tokenizer import R1Tokenizer


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
        mtp: bool = False,
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
        if mtp and self.args.n_mtp_depth == 0:
            raise ValueError(f"{root}: mtp needs a checkpoint with MTP layers; it has none")
        self.tokenizer = R1Tokenizer.from_dir(root)
        self.max_batch_rows = max_batch_rows
        self.mtp = mtp  # speculative decoding in `sample` (same distribution, other draws)
        # The directory's name says which model; the weights' hash says which weights.
        self.model_id = root.resolve().name
        self.model_hash: str | None = checkpoint_hash(root)
        self.chat_template = chat_template_of(root)
        self.counters: Counter[str] = Counter()
        self.stats = GenerationStats()  # over every `sample` call
        self._engine: DecodeEngine | None = None

    @property
    def identity(self) -> str:
        """`local:<model_id>@<first 16 hex of the weights' hash>`."""
        return f"{self.name}:{self.model_id}@{(self.model_hash or '?')[:16]}"

    def render(self, prompt: str, *, think: bool = True) -> str:
        """One user turn and an open assistant turn, in the checkpoint's chat template."""
        track = "reasoning" if think else "non_reasoning"
        return render("chat", prompt, track=track, chat_template=self.chat_template).text

    def sample(
        self, requests: Sequence[Request], sampling: Sampling, *, progress: Progress | None = None
    ) -> list[Result]:
        """The backend interface (`generators.backends.base`): rendered prompts in, samples out.

        A prompt that does not fit the model's `max_seq_len` fails alone, with the reason.
        """
        results: list[Result] = [Result() for _ in requests]
        runnable: list[int] = []
        limit = self.args.max_seq_len
        for i, request in enumerate(requests):
            length = len(self.tokenizer.encode(request.prompt))
            if length >= limit:
                results[i] = Result(
                    error=f"prompt_too_long: {length} tokens; the model's max_seq_len is {limit}"
                )
            elif length == 0:
                results[i] = Result(error="empty_prompt: the rendered prompt has no tokens")
            else:
                runnable.append(i)
        self.counters["requests"] += len(requests)
        self.counters["failed"] += len(requests) - len(runnable)
        if progress is not None and len(runnable) < len(requests):
            progress(len(requests) - len(runnable))
        params = [
            SamplingParams(
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=sampling.top_k,
                max_tokens=sampling.max_tokens,
                stop=sampling.stop,
                n=requests[i].n,
                seed=requests[i].seed,
            )
            for i in runnable
        ]
        if runnable:
            completions = self.generate(
                [requests[i].prompt for i in runnable],
                params,
                raw=True,
                mtp=self.mtp,
                stats=self.stats,
                progress=progress,
            )
            for i, samples in zip(runnable, completions, strict=True):
                results[i] = Result(
                    outputs=[
                        Output(
                            index=c.index,
                            text=c.text,
                            finish_reason=c.finish_reason,
                            prompt_tokens=c.prompt_tokens,
                            completion_tokens=c.completion_tokens,
                        )
                        for c in samples
                    ]
                )
        return results

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
        """result[i][j]: sample j of prompt i, with token ids and log-probs. Prompts are rendered
        with the chat template unless `raw` (then encoded as they are, no BOS added)."""
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

    def close(self) -> None:
        """Drop the decode engine's weight copy; the backend stays usable."""
        self._engine = None
