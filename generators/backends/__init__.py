"""Generation backends: one interface over the ways a model can be sampled.

Built: `LocalBackend` (`generators.backends.local`), this repository's own decoder in torch
(`trainer.generate`), for the toy universe and tests on a CPU. Not built yet: vLLM and
OpenAI-compatible HTTP servers.

A backend renders prompts with the checkpoint's chat template, samples, and names what it ran
(`backend`, `model_id`, `model_hash`) for the Sample record. Importing this package imports
no torch; the local backend loads it when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from generators.backends.local import LocalBackend

__all__ = ["LocalBackend"]


def __getattr__(name: str) -> Any:
    if name == "LocalBackend":
        from generators.backends.local import LocalBackend

        return LocalBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
