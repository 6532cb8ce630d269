"""`MathVerifier`: the fast path in the caller, sympy in workers under a hard deadline.

How a pair is checked:

1. the LRU cache, keyed by (gold, completion);
2. `check_fast` in the calling thread: countdown, extraction, hedges,
   rational numbers, rational functions and the typed structures, bounded by
   the parser's guards and a small size budget, so it needs no deadline;
3. otherwise `check_full` in a worker process. The parent sends a chunk of
   pairs and waits on the pipe with a timeout; the worker answers pair by
   pair, so every pair has its own deadline, measured from the previous
   answer. A pair past its deadline gets `unverifiable`/`timeout`; its worker
   is killed (SIGKILL: it may be stuck inside C code, where no Python-level
   interrupt reaches) and replaced, and the rest of the chunk goes to the new
   worker. No `signal.alarm` anywhere, so any thread may call in.

Workers are forked from a forkserver that has sympy imported already, so a
replacement is ready in milliseconds rather than the second an import takes.
Each runs with an address-space limit, so a runaway allocation fails there
with MemoryError instead of swapping the machine.

Thread safety: idle workers wait in a queue; a call takes the workers it
needs, drives them itself, and puts them back. The cache and the counters sit
behind a lock.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import resource
import signal
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from multiprocessing.connection import Connection, wait
from typing import Any

from verifiers.math.check import check_fast
from verifiers.math.verdict import INTERNAL_ERROR, TIMEOUT, TOO_COMPLEX, WORKER_ERROR, Verdict

DEFAULT_TIMEOUT = 5.0
# A worker that has not said "ready" after this long is broken, not slow.
STARTUP_TIMEOUT = 120.0
# Pairs per message to a worker: large enough that a round trip costs little
# per pair, small enough that one timeout resends little.
CHUNK_SIZE = 16
# Pairs the batch API reads ahead; bounds memory on a long input stream.
WINDOW = 1024
DEFAULT_MEMORY_MB = 2048

Item = tuple[int, str, str]


def _worker_main(conn: Connection, memory_bytes: int) -> None:
    """A worker's life: limit memory, import sympy, then check pairs until told to stop."""
    # Ctrl-C is the parent's to handle; it kills the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if memory_bytes > 0:
        # A hard limit already below ours makes setrlimit refuse; that one bounds us then.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    from verifiers.math.check import check_full

    try:
        conn.send(("ready", os.getpid()))
    except OSError:  # the parent gave up on us while we started (Ctrl-C): nothing to say
        return
    while True:
        try:
            chunk = conn.recv()
        except EOFError:
            return
        if chunk is None:
            return
        for index, gold, completion in chunk:
            try:
                verdict = check_full(gold, completion)
            except (MemoryError, RecursionError):
                verdict = Verdict("unverifiable", TOO_COMPLEX)
            except Exception:
                verdict = Verdict("unverifiable", INTERNAL_ERROR)
            conn.send((index, verdict.verdict, verdict.reason, verdict.extracted))


class _Worker:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, context: Any, memory_bytes: int) -> None:
        parent_end, child_end = multiprocessing.Pipe(duplex=True)
        self.process = context.Process(
            target=_worker_main, args=(child_end, memory_bytes), daemon=True
        )
        self.process.start()
        child_end.close()
        self.conn: Connection = parent_end
        try:
            ready = parent_end.poll(STARTUP_TIMEOUT)
        except BaseException:  # Ctrl-C while it starts: it must not outlive the wait
            self.kill()
            raise
        if not ready:
            self.kill()
            raise RuntimeError(f"math verifier worker did not start within {STARTUP_TIMEOUT} s")
        try:
            parent_end.recv()
        except EOFError:
            self.kill()
            raise RuntimeError(
                "math verifier worker exited while starting; a script that uses the pool "
                "needs the `if __name__ == '__main__':` guard (workers import the main "
                "module, as with any multiprocessing start method but fork)"
            ) from None

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=10)
        self.conn.close()


@dataclass
class Stats:
    """What a verifier did so far; the bench and the CLI report these."""

    fast: int = 0  # decided in the caller, no worker involved
    cached: int = 0
    remote: int = 0  # sent to a worker
    timeouts: int = 0
    worker_errors: int = 0
    restarts: int = 0  # workers replaced after a timeout or a crash
    # Longest check on each path: the fast path in the caller, and a worker
    # pair from its start to its verdict (parent's clock, IPC included).
    max_fast_s: float = 0.0
    max_remote_s: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)


class _LRU:
    def __init__(self, size: int) -> None:
        self.size = size
        self.data: OrderedDict[tuple[str, str], Verdict] = OrderedDict()

    def get(self, key: tuple[str, str]) -> Verdict | None:
        value = self.data.get(key)
        if value is not None:
            self.data.move_to_end(key)
        return value

    def put(self, key: tuple[str, str], value: Verdict) -> None:
        if self.size <= 0:
            return
        self.data[key] = value
        self.data.move_to_end(key)
        if len(self.data) > self.size:
            self.data.popitem(last=False)


