"""Run a step over many batches or shards: in-process, in a process pool, or on Ray.

A step is any `fn(batch) -> (batch, StepStats)`, e.g.
`functools.partial(apply_filters, filters=[...])`. The executors only move
batches and stats around, so the same step code runs under each:

- `local`: in this process, one batch after another (tests, debugging, tiny data);
- `process`: a `concurrent.futures.ProcessPoolExecutor` started with
  `forkserver` (fork would copy whatever threads and locks the parent holds,
  polars' and Arrow's thread pools included). `fn` and its arguments are
  pickled, so it must be a module-level function or a `functools.partial`
  of one, over filter objects that pickle (the built-in ones are frozen
  dataclasses of plain values);
- `ray`: Ray tasks, when the `ray` extra is installed (`pip install -e .[ray]`);
  it joins a running cluster (`RAY_ADDRESS`) or starts a local one. Prefect's
  RayTaskRunner belongs to the flow layer; this module does not know Prefect.

Results come back in input order, and at most `2 * workers` batches are in
flight, so memory stays bounded by the window plus the collected outputs.

`run_sharded` is the resumable form: each shard (a list of Parquet files)
becomes one output Parquet file plus a `.done` marker holding its stats, both
written to a temporary name and renamed into place, so a killed run leaves
either a finished shard or none. A rerun skips shards with a marker.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from filters.base import StepStats, merge_stats

Executor = Literal["local", "process", "ray"]
EXECUTORS: tuple[Executor, ...] = ("local", "process", "ray")
StepFn = Callable[[pa.RecordBatch], tuple[pa.RecordBatch, StepStats]]

T = TypeVar("T")
R = TypeVar("R")

MARKER_SUFFIX = ".done"
# The stats of a run that saw no batch at all; merged away when others exist.
EMPTY_STEP = "empty"


class ExecutorError(RuntimeError):
    """The executor cannot run as configured (unknown name, missing extra)."""


def _check(executor: str, workers: int) -> None:
    if executor not in EXECUTORS:
        raise ExecutorError(f"unknown executor {executor!r}; use one of {', '.join(EXECUTORS)}")
    if workers < 1:
        raise ExecutorError(f"workers must be >= 1, got {workers}")


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ExecutorError(
            "executor='ray' needs Ray, which is not installed: "
            "install the ray extra with `pip install -e .[ray]`, "
            "or use executor='process' on one machine"
        ) from None
    return ray


def _map_ordered(
    fn: Callable[[T], R], items: Iterable[T], executor: Executor, workers: int
) -> Iterator[R]:
    """`fn` over `items`, results in input order, at most 2 * workers in flight."""
    _check(executor, workers)
    if executor == "local":
        yield from map(fn, items)
    elif executor == "process":
        yield from _map_process(fn, items, workers)
    else:
        yield from _map_ray(fn, items, workers)


def _map_process(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    try:
        pickle.dumps(fn)
    except (pickle.PicklingError, AttributeError, TypeError) as err:
        # Said here, once, rather than as a traceback from the pool's feeder thread.
        raise ExecutorError(
            f"executor='process' sends the step to worker processes, but it does not pickle "
            f"({err}); use a module-level function or functools.partial of one"
        ) from err
    method = "forkserver" if sys.platform.startswith("linux") else "spawn"
    context = multiprocessing.get_context(method)
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_leave_ctrl_c_to_the_parent
    )
    try:
        window: deque[Future[R]] = deque()
        for item in items:
            window.append(pool.submit(fn, item))
            if len(window) >= 2 * workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()
    except BaseException:
        # Ctrl-C or a failed step: drop the queued batches and end the workers now,
        # rather than after the batches they are running (seconds each at scale).
        # The executor has no public way to stop running work; its process table does
        # (read before shutdown, which forgets it).
        processes = getattr(pool, "_processes", None) or {}
        pool.shutdown(wait=False, cancel_futures=True)
        for process in list(processes.values()):
            process.terminate()
        raise
    finally:
        pool.shutdown(wait=True)


def _leave_ctrl_c_to_the_parent() -> None:
    """Workers ignore SIGINT (a terminal sends it to the whole process group): the
    parent stops them, and a worker's own KeyboardInterrupt would print a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _map_ray(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    ray = _import_ray()
    if not ray.is_initialized():
        # A local cluster when none is configured (RAY_ADDRESS joins one); no
        # usage report leaves the machine and no dashboard is started.
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        # A local cluster binds to loopback only; joining RAY_ADDRESS uses the cluster's own.
        local = {} if os.environ.get("RAY_ADDRESS") else {"_node_ip_address": "127.0.0.1"}
        ray.init(ignore_reinit_error=True, log_to_driver=False, include_dashboard=False, **local)
    remote = ray.remote(_call)
    fn_ref = ray.put(fn)  # shipped once, not with every task
    window: deque[Any] = deque()
    for item in items:
        window.append(remote.remote(fn_ref, item))
        if len(window) >= 2 * workers:
            yield ray.get(window.popleft())
    while window:
        yield ray.get(window.popleft())


def _call(fn: Callable[[T], R], item: T) -> R:
    return fn(item)


