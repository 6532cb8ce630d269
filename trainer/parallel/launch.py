"""Starting ranks: `torchrun` to run a command as N local ranks (what `r1f train --nproc N`
does), `join_torchrun` for a process torchrun started, `init_distributed` for any process that
is one rank, and `spawn` to run a function on N fresh local processes from Python (tests and
benchmarks).

`torchrun(nproc, module, argv)` runs torch's elastic agent (`torch.distributed.run`, what the
`torchrun` command runs) in a child process of its own session, with a standalone rendezvous
on a free loopback port, and waits for it. Stopping is the parent's business:

- Ctrl-C reaches only the parent (the agent and the ranks sit in sessions of their own, away
  from the terminal), which passes one SIGINT to the agent; the agent sends it to every rank,
  kills those still running after its grace period, and exits. The parent waits for that
  (bounded) and returns 130.
- A parent that dies, SIGKILL included, takes the agent with it (the agent asked the kernel
  for SIGTERM when its parent goes: PR_SET_PDEATHSIG), and the agent takes the ranks.
- A rank whose agent dies (SIGKILL) notices that its parent changed and exits at once
  (`join_torchrun` starts that watch), so no rank trains on alone.
- When a rank fails, the agent stops the others; the exit status is the first failure's (a
  rank's one-line error is on stderr already).

Why `spawn` rather than torchrun in tests: the parent keeps control. Each worker is a fresh
interpreter (the "spawn" start method: no forked torch state), rendezvous goes through a file
in a private temporary directory (no port to pick, none to collide), every worker's result or
traceback comes back to the caller, and a deadline kills the whole group: a collective that
never completes fails the test instead of hanging it. torchrun is what `r1f train --nproc`
uses; it sets the same environment `init_distributed` reads.

Only loopback is used: gloo is pinned to the loopback interface unless the caller chose one.
"""

from __future__ import annotations

import ctypes
import logging
import os
import pickle
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

LOOPBACK = "lo0" if platform.system() == "Darwin" else "lo"
# Set for the processes `torchrun` starts: a command that sees it runs as one rank.
WORKER_ENV = "R1F_TORCHRUN_WORKER"
EXIT_INTERRUPTED = 130
# How long the parent waits for the agent to stop the ranks after Ctrl-C (the agent itself
# kills ranks that ignore SIGINT for SHUTDOWN_GRACE_S).
SHUTDOWN_GRACE_S = 10
_PR_SET_PDEATHSIG = 1


def torchrun(
    nproc: int,
    module: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    threads: int = 1,
) -> int:
    """Run `python -m module *argv` as `nproc` local ranks under torch's elastic agent and
    wait for them (see the module docstring). Returns 0, the first failing rank's exit
    status, or 130 after Ctrl-C."""
    child_env = {
        **os.environ,
        **(env or {}),
        WORKER_ENV: "1",
        "OMP_NUM_THREADS": str(threads),
        "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", LOOPBACK),
        # The agent's own log lines (rendezvous, closing signals) are not for the user: a
        # rank's error is printed by the rank, and the exit status says the rest.
        "LOGLEVEL": os.environ.get("LOGLEVEL", "ERROR"),
    }
    command = [sys.executable, "-m", "trainer.parallel.agent", str(nproc), module, *argv]
    agent = subprocess.Popen(
        command, env=child_env, start_new_session=True, preexec_fn=_die_with_parent
    )
    try:
        while True:  # a timed wait: a blocking one is not woken by Ctrl-C (see _wait)
            status = _wait(agent, 0.2)
            if status is not None:
                return status
    except KeyboardInterrupt:
        agent.send_signal(signal.SIGINT)
        try:
            agent.wait(timeout=SHUTDOWN_GRACE_S + 20)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
        return EXIT_INTERRUPTED


def _wait(process: subprocess.Popen[bytes], seconds: float) -> int | None:
    """The exit status, or None if still running after `seconds`. Why not `wait()`: torch
    starts threads of its own, the kernel may hand SIGINT to one of them, and then a main
    thread blocked in waitpid is never interrupted: Ctrl-C would wait for the whole run."""
    try:
        return process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return None


def _die_with_parent() -> None:
    """In the agent, before it runs: SIGTERM when the parent (this CLI) dies."""
    if platform.system() == "Linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def run_agent(nproc: int, module: str, argv: Sequence[str]) -> int:
    """The agent's process: torch.distributed.run with a standalone rendezvous; returns the
    run's exit status (see `torchrun`)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser
    from torch.distributed.run import run as run_elastic

    # The agent's own notices (rendezvous, "sending closing signal" on Ctrl-C) are not for
    # the user: a rank prints its own error and the exit status says the rest. torch sets its
    # loggers' levels as they are created, so they are lowered here, after the imports.
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith("torch.distributed") and isinstance(logger, logging.Logger):
            logger.setLevel(logging.ERROR)
    options = get_args_parser().parse_args(
        [
            "--standalone",
            f"--nproc-per-node={nproc}",
            "--max-restarts=0",
            f"--shutdown-timeout={SHUTDOWN_GRACE_S}",
            "--module",
            module,
        ]
    )
    # Set after parsing: the parser would take the command's own flags (--nproc) for
    # abbreviations of its options.
    options.training_script_args = list(argv)
    try:
        run_elastic(options)
    except ChildFailedError as err:
        _, failure = err.get_first_failure()
        status = failure.exitcode
        return 128 - status if status < 0 else status  # killed by a signal: 128 + signum
    except SignalException as err:
        return EXIT_INTERRUPTED if err.sigval == signal.SIGINT else 128 + int(err.sigval)
    return 0


def join_torchrun(timeout_s: float = 1800.0) -> tuple[int, int]:
    """In a rank torchrun started: join the process group (gloo) and watch the agent, exiting
    at once if it goes (its ranks must not train on alone). Returns (rank, world size)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(EXIT_INTERRUPTED)

    threading.Thread(target=watch, name="watch-torchrun-agent", daemon=True).start()
    return init_distributed("gloo", timeout_s=timeout_s)


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
