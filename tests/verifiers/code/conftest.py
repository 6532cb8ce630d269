"""Fixtures shared by the code-sandbox tests."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def uid_base() -> int:
    """Sandbox uids of their own for this pytest process.

    Tests that count the host's processes by uid must not see the sandboxes
    another xdist worker runs at the same time, nor those of the default base.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker.removeprefix("gw")) if worker.startswith("gw") else 0
    return 62000 + 100 * index