def _one_step(stats: Iterable[StepStats]) -> StepStats:
    merged = merge_stats(s for s in stats if s.step != EMPTY_STEP)
    if len(merged) > 1:
        raise ValueError(f"fn reported several steps {[s.step for s in merged]}; expected one")
    return merged[0] if merged else StepStats(step=EMPTY_STEP)


def run_batches(
    batches: Iterable[pa.RecordBatch],
    fn: StepFn,
    *,
    executor: Executor = "local",
    workers: int = 1,
) -> tuple[list[pa.RecordBatch], StepStats]:
    """Apply `fn` to every batch; the outputs in input order and the step's merged stats.

    With no batches the stats are empty and named `EMPTY_STEP`.
    """
    outputs: list[pa.RecordBatch] = []
    stats: list[StepStats] = []
    for batch, batch_stats in _map_ordered(fn, batches, executor, workers):
        outputs.append(batch)
        stats.append(batch_stats)
    return outputs, _one_step(stats)


@dataclass(frozen=True)
class ShardSpec:
    """One unit of resumable work: Parquet files read in order, one output named `shard_id`."""

    shard_id: str
    inputs: tuple[str, ...]
    batch_rows: int = 4096

    def __post_init__(self) -> None:
        if not self.shard_id or "/" in self.shard_id or self.shard_id.startswith("."):
            raise ValueError(f"shard_id must be a plain file name, got {self.shard_id!r}")


def shards_for(
    paths: Iterable[str | os.PathLike[str]], files_per_shard: int = 1
) -> list[ShardSpec]:
    """Group input files, in the order given, into shards named `shard-00000`, `shard-00001`, ...

    Names depend only on position, so the same inputs give the same shards on a rerun.
    """
    if files_per_shard < 1:
        raise ValueError(f"files_per_shard must be >= 1, got {files_per_shard}")
    files = [os.fspath(p) for p in paths]
    return [
        ShardSpec(f"shard-{i // files_per_shard:05d}", tuple(files[i : i + files_per_shard]))
        for i in range(0, len(files), files_per_shard)
    ]


@dataclass
class ShardReport:
    ran: list[str] = field(default_factory=list)  # shard ids processed by this call
    skipped: list[str] = field(default_factory=list)  # shard ids finished by an earlier call
    outputs: list[Path] = field(default_factory=list)  # every shard's output, in shard order
    stats: StepStats = field(default_factory=lambda: StepStats(step=EMPTY_STEP))  # all shards


def output_path(out_dir: Path, shard: ShardSpec) -> Path:
    return out_dir / f"{shard.shard_id}.parquet"


def marker_path(out_dir: Path, shard: ShardSpec) -> Path:
    return out_dir / f"{shard.shard_id}{MARKER_SUFFIX}"


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)  # atomic on one filesystem: readers see all or nothing
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class _ShardJob:
    """What a worker needs for one shard; a module-level callable so it pickles."""

    fn: StepFn
    out_dir: str

    def __call__(self, shard: ShardSpec) -> StepStats:
        out_dir = Path(self.out_dir)
        source = pq.ParquetFile(shard.inputs[0]).schema_arrow if shard.inputs else None
        stats: list[StepStats] = []

        def write(tmp: Path) -> None:
            writer: pq.ParquetWriter | None = None
            try:
                for path in shard.inputs:
                    for batch in pq.ParquetFile(path).iter_batches(batch_size=shard.batch_rows):
                        out, batch_stats = self.fn(batch)
                        stats.append(batch_stats)
                        if writer is None:
                            writer = pq.ParquetWriter(tmp, out.schema, compression="zstd")
                        writer.write_batch(out)
                if writer is None:  # no rows: still leave a readable, empty output
                    schema = source if source is not None else pa.schema([])
                    pq.write_table(schema.empty_table(), tmp, compression="zstd")
            finally:
                if writer is not None:
                    writer.close()

        _write_atomic(output_path(out_dir, shard), write)
        result = _one_step(stats)

        def mark(tmp: Path) -> None:
            tmp.write_text(json.dumps(result.to_dict(), sort_keys=True))

        # The marker lands last: an output without one is an unfinished shard.
        _write_atomic(marker_path(out_dir, shard), mark)
        return result


def run_sharded(
    shards: list[ShardSpec],
    fn: StepFn,
    out_dir: str | os.PathLike[str],
    *,
    executor: Executor = "local",
    workers: int = 1,
) -> ShardReport:
    """Run `fn` over each shard not finished yet, writing `{shard_id}.parquet` and its marker.

    Stats of skipped shards are read back from their markers, so the report
    always covers every shard.
    """
    ids = [s.shard_id for s in shards]
    if len(set(ids)) != len(ids):
        raise ValueError("shard ids must be unique")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = ShardReport(outputs=[output_path(out, s) for s in shards])
    todo: list[ShardSpec] = []
    stats: list[StepStats] = []
    for shard in shards:
        marker = marker_path(out, shard)
        if marker.exists() and output_path(out, shard).exists():
            report.skipped.append(shard.shard_id)
            stats.append(StepStats.from_dict(json.loads(marker.read_text())))
        else:
            todo.append(shard)
    job = _ShardJob(fn=fn, out_dir=os.fspath(out))
    for shard, shard_stats in zip(todo, _map_ordered(job, todo, executor, workers), strict=True):
        report.ran.append(shard.shard_id)
        stats.append(shard_stats)
    report.stats = _one_step(stats)
    return report
