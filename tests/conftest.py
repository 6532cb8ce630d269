"""Shared fixtures: a fresh store and deterministic sample rows."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from store.lineage import Lineage
from store.record import validate_sample
from store.store import Store

DOMAINS = ("math", "code", "general")
SOURCES = ("toy-arithmetic", "toy-countdown", "imported")


def sample_row(i: int, **overrides: Any) -> dict[str, Any]:
    """A valid raw sample row; `i` makes it unique."""
    rng = random.Random(i)
    row: dict[str, Any] = {
        "prompt": f"Problem {i}: what is {rng.randint(1, 99)} + {rng.randint(1, 99)}?",
        "completion": f"<think>step {i} "
        + "word " * rng.randint(1, 50)
        + "</think><answer>7</answer>",
        "domain": DOMAINS[i % len(DOMAINS)],
        "track": "reasoning" if i % 4 else "non_reasoning",
        "source": SOURCES[i % len(SOURCES)],
        "backend": "reference",
        "sample_index": 0,
        "finish_reason": "stop",
    }
    row.update(overrides)
    return row


@pytest.fixture
def rows() -> Callable[..., list[dict[str, Any]]]:
    """rows(n, start=0) -> validated Sample rows."""

    def make(n: int, start: int = 0) -> list[dict[str, Any]]:
        return [validate_sample(sample_row(i)) for i in range(start, start + n)]

    return make


@pytest.fixture
def store(tmp_path: Any) -> Store:
    return Store(tmp_path / "store")


@pytest.fixture
def lineage() -> Lineage:
    return Lineage(writer="tests", config_hash="cfg0")


@pytest.fixture
def raw_row() -> Callable[..., dict[str, Any]]:
    """raw_row(i, **overrides) -> an unvalidated sample dict, as a JSONL line would hold."""
    return sample_row
