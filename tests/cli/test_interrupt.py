"""Ctrl-C: a real SIGINT sent to a real `r1f` process stops it promptly with one line saying
what state things are in, exit status 130, no traceback; the store is at its previous version
or a complete new one, and a rerun finishes the work without duplicates.

Hang guards are generous (the machine may be busy); they catch a command that keeps
running, not a slow one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from store.store import Store
from tests.cli.helpers import Result, r1f_process, write_lines

HANG_GUARD_S = 60


def interrupt(process: subprocess.Popen[bytes], stderr: Path) -> Result:
    process.send_signal(signal.SIGINT)
    try:
        code = process.wait(timeout=HANG_GUARD_S)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"r1f was still running {HANG_GUARD_S} s after SIGINT")
    return Result(code, "", stderr.read_text())


def reading(process: subprocess.Popen[bytes], path: Path) -> bool:
    """Whether the process has `path` open (it is at work on it)."""
    fds = Path(f"/proc/{process.pid}/fd")
    try:
        return any(os.path.realpath(fd) == str(path) for fd in fds.iterdir())
    except OSError:
        return False


def wait_until(condition: Callable[[], bool], process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while not condition():
        assert process.poll() is None, "r1f ended before the test could interrupt it"
        assert time.monotonic() < deadline, "r1f never started its work"
        time.sleep(0.01)


def test_sigint_during_a_large_import_then_a_rerun(
    tmp_path: Path, raw_row: Callable[..., dict[str, Any]]
) -> None:
    root = tmp_path / "store"
    small = write_lines(tmp_path / "small.jsonl", [raw_row(i) for i in range(10)])
    big = write_lines(tmp_path / "big.jsonl", [raw_row(i) for i in range(10, 12_010)])
    assert r1f_process("datasets", "import", small, "--table", "t", "--store", root).wait() == 0
    before = Store(root).read("t")

    stderr = tmp_path / "stderr.txt"
    with stderr.open("wb") as err:
        child = r1f_process("datasets", "import", big, "--table", "t", "--store", root, stderr=err)
        wait_until(lambda: reading(child, big), child)
        time.sleep(0.3)  # into the rows
        result = interrupt(child, stderr)
    line = result.one_line_error(130, "r1f: interrupted: ")
    store = Store(root)
    # The store is where the message says: the old version, or a complete new one.
    if "nothing was committed" in line:
        assert store.latest_version("t") == 0
        assert store.read("t").sort("sample_id").equals(before.sort("sample_id"))
    else:
        assert "t is at version 1 (a complete commit)" in line
        assert store.read("t").height == 12_010
    assert "rerun the same command" in line

    rerun = r1f_process(
        "datasets", "import", big, "--table", "t", "--store", root, "--json", stdout=subprocess.PIPE
    )
    out, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0
    assert json.loads(out)["valid"] == 12_000
    ids = store.read("t", columns=["sample_id"])["sample_id"]
    assert ids.len() == 12_010 and ids.n_unique() == 12_010
    # Whatever the interrupted writer left is unreferenced; vacuum removes only that.
    store.vacuum("t", dry_run=False)
    assert store.read("t").height == 12_010 and store.read("t", 0).height == 10


def test_sigint_stops_the_math_worker_pool(tmp_path: Path) -> None:
    rows = [
        {
            "gold": f"\\frac{{{i}}}{{7}}",
            "completion": f"\\boxed{{\\sin(x)^2 + \\cos(x)^2 + {i}/7 - 1}}",
        }
        for i in range(20_000)
    ]
    source = write_lines(tmp_path / "in.jsonl", rows)
    before = source.read_bytes()
    out = tmp_path / "out.jsonl"
    stderr = tmp_path / "stderr.txt"
    with stderr.open("wb") as err:
        child = r1f_process(
            "verify", "math", "--input", source, "--output", out, "--workers", "2", stderr=err
        )
        # Workers at work: the forkserver has forked them.
        wait_until(lambda: len(descendants(child.pid)) >= 4, child)
        workers = descendants(child.pid)
        result = interrupt(child, stderr)
    result.one_line_error(130, f"r1f: interrupted: {out} was not written (left as it was)")
    assert not out.exists() and source.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert_all_end(workers)


def test_sigint_kills_the_code_sandboxes(tmp_path: Path) -> None:
    from verifiers.code.sandbox import SandboxConfig, check_available

    try:
        check_available(SandboxConfig())
    except Exception as err:
        pytest.skip(f"no sandbox here: {err}")
    slow = "import time\ntime.sleep(30)\nprint(2)"
    tests = {"kind": "stdio", "cases": [{"input": "", "output": "2"}]}
    source = write_lines(tmp_path / "in.jsonl", [{"completion": slow, "tests": tests}] * 8)
    out = tmp_path / "out.jsonl"
    stderr = tmp_path / "stderr.txt"
    with stderr.open("wb") as err:
        child = r1f_process(
            "verify", "code", "--input", source, "--output", out, "--workers", "2", stderr=err
        )
        # The sandboxes are running the 30 s programs once both have a program in them.
        wait_until(lambda: len(descendants(child.pid)) >= 6, child)
        sandboxes = descendants(child.pid)
        result = interrupt(child, stderr)
    result.one_line_error(130, f"{out} was not written")
    assert not out.exists()
    assert_all_end(sandboxes)


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (children, their children, ...)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def assert_all_end(pids: set[int]) -> None:
    """The processes a command started end with it (orphans reparented to init included)."""
    deadline = time.monotonic() + HANG_GUARD_S
    while True:
        alive = {p for p in pids if _alive(p)}
        if not alive:
            return
        assert time.monotonic() < deadline, f"still running after the command ended: {alive}"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
