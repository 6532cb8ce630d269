"""The FP8 tests run single-threaded, as the model tests do: on two shared cores, a second
OpenMP thread mostly spins waiting for a busy core, and small matmuls get much slower."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_outliers(rows: int, cols: int, seed: int, magnitude: float = 1e4) -> torch.Tensor:
    """Activations as LLMs have them: a few outlier channels (x30 in every token) and two
    massive-activation tokens (x magnitude); everything else standard normal."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=gen)
    x[:, torch.randperm(cols, generator=gen)[:2]] *= 30.0
    x[torch.randperm(rows, generator=gen)[:2]] *= magnitude
    return x


@pytest.fixture
def outliers() -> Callable[..., torch.Tensor]:
    """outliers(rows, cols, seed, magnitude=1e4) -> (rows, cols) activations with outliers."""
    return make_outliers
