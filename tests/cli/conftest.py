"""The `cli` fixture: run `r1f` in this process and get its status, stdout and stderr."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from flows.cli import main as r1f
from tests.cli.helpers import Result


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """cli(*argv) runs `r1f` in this process and returns its status, stdout and stderr."""

    def run(*argv: Any) -> Result:
        code = r1f([str(a) for a in argv])
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run
