"""`store.jsonl`: the JSONL reader every command shares, and atomic outputs."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from store.jsonl import BadLine, atomic_output, parse_line, read_jsonl


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"a": ', "invalid JSON (Expecting value, column 7)"),
        (b'{"a": "caf\xe9"}', "not UTF-8 (invalid continuation byte at byte 11)"),
        (b'{"a": "\\ud800"}', "invalid JSON (lone surrogate \\ud800 at column 8"),
        (b'{"a": "x\\uDC00"}', "invalid JSON (lone surrogate \\udc00 at column 9"),
        (b'{"a": NaN}', "invalid JSON (NaN is not JSON)"),
        (b'{"a": -Infinity}', "invalid JSON (-Infinity is not JSON)"),
        (b'{"a": 1e400}', "invalid JSON (1e400 is too large for a number)"),
        (b"[1, 2]", "expected a JSON object, got an array"),
        (b'"text"', "expected a JSON object, got a string"),
        (b"null", "expected a JSON object, got null"),
        (b"[" * 100_000, "invalid JSON (nested too deeply)"),
    ],
)
def test_bad_lines_say_why(line: bytes, reason: str) -> None:
    bad = parse_line(line + b"\n", 7)
    assert isinstance(bad, BadLine) and bad.line == 7
    assert bad.reason.startswith(reason), bad.reason
    assert bad.describe("f.jsonl").startswith("f.jsonl:7: ")


def test_good_lines_blank_lines_pairs_and_bom() -> None:
    assert parse_line(b"  \r\n", 3) is None
    assert parse_line(b'{"a": "\\ud83d\\ude00", "b": 1.5}\r\n', 1) == {"a": "\U0001f600", "b": 1.5}
    assert parse_line(b'{"a": "\\\\ud800"}', 1) == {"a": "\\ud800"}  # an escaped backslash
    assert parse_line(b'\xef\xbb\xbf{"a": 1}\n', 1) == {"a": 1}
    assert isinstance(parse_line(b'\xef\xbb\xbf{"a": 1}\n', 2), BadLine)  # only the file's start


def test_read_jsonl_numbers_lines_as_sed_does(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"a": 1}\n\n{oops\n{"a": 2}')
    got = list(read_jsonl(path))
    assert [n for n, _ in got] == [1, 3, 4]
    assert isinstance(got[1][1], BadLine) and got[2][1] == {"a": 2}


def test_atomic_output_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")
    os.chmod(target, 0o640)
    with pytest.raises(RuntimeError), atomic_output(target) as fh:
        fh.write("half")
        raise RuntimeError("the command failed")
    assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["out.jsonl"]
    with atomic_output(target) as fh:
        fh.write("new\n")
    assert target.read_text() == "new\n" and os.listdir(tmp_path) == ["out.jsonl"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # permissions kept


def test_atomic_output_writes_through_a_link_and_never_over_a_device(tmp_path: Path) -> None:
    real = tmp_path / "real.jsonl"
    real.write_text("old\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(real)
    with atomic_output(link) as fh:
        fh.write("new\n")
    assert link.is_symlink() and real.read_text() == "new\n"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"), atomic_output(fifo):
        pass
    assert stat.S_ISFIFO(fifo.stat().st_mode)
