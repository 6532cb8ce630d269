"""The process launcher used by the distributed tests (results, errors, deadlines, cleanup),
and one quick two-rank step against a single process."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
import torch.distributed as dist

from trainer.config import LoopConfig, OptimConfig, ParallelConfig
from trainer.model import tiny
from trainer.parallel.check import (
    StepCase,
    loop_steps,
    loop_steps_many,
    merge_ranks,
    random_documents,
)
from trainer.parallel.launch import WorkerError, spawn


def all_reduce_rank(rank: int, world_size: int, offset: int) -> tuple[int, int]:
    total = torch.tensor([rank + offset])
    dist.all_reduce(total)
    return rank, int(total)


def fail_on_rank_one(rank: int, world_size: int) -> int:
    if rank == 1:
        raise ValueError("rank one says no")
    dist.barrier()  # rank 0 waits here for a peer that is gone: the parent must kill it
    return rank


def sleep_forever(rank: int, world_size: int) -> None:
    time.sleep(3600)


def spawned_workers() -> set[int]:
    """Live processes started by multiprocessing's spawn below this one (its resource
    tracker, which lives as long as the parent, is not a worker)."""
    pids = set()
    for child in psutil.Process().children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "spawn_main" in cmdline and child.status() != psutil.STATUS_ZOMBIE:
            pids.add(child.pid)
    return pids


def test_results_come_back_in_rank_order() -> None:
    assert spawn(all_reduce_rank, 2, (10,), timeout_s=120) == [(0, 21), (1, 21)]


def test_a_failing_rank_raises_with_its_traceback_and_nothing_survives() -> None:
    with pytest.raises(WorkerError, match="rank 1 raised") as info:
        spawn(fail_on_rank_one, 2, timeout_s=120)
    assert "rank one says no" in str(info.value)
    assert not spawned_workers()


def test_a_hang_is_killed_at_the_deadline() -> None:
    start = time.monotonic()
    with pytest.raises(WorkerError, match="did not finish within"):
        spawn(sleep_forever, 2, timeout_s=15)
    assert time.monotonic() - start < 120  # hang guard, not a speed target
    assert not spawned_workers()


def test_smoke_two_rank_steps_match_one_process() -> None:
    """The default tier's taste of `make test-dist`: one step of the training loop's
    `train_step` under expert parallelism and DualPipeV on two ranks gives the single-process
    loss and gradients (the full set is in test_dist.py)."""
    case = StepCase(
        tiny(vocab_size=64, seq_aux_alpha=0.01),
        random_documents(24, 64, seed=2),
        seq_len=12,
        loop=LoopConfig(rows_per_micro_batch=4, grad_accum=1),
        optim=OptimConfig(lr=1e-2, warmup_steps=1),
    )
    layouts = {
        "ep": ParallelConfig(ep=2),
        "dualpipev": ParallelConfig(pp=2, microbatches=4, schedule="dualpipev"),
    }
    cases = {name: case.under(layout) for name, layout in layouts.items()}
    per_rank = spawn(loop_steps_many, 2, (cases,), timeout_s=600)
    torch.set_num_threads(1)
    ref = loop_steps(0, 1, case)
    loss = ref.records[0]["loss"]
    for name in layouts:
        records = [ranks[name] for ranks in per_rank]
        grads, _ = merge_ranks(records)
        assert [r.records[0]["loss"] for r in records] == pytest.approx([loss] * 2, rel=1e-6)
        assert grads.keys() == ref.grads.keys()
        worst = max((grads[n] - ref.grads[n]).abs().max().item() for n in grads)
        assert worst < 1e-6, (name, worst)


RANK_MODULE = """\
import os, sys, time
from pathlib import Path

out = Path(sys.argv[1])
(out / f"started-{os.environ['RANK']}").touch()
try:
    time.sleep(600)
except KeyboardInterrupt:
    (out / f"interrupted-{os.environ['RANK']}").touch()
    sys.exit(130)
"""

PARENT = """\
import sys
from trainer.parallel.launch import torchrun

sys.exit(torchrun(2, "sleeping_rank", [sys.argv[1]], env={"PYTHONPATH": sys.argv[2]}))
"""


@pytest.mark.dist
def test_ctrl_c_reaches_every_torchrun_rank_and_exits_130(tmp_path: Path) -> None:
    """SIGINT to the launching process (what Ctrl-C in a terminal sends) is passed to the
    agent, which interrupts every rank; the launcher returns 130 and nothing is left. (A
    blocking wait for the agent was never woken: torch's own threads took the signal.)"""
    (tmp_path / "sleeping_rank.py").write_text(RANK_MODULE)
    path = os.pathsep.join([str(tmp_path), os.getcwd(), os.environ.get("PYTHONPATH", "")])
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path), path],
        env={**os.environ, "PYTHONPATH": path},
        # As from a terminal: a harness running tests in the background may ignore SIGINT.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 300
    while not all((tmp_path / f"started-{r}").exists() for r in (0, 1)):
        assert parent.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    family = psutil.Process(parent.pid).children(recursive=True)
    parent.send_signal(signal.SIGINT)
    try:
        assert parent.wait(timeout=120) == 130  # hang guard; the ranks sleep for 600 s
        assert all((tmp_path / f"interrupted-{r}").exists() for r in (0, 1))
        _, alive = psutil.wait_procs(family, timeout=30)
        assert not alive
    finally:  # a failure must not leave sleeping ranks behind
        parent.kill()  # nothing when it has exited
        for process in family:
            with contextlib.suppress(psutil.Error):
                process.kill()
