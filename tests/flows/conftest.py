"""Fixtures for the flow tests: one Prefect test server for the session, a tiny checkpoint.

Prefect reads PREFECT_HOME when it is first imported, so it is set here, before any flow test
module imports it: a temporary directory of the session, never the user's ~/.prefect.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="r1f-prefect-home-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """Prefect's test harness (a temporary server and database) for the whole session: its
    first start takes 15-30 s on two busy cores, so every flow test shares it."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny DeepSeek-V3 checkpoint with a tokenizer of the toy tasks."""
    import torch

    from generators.tasks import SOURCES
    from trainer.init import init_checkpoint, model_args
    from trainer.tokenizer import MIN_VOCAB_SIZE, train_tokenizer

    torch.set_num_threads(1)
    tasks = [t for s in SOURCES.values() for t in s.generate(20, seed=0)]
    tokenizer = train_tokenizer(
        [t.prompt + t.solution for t in tasks], vocab_size=MIN_VOCAB_SIZE + 64
    )
    out, _ = init_checkpoint(
        model_args("tiny", None), 0, tmp_path_factory.mktemp("model"), tokenizer=tokenizer
    )
    return Path(out)