@dataclass
class _Slot:
    """A worker busy with a chunk; `started` is when its current pair began."""

    worker: _Worker
    pending: deque[Item]
    started: float


def _shutdown(workers: set[_Worker]) -> None:
    for worker in list(workers):
        worker.kill()
    workers.clear()


class MathVerifier:
    """Thread-safe math verification with a worker pool, a per-check deadline and a cache.

        with MathVerifier(workers=2, timeout=5.0) as verifier:
            verdict = verifier.verify(gold, completion)
            verdicts = verifier.verify_many(pairs, progress=bar.update)

    Workers start on first need. `timeout` is the hard deadline of one pair
    in a worker, in seconds; `memory_mb` each worker's address-space limit
    (0: none); `cache_size` the number of verdicts kept (0: no cache).
    """

    def __init__(
        self,
        *,
        workers: int = 2,
        timeout: float = DEFAULT_TIMEOUT,
        cache_size: int = 65536,
        memory_mb: int = DEFAULT_MEMORY_MB,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self.max_workers = workers
        self.timeout = timeout
        self.memory_bytes = memory_mb * 1024 * 1024
        self._context = multiprocessing.get_context("forkserver")
        # Only a hint: ignored if another part of the program started the
        # forkserver first, in which case workers import sympy themselves.
        self._context.set_forkserver_preload(["verifiers.math.check", "verifiers.math.symbolic"])
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._workers: set[_Worker] = set()
        self._lock = threading.Lock()
        self._count = 0  # workers alive or starting
        self._cache = _LRU(cache_size)
        self.stats = Stats()
        self._closed = False
        self._finalizer = weakref.finalize(self, _shutdown, self._workers)

    # public API

    def verify(self, gold: str, completion: str, *, timeout: float | None = None) -> Verdict:
        """One pair; see `verifiers.math.verify`."""
        return next(self.verify_iter([(gold, completion)], timeout=timeout))

    def verify_many(
        self,
        pairs: Iterable[tuple[str, str]],
        *,
        timeout: float | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[Verdict]:
        """Verdicts for `pairs`, in order."""
        return list(self.verify_iter(pairs, timeout=timeout, progress=progress))

    def verify_iter(
        self,
        pairs: Iterable[tuple[str, str]],
        *,
        timeout: float | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Iterator[Verdict]:
        """Verdicts for a stream of pairs, in order, reading WINDOW pairs ahead.

        `progress(n)` is called with the number of pairs finished since its
        last call (an increment, as a progress bar's `update` takes it).
        """
        if self._closed:
            raise RuntimeError("this MathVerifier is closed")
        deadline = self.timeout if timeout is None else timeout
        stream = iter(pairs)
        while True:
            window = list(islice(stream, WINDOW))
            if not window:
                return
            yield from self._window(window, deadline, progress)

    def close(self) -> None:
        """Stop every worker; the verifier cannot be used afterwards."""
        self._closed = True
        self._finalizer()

    def __enter__(self) -> MathVerifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def worker_pids(self) -> list[int]:
        """The live workers' process ids (for tests and monitoring)."""
        with self._lock:
            return [w.pid for w in self._workers]

    # internals

    def _window(
        self,
        window: list[tuple[str, str]],
        deadline: float,
        progress: Callable[[int], None] | None,
    ) -> list[Verdict]:
        results: list[Verdict | None] = [None] * len(window)
        remote: list[Item] = []
        fast = cached = 0
        slowest = 0.0
        for i, (gold, completion) in enumerate(window):
            with self._lock:
                hit = self._cache.get((gold, completion))
            if hit is not None:
                results[i] = hit
                cached += 1
                continue
            began = time.perf_counter()
            try:
                verdict = check_fast(gold, completion)
            except Exception:
                # A bug in the fast path: let the worker try, and report there.
                verdict = None
            slowest = max(slowest, time.perf_counter() - began)
            if verdict is None:
                remote.append((i, gold, completion))
            else:
                results[i] = verdict
                fast += 1
                self._remember(gold, completion, verdict)
        with self._lock:
            self.stats.fast += fast
            self.stats.cached += cached
            self.stats.remote += len(remote)
            self.stats.max_fast_s = max(self.stats.max_fast_s, slowest)
        if progress is not None and fast + cached:
            progress(fast + cached)

        def done(item: Item, verdict: Verdict) -> None:
            results[item[0]] = verdict
            self._remember(item[1], item[2], verdict)
            if progress is not None:
                progress(1)

        if remote:
            self._run_remote(remote, deadline, done)
        out = [r for r in results if r is not None]
        assert len(out) == len(window), "every pair gets a verdict"
        with self._lock:
            for verdict in out:
                self.stats.reasons[verdict.reason] = self.stats.reasons.get(verdict.reason, 0) + 1
        return out

    def _remember(self, gold: str, completion: str, verdict: Verdict) -> None:
        # A timeout says as much about the machine's load as about the pair.
        if verdict.reason in (TIMEOUT, WORKER_ERROR):
            return
        with self._lock:
            self._cache.put((gold, completion), verdict)

    def _acquire(self, block: bool) -> _Worker | None:
        while True:
            try:
                idle = self._idle.get_nowait()
            except queue.Empty:
                break
            if idle.process.is_alive():
                return idle
            # Died while idle (killed from outside, or the OOM killer): replace it.
            self._forget(idle)
        with self._lock:
            # Count the worker before its slow start, so that two threads
            # starting at once cannot exceed max_workers.
            spawn = self._count < self.max_workers
            if spawn:
                self._count += 1
        if spawn:
            try:
                return self._spawn()
            except BaseException:
                with self._lock:
                    self._count -= 1
                raise
        if not block:
            return None
        idle = self._idle.get()
        if idle.process.is_alive():
            return idle
        self._forget(idle)
        return self._acquire(block=True)

    def _spawn(self) -> _Worker:
        worker = _Worker(self._context, self.memory_bytes)
        with self._lock:
            self._workers.add(worker)
        return worker

    def _forget(self, worker: _Worker) -> None:
        with self._lock:
            self._workers.discard(worker)
            self._count -= 1
        worker.kill()

    def _replace(self, worker: _Worker) -> _Worker:
        self._forget(worker)
        with self._lock:
            self.stats.restarts += 1
        fresh = self._acquire(block=True)
        assert fresh is not None
        return fresh

    def _release(self, worker: _Worker) -> None:
        self._idle.put(worker)

    def _run_remote(
        self, items: list[Item], deadline: float, done: Callable[[Item, Verdict], None]
    ) -> None:
        chunks = deque(deque(items[i : i + CHUNK_SIZE]) for i in range(0, len(items), CHUNK_SIZE))
        slots: dict[Connection, _Slot] = {}
        retried: set[int] = set()

        def start(worker: _Worker, pending: deque[Item]) -> None:
            try:
                worker.conn.send(list(pending))
            except OSError:
                # It died between checkout and now; nothing was sent, so no pair is lost.
                worker = self._replace(worker)
                worker.conn.send(list(pending))
            slots[worker.conn] = _Slot(worker, pending, time.monotonic())

        first = self._acquire(block=True)
        assert first is not None
        start(first, chunks.popleft())
        while chunks and len(slots) < self.max_workers:
            extra = self._acquire(block=False)
            if extra is None:
                break
            start(extra, chunks.popleft())

        def next_chunk(slot: _Slot) -> None:
            del slots[slot.worker.conn]
            if chunks:
                start(slot.worker, chunks.popleft())
            else:
                self._release(slot.worker)

        def fail_first(slot: _Slot, reason: str) -> None:
            """Give the slot's current pair `reason`, replace its worker, resend the rest."""
            item = slot.pending.popleft()
            done(item, Verdict("unverifiable", reason))
            with self._lock:
                if reason == TIMEOUT:
                    self.stats.timeouts += 1
                else:
                    self.stats.worker_errors += 1
            del slots[slot.worker.conn]
            fresh = self._replace(slot.worker)
            if slot.pending:
                start(fresh, slot.pending)
            elif chunks:
                start(fresh, chunks.popleft())
            else:
                self._release(fresh)

        try:
            while slots:
                now = time.monotonic()
                nearest = min(s.started for s in slots.values()) + deadline
                for conn in wait(list(slots), timeout=max(0.0, nearest - now)):
                    slot = slots[conn]  # type: ignore[index]
                    try:
                        index, verdict, reason, extracted = slot.worker.conn.recv()
                    except (EOFError, OSError):
                        # The worker died. Once per pair that may be bad luck
                        # (killed from outside, the OOM killer): retry it on a
                        # fresh worker; twice is the pair's doing.
                        failing = slot.pending[0][0]
                        if failing in retried:
                            fail_first(slot, WORKER_ERROR)
                        else:
                            retried.add(failing)
                            del slots[slot.worker.conn]
                            start(self._replace(slot.worker), slot.pending)
                        continue
                    item = slot.pending.popleft()
                    assert item[0] == index, "workers answer in order"
                    finished = time.monotonic()
                    with self._lock:
                        self.stats.max_remote_s = max(
                            self.stats.max_remote_s, finished - slot.started
                        )
                    done(item, Verdict(verdict, reason, extracted))
                    slot.started = finished
                    if not slot.pending:
                        next_chunk(slot)
                now = time.monotonic()
                for slot in list(slots.values()):
                    if slot.pending and now - slot.started > deadline:
                        fail_first(slot, TIMEOUT)
        except BaseException:
            # Interrupted (Ctrl-C) or failed mid-chunk: these workers' state
            # is unknown, so they are replaced by fresh ones on next use.
            for slot in slots.values():
                self._forget(slot.worker)
            raise
