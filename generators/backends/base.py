"""The one interface every generation backend implements, and the types it speaks.

    backend.sample([Request(prompt=text, seed=s, n=4), ...], Sampling(temperature=0.6))
    -> [Result(outputs=[Output(index=0, text=..., finish_reason="stop", ...), ...]), ...]

A backend receives prompts already rendered (`generators.templates`) and sends them as they
are: the local engine encodes the text, vLLM and OpenAI-compatible servers get it on their
completions path. Sample `j` of a request seeded `s` draws from its own random stream seeded
`sample_seed(s, j)`, whatever the backend, so a sample does not depend on `n`, on which other
requests share its batch, or on a retry.

A request that cannot succeed (a prompt longer than the model's context, a 400 from a server)
comes back as a `Result` with `error` set and no outputs; the other requests of the call go on.
A failure that concerns the whole run (the server refuses the credentials, the model is
unknown, retries ran out) raises `BackendError`: nothing of that call is returned, and what
the caller committed before stays.

This module imports nothing heavy: no torch, no HTTP client.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

BACKENDS = ("local", "openai", "vllm")


class BackendError(RuntimeError):
    """The backend cannot serve this run (configuration, credentials, an unreachable server)."""


@dataclass(frozen=True)
class Sampling:
    """How every request of a run is sampled; `record()` is the Sample record's `sampling`."""

    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0  # 1: off
    top_k: int = 0  # 0: off
    # Always sent: vLLM's default is 16 tokens, which silently truncates reasoning.
    max_tokens: int = 256
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop", tuple(self.stop))
        checks = [
            (math.isfinite(self.temperature) and self.temperature >= 0, "temperature", ">= 0"),
            (0 < self.top_p <= 1, "top_p", "in (0, 1]"),
            (self.top_k >= 0, "top_k", ">= 0 (0 is off)"),
            (self.max_tokens >= 1, "max_tokens", ">= 1"),
            (all(isinstance(s, str) and s for s in self.stop), "stop", "non-empty strings"),
        ]
        for ok, name, rule in checks:
            if not ok:
                raise ValueError(f"sampling.{name}={getattr(self, name)!r}: must be {rule}")

    def record(self) -> dict[str, float | int | None]:
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k or None,
            "max_tokens": self.max_tokens,
        }


@dataclass(frozen=True)
class Request:
    """One rendered prompt and how many samples of it to draw."""

    prompt: str
    seed: int
    n: int = 1


@dataclass(frozen=True)
class Output:
    """One sample: the generated text (after the prompt) and what it cost."""

    index: int  # sample index within its request
    text: str
    finish_reason: str  # "stop" or "length" (as vLLM and the OpenAI API name them)
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Result:
    """A request's samples, in sample order; or, when it cannot succeed, why."""

    outputs: list[Output] = field(default_factory=list)
    error: str | None = None


Progress = Callable[[int], None]  # called with k as k more requests finish


class Backend(Protocol):
    """What the generation stage needs of a backend."""

    name: str  # "local", "openai", "vllm": the Sample record's `backend`
    model_id: str
    model_hash: str | None  # sha256 of the weights, when the backend can know them
    chat_template: str | None  # the checkpoint's Jinja chat template, when it has one
    # Counts since the backend was made: "requests", "retry:<why>", "failed". The stage reads
    # differences to account for each shard.
    counters: Counter[str]

    def sample(
        self, requests: Sequence[Request], sampling: Sampling, *, progress: Progress | None = None
    ) -> list[Result]: ...

    def close(self) -> None: ...


def sample_seed(request_seed: int, sample_index: int) -> int:
    """The seed of sample `sample_index` of a request seeded `request_seed`.

    The same derivation as `trainer.generate.sample_seed` (a test holds them equal), restated
    here because importing `trainer.generate` imports torch, which an HTTP client must not need.
    Backends that send one request per sample (vLLM, OpenAI-compatible servers) seed it with
    this; the local engine derives the same seed itself.
    """
    digest = hashlib.sha256(f"r1f-sample:{request_seed}:{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def identity(backend: Backend) -> str:
    """`name:model_id@<first 16 hex of the weights' hash>` (or `@?` when unknown)."""
    return str(identity_of(backend))


@dataclass(frozen=True)
class Identity:
    """What makes a backend's samples its own: every sample id includes it.

    Known before a model is loaded (`generators.backends.config.backend_identity`), so a
    generation run can be planned, and its finished shards skipped, without loading anything.
    """

    backend: str  # local | openai | vllm
    model_id: str
    model_hash: str | None
    mtp: bool = False  # speculative decoding: same distribution, other random draws

    def columns(self) -> dict[str, str | None]:
        """The Sample columns that carry it."""
        return {"backend": self.backend, "model_id": self.model_id, "model_hash": self.model_hash}

    def __str__(self) -> str:
        return f"{self.backend}:{self.model_id}@{(self.model_hash or '?')[:16]}"


def identity_of(backend: Backend) -> Identity:
    return Identity(
        backend.name, backend.model_id, backend.model_hash, bool(getattr(backend, "mtp", False))
    )
