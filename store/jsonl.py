"""JSONL in and out, one way for every command.

Reading. `read_jsonl(path)` yields `(line number, row)` for every non-blank
line; `row` is the parsed object, or a `BadLine` saying why the line cannot
be a row. A line is bad when it is

- not UTF-8,
- not JSON (`NaN`, `Infinity` and numbers too large for a float, which
  Python's parser turns into infinity, included: they are not JSON and no
  output could carry them),
- JSON holding a lone surrogate escape such as `"\\ud800"`: Python parses it
  into a string that no UTF-8 writer (Arrow, Parquet, a JSONL output) can
  store, so it is refused here, at its line, instead of failing later in a
  writer that no longer knows where the row came from,
- a JSON value that is not an object.

A bad line never stops the reading: the caller decides what becomes of it
(import quarantines it, verify writes a `bad_input` row, the other commands
report it and leave it out of their output), and the rest of the file is
processed. Bad lines are numbered like every other line, from 1, counting
blank lines, so `sed -n Np FILE` shows them. A UTF-8 byte-order mark at the
start of the file (Windows editors write one) is not part of line 1.

Writing. `atomic_output(path)` opens a temporary file beside `path` and
renames it over `path` only when the block finishes without an error, so a
reader (or a crash, or Ctrl-C) never sees a half-written file, and an output
that is also the command's input is replaced only after the input has been
read to its end.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

# The text kept of a bad line is capped so a runaway line cannot bloat a report or a table.
RAW_CAP = 256 * 1024
# A \u escape that may be half of a surrogate pair; only lines holding one need the full check.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")

Progress = Callable[[int], None]  # called with the bytes consumed since the last call


@dataclass(frozen=True)
class BadLine:
    """A line that is not a JSON object: where it is, why, and its text (capped)."""

    line: int
    reason: str
    raw: str

    @property
    def kind(self) -> str:
        """The reason without its position: "invalid JSON", "not UTF-8", ..."""
        return self.reason.split(" (")[0]

    def describe(self, path: str | os.PathLike[str]) -> str:
        """`FILE:LINE: reason`, the form every command reports."""
        return f"{os.fspath(path)}:{self.line}: {self.reason}"


class BadLines:
    """The bad lines (or rows) of one input as every command reports them:
    how many, and the first few as `FILE:LINE: reason`."""

    def __init__(self, path: str | os.PathLike[str], keep: int = 5) -> None:
        self.path = os.fspath(path)
        self.keep = keep
        self.count = 0
        self.examples: list[str] = []

    def add(self, line: int, reason: str) -> None:
        self.count += 1
        if len(self.examples) < self.keep:
            self.examples.append(f"{self.path}:{line}: {reason}")

    def to_dict(self) -> dict[str, Any]:
        return {"bad_lines": self.count, "bad_line_examples": list(self.examples)}


def cap(text: str) -> str:
    if len(text) <= RAW_CAP:
        return text
    return text[:RAW_CAP] + f"... [{len(text) - RAW_CAP} more chars]"


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text[:40]} is too large for a number")
    return value


def parse_line(data: bytes, number: int) -> dict[str, Any] | BadLine | None:
    """One line of a JSONL file: its object, a BadLine, or None for a blank line."""
    if number == 1 and data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raw = cap(data.decode("utf-8", errors="replace").rstrip("\r\n"))
        return BadLine(number, f"not UTF-8 ({err.reason} at byte {err.start + 1})", raw)
    if not text.strip():
        return None
    text = text.rstrip("\r\n")  # so that an error at the end points just past the text
    raw = cap(text)
    try:
        row = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError as err:
        return BadLine(number, f"invalid JSON ({err.msg}, column {err.pos + 1})", raw)
    except ValueError as err:  # NaN, Infinity, 1e400
        return BadLine(number, f"invalid JSON ({err})", raw)
    except RecursionError:
        return BadLine(number, "invalid JSON (nested too deeply)", raw)
    if not isinstance(row, dict):
        return BadLine(number, f"expected a JSON object, got {_json_kind(row)}", raw)
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(row, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as err:
            escape = f"\\u{ord(err.object[err.start]):04x}"
            column = text.lower().find(escape) + 1
            where = f" at column {column}" if column > 0 else ""
            reason = f"invalid JSON (lone surrogate {escape}{where}: not a Unicode character)"
            return BadLine(number, reason, raw)
    return row


def read_jsonl(
    path: str | os.PathLike[str], *, progress: Progress | None = None
) -> Iterator[tuple[int, dict[str, Any] | BadLine]]:
    """(line number, object or BadLine) for every non-blank line of `path`."""
    for number, row, _ in read_jsonl_lines(path, progress=progress):
        yield number, row


def read_jsonl_lines(
    path: str | os.PathLike[str], *, progress: Progress | None = None
) -> Iterator[tuple[int, dict[str, Any] | BadLine, bytes]]:
    """As `read_jsonl`, with each line's bytes, for callers that keep the original text."""
    with open(path, "rb") as fh:
        for number, data in enumerate(fh, start=1):
            if progress is not None:
                progress(len(data))
            row = parse_line(data, number)
            if row is not None:
                yield number, row, data


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    return "a number"


def _new_file_mode(target: Path) -> int:
    """Keep an existing file's permissions; a new one gets what open() would give it."""
    with contextlib.suppress(OSError):
        return target.stat().st_mode & 0o7777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], *, binary: bool = False) -> Iterator[IO[Any]]:
    """A file handle whose content replaces `path` when the block ends without an error.

    The temporary file sits in the target's directory (a rename across file
    systems would not be atomic) and is removed if the block raises or is
    interrupted; `path` is then exactly as it was.
    """
    # Through a symbolic link to the file it names: replacing the link itself
    # would leave the file the user pointed at unchanged.
    target = Path(os.path.realpath(path))
    if target.is_dir():
        raise IsADirectoryError(21, "is a directory; name a file to write", str(target))
    if target.exists() and not target.is_file():
        # A device or a pipe (/dev/null, a FIFO) must never be replaced by a file.
        raise OSError(22, "not a regular file; name a file to write", str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    mode = _new_file_mode(target)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    try:
        with open(fd, "wb") if binary else open(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), mode)
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def dumps_row(row: dict[str, Any]) -> str:
    """One output line: UTF-8 text as it is, no escapes for non-ASCII characters."""
    return json.dumps(row, ensure_ascii=False) + "\n"
