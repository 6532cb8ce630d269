"""Starting ranks: `init_distributed` for a process that is one rank (under torchrun or
`spawn`), and `spawn` to run a function on N fresh local processes from Python (tests and
benchmarks).

Why `spawn` rather than torchrun in tests: the parent keeps control. Each worker is a fresh
interpreter (the "spawn" start method: no forked torch state), rendezvous goes through a file
in a private temporary directory (no port to pick, none to collide), every worker's result or
traceback comes back to the caller, and a deadline kills the whole group: a collective that
never completes fails the test instead of hanging it. torchrun is what `r1f train --nproc`
uses; it sets the same environment `init_distributed` reads.

Only loopback is used: gloo is pinned to the loopback interface unless the caller chose one.
"""

from __future__ import annotations

import os
import pickle
import platform
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import timedelta
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

LOOPBACK = "lo0" if platform.system() == "Darwin" else "lo"


def init_distributed(
    backend: str = "gloo",
    *,
    rank: int | None = None,
    world_size: int | None = None,
    init_method: str | None = None,
    timeout_s: float = 300.0,
) -> tuple[int, int]:
    """Join the process group; with no arguments, from torchrun's environment (RANK,
    WORLD_SIZE, MASTER_ADDR, MASTER_PORT). Returns (rank, world size)."""
    if backend == "gloo":
        os.environ.setdefault("GLOO_SOCKET_IFNAME", LOOPBACK)
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    dist.init_process_group(
        backend,
        init_method=init_method,
        rank=rank if rank is not None else -1,
        world_size=world_size if world_size is not None else -1,
        timeout=timedelta(seconds=timeout_s),
    )
    return dist.get_rank(), dist.get_world_size()


class WorkerError(RuntimeError):
    """A rank raised, died, or did not finish before the deadline."""


def spawn(
    fn: Callable[..., Any],
    world_size: int,
    args: Sequence[Any] = (),
    *,
    timeout_s: float = 300.0,
    threads: int = 1,
) -> list[Any]:
    """Run `fn(rank, world_size, *args)` on `world_size` new processes joined in a gloo group
    and return each rank's result (picklable), in rank order.

    `fn` must be importable by name (a module-level function). Raises `WorkerError` with the
    first failing rank's traceback if any rank raises or exits abnormally, or if they have not
    all finished within `timeout_s`; every worker still alive is then killed.
    """
    ctx = get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="r1f-dist-") as tmp:
        init_file = Path(tmp) / "rendezvous"
        procs = [
            ctx.Process(
                target=_worker,
                args=(fn, rank, world_size, f"file://{init_file}", Path(tmp), threads, args),
                daemon=True,
            )
            for rank in range(world_size)
        ]
        for p in procs:
            p.start()
        try:
            deadline = time.monotonic() + timeout_s
            failed: int | None = None
            while any(p.is_alive() for p in procs):
                if time.monotonic() > deadline:
                    raise WorkerError(
                        f"ranks {[r for r, p in enumerate(procs) if p.is_alive()]} did not "
                        f"finish within {timeout_s:.0f} s"
                    )
                failed = next((r for r, p in enumerate(procs) if p.exitcode not in (None, 0)), None)
                if failed is not None:
                    break
                time.sleep(0.05)
            if failed is None:
                for p in procs:
                    p.join(timeout=5)
            outcomes: dict[int, tuple[bool, Any, float]] = {}
            for rank in range(world_size):
                out = Path(tmp) / f"rank{rank}.pkl"
                if out.exists():
                    outcomes[rank] = pickle.loads(out.read_bytes())
            errors = sorted(
                (when, rank, value) for rank, (ok, value, when) in outcomes.items() if not ok
            )
            if errors:
                # The first to fail is the cause; peers then fail on the broken connection.
                _, rank, value = errors[0]
                others = [r for _, r, _ in errors[1:]]
                also = f" (then ranks {others} failed too)" if others else ""
                raise WorkerError(f"rank {rank} raised{also}:\n{value}")
            for rank, p in enumerate(procs):
                if rank not in outcomes:
                    raise WorkerError(f"rank {rank} exited with code {p.exitcode}")
            results = [outcomes[rank][1] for rank in range(world_size)]
            return results
        finally:
            for p in procs:
                if p.is_alive():
                    p.kill()
            for p in procs:
                p.join(timeout=10)


def _worker(
    fn: Callable[..., Any],
    rank: int,
    world_size: int,
    init_method: str,
    out_dir: Path,
    threads: int,
    args: Sequence[Any],
) -> None:
    torch.set_num_threads(threads)
    try:
        init_distributed(rank=rank, world_size=world_size, init_method=init_method)
        result: tuple[bool, Any, float] = (True, fn(rank, world_size, *args), time.time())
    except BaseException:
        result = (False, traceback.format_exc(), time.time())
    tmp = out_dir / f".rank{rank}.pkl"
    tmp.write_bytes(pickle.dumps(result))
    tmp.replace(out_dir / f"rank{rank}.pkl")
    if dist.is_initialized():
        if result[0]:
            dist.destroy_process_group()
        else:
            # Peers may be blocked in a collective with us: leave without a goodbye; the
            # parent kills them.
            os._exit(1)
