"""The model tests run single-threaded: on two shared cores, a second OpenMP thread mostly
spins waiting for a busy core, and small matmuls get tens of times slower."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
