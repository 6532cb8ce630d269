"""Generation backends: one interface over the ways a model can be sampled.

| kind | module | what it drives |
|---|---|---|
| `local` | `generators.backends.local` | this repository's decoder (`trainer.generate`) in torch |
| `vllm` | `generators.backends.vllm_engine` | an in-process `vllm.LLM` (optional install) |
| `openai` | `generators.backends.openai_compatible` | any OpenAI-compatible completions server |

Each implements `generators.backends.base.Backend`: `sample(requests, sampling)` takes
rendered prompts with their seeds and returns every sample's text, finish reason and token
counts, and names what it ran (`name`, `model_id`, `model_hash`) for the Sample record.
`generators.backends.config.make_backend` builds one from the `backend:` config section.
`generators.backends.loopback` is a deterministic OpenAI-compatible server with injectable
faults, for the `openai` backend's tests and benchmark.

Importing this package imports no torch, vLLM or HTTP client; a backend loads what it needs
when it is made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from generators.backends.base import (
    BACKENDS,
    Backend,
    BackendError,
    Output,
    Request,
    Result,
    Sampling,
    sample_seed,
)

if TYPE_CHECKING:
    from generators.backends.local import LocalBackend

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendError",
    "LocalBackend",
    "Output",
    "Request",
    "Result",
    "Sampling",
    "sample_seed",
]


def __getattr__(name: str) -> Any:
    if name == "LocalBackend":
        from generators.backends.local import LocalBackend

        return LocalBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
