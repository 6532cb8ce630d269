"""Helpers for the command-line tests: run `r1f` as a real program, write JSONL with bad
lines, and check the error contract (one line on stderr, the right exit status, no
traceback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def one_line_error(self, code: int, *fragments: str) -> str:
        """Assert the contract of a refused run and return its message."""
        assert self.code == code, (self.code, self.out, self.err)
        assert "Traceback" not in self.out + self.err, self.err
        lines = self.err.splitlines()
        assert len(lines) == 1, self.err
        for fragment in fragments:
            assert fragment in lines[0], (fragment, lines[0])
        return lines[0]


def r1f_process(*argv: Any, cwd: Path | None = None, **kwargs: Any) -> subprocess.Popen[bytes]:
    """`r1f` as a real program (`python -m flows.cli`), for signals and working directories."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *map(str, argv)],
        env=env,
        cwd=cwd or REPO,
        **kwargs,
    )


def write_lines(path: Path, lines: list[Any]) -> Path:
    """A JSONL file from rows (dicts, dumped) and raw lines (str or bytes, written as they are)."""
    with path.open("wb") as fh:
        for line in lines:
            if isinstance(line, dict):
                line = json.dumps(line)
            fh.write(line if isinstance(line, bytes) else line.encode())
            fh.write(b"\n")
    return path


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# One line of each kind every JSONL reader must report and step over.
BAD_LINES: dict[str, bytes] = {
    "invalid JSON": b'{"prompt": "cut off',
    "not UTF-8": b'{"prompt": "caf\xe9"}',
    "lone surrogate": b'{"prompt": "\\ud800", "completion": "x"}',
    "not an object": b'["a", "list"]',
    "NaN": b'{"prompt": "p", "completion": NaN}',
}
