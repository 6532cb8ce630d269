"""The fork server that runs inside the sandbox, under the system Python.

The host starts this file once per worker as `python3 -I -c <bootstrap> <this
source>` inside bubblewrap (see sandbox.py), as PID 1 of the sandbox's PID namespace.
It then serves one program run per request: fork a child, give the child the
run's limits, pipes and a fresh `__main__`, let it execute the untrusted code,
and enforce the wall-clock deadline, the output caps and the memory guard
from outside the child. Because the interpreter is already started and the
common modules are already imported, a run costs a fork instead of an
interpreter start-up.

Stdlib only, and no imports from this project: the host's virtual
environment is not visible in the sandbox. Written for Python 3.9 and later,
the oldest system Python this is expected to meet.

Wire format, both directions: a 4-byte big-endian length, a JSON header of
that length, then the raw byte blobs whose sizes the header lists under
"sizes" (the reply carries stdout, stderr and the harness report that way,
since a program's output need not be text).

Assert tests run in two processes. The program's child runs the untrusted
code and then serves calls; the harness's child runs the test code, which
reaches the program's functions only through a pipe that carries plain data
(`encode` / `decode`: None, bool, int, float, complex, str, bytes, lists,
tuples, dicts, sets) and opaque handles to everything else. The harness is
not dumpable, holds the report pipe and the nonce, and the program's child
holds neither, so nothing the program does to its own interpreter (walking
frames or `gc`, reading its memory, patching builtins, returning objects that
compare equal to anything) reaches the harness's verdict.
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import ctypes
import fcntl
import gc
import importlib
import io
import json
import linecache
import os
import random
import resource
import select
import signal
import struct
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable
from typing import Any, TextIO

FRAME = struct.Struct(">I")
PR_SET_DUMPABLE = 4
# Writable places in the sandbox; wiped after every run.
SCRATCH = ("/tmp", "/dev/shm")
REPORT_FD = 3
REPORT_CAP = 64 * 1024
READ_CHUNK = 65536
# Harness exit status when the child could not be set up (our failure, not the program's).
SETUP_FAILED = 125
# Assert runs: the program's child reads calls on fd 3 and answers on fd 4; the harness's
# child holds the report pipe on fd 3, reads answers on fd 4 and writes calls on fd 5.
PROGRAM_CALLS_FD, PROGRAM_ANSWERS_FD = 3, 4
HARNESS_ANSWERS_FD, HARNESS_CALLS_FD = 4, 5
# Integers beyond this travel as hex: decimal conversion of huge ints is capped by Python.
BIG_INT = 1 << 63
# Modules most solutions import; importing them once here makes them free in every run.
PRELOAD = (
    "abc",
    "array",
    "bisect",
    "collections",
    "copy",
    "dataclasses",
    "datetime",
    "decimal",
    "enum",
    "fractions",
    "functools",
    "hashlib",
    "heapq",
    "itertools",
    "json",
    "math",
    "operator",
    "re",
    "statistics",
    "string",
    "typing",
)


class Fault(Exception):
    """The sandbox itself failed (could not fork, pipe, ...); never the program's fault."""


# ---------------------------------------------------------------------------- wire


def read_exact(fd: int, n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def send(fd: int, header: dict[str, Any], blobs: list[bytes]) -> None:
    header["sizes"] = [len(b) for b in blobs]
    body = json.dumps(header).encode()
    write_all(fd, FRAME.pack(len(body)) + body + b"".join(blobs))


def receive(fd: int) -> dict[str, Any] | None:
    head = read_exact(fd, FRAME.size)
    if head is None:
        return None
    body = read_exact(fd, FRAME.unpack(head)[0])
    if body is None:
        return None
    request: dict[str, Any] = json.loads(body)
    return request


# ---------------------------------------------------------------------------- server


def main() -> None:
    if os.getpid() != 1:
        # kill(-1) below reaches every process this uid can signal; only as
        # PID 1 of a fresh namespace is that the sandbox and nothing else.
        sys.exit("inside.py runs only as PID 1 of the sandbox's own PID namespace (see sandbox.py)")
    libc = ctypes.CDLL(None, use_errno=True)
    # Not dumpable: the program runs as the same uid as this server, and this
    # is what keeps it from ptracing the server or opening /proc/1/fd/* (the
    # host's control pipes) and /proc/1/mem.
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        sys.exit(f"prctl(PR_SET_DUMPABLE, 0) failed: {os.strerror(ctypes.get_errno())}")
    # PID 1 of a namespace only receives signals it has a handler for, so with
    # no handler at all nothing inside the sandbox can kill or stop the server.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    control_in, control_out = os.dup(0), os.dup(1)
    devnull = os.open("/dev/null", os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    # Fail at start, not on every run, where the kernel lacks pidfds (Linux < 5.3).
    os.close(os.pidfd_open(os.getpid()))
    for name in PRELOAD:
        __import__(name)
    # Hand what compiling this file and the imports left free back to the system: every
    # process of a run starts with the server's pages, and the memory guard (and any
    # per-process count) charges each process for them.
    gc.collect()
    libc.malloc_trim(0)
    # Objects that exist now are never collected again, so a forked child
    # does not copy the server's heap pages just by running the collector.
    gc.freeze()
    send(control_out, {"ready": True, "python": sys.version.split()[0]}, [])
    while True:
        request = receive(control_in)
        if request is None:
            return
        header, blobs = serve(request)
        send(control_out, header, blobs)
        if header.get("recycle"):
            return


def serve(request: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
    try:
        header, blobs = run(request)
    except (Fault, OSError) as exc:
        # Out of processes, descriptors, memory: the machine's limit, not the program's.
        return {"fault": f"{type(exc).__name__}: {exc}", "recycle": True}, []
    if not reset():
        header["recycle"] = True
    return header, blobs


def run(request: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
    limits = request["limits"]
    timeout = float(request["timeout"])
    # The nonce goes into a pipe now and leaves this process's variables, so a
    # forked child finds it only where the harness reads it (see child()).
    nonce_r, nonce_w = os.pipe()
    os.write(nonce_w, request.pop("nonce").encode())
    os.close(nonce_w)
    stdin_r, stdin_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    rep_r, rep_w = os.pipe()
    child_ends = [nonce_r, stdin_r, out_w, err_w, rep_w]
    parent_ends = [stdin_w, out_r, err_r, rep_r]
    started = time.monotonic()
    program_pid: int | None = None
    try:
        if request["mode"] == "assert":
            # Two children: the program (untrusted) and the harness that runs the tests
            # against it through the call pipes (see the module docstring).
            calls_r, calls_w = os.pipe()
            answers_r, answers_w = os.pipe()
            quiet = os.open("/dev/null", os.O_RDONLY)
            child_ends += [calls_r, calls_w, answers_r, answers_w, quiet]
            program_pid = spawn(
                lambda: program_child(request, [stdin_r, out_w, err_w, calls_r, answers_w])
            )
            pid = spawn(
                lambda: harness_child(
                    request, nonce_r, [quiet, out_w, err_w, rep_w, answers_r, calls_w]
                )
            )
        else:
            pid = spawn(lambda: child(request, nonce_r, [stdin_r, out_w, err_w, rep_w]))
    except Fault:
        for fd in (*child_ends, *parent_ends):
            os.close(fd)
        raise
    for fd in child_ends:
        os.close(fd)
    watch = Watch(pid, limits, started + timeout, program_pid)
    watch.follow(request["stdin"].encode(), stdin_w, out_r, err_r, rep_r)
    header = {
        "exit_code": watch.exit_code,
        "signal": watch.signal,
        "cpu_s": watch.cpu_s,
        "timed_out": watch.timed_out,
        "memory_exceeded": watch.memory_exceeded,
        "output_exceeded": watch.output_exceeded,
        "files_exceeded": watch.files_exceeded,
        "wall_s": time.monotonic() - started,
        # How the program's own process ended, in assert runs (where the harness is `pid`).
        "program": watch.program_status,
    }
    return header, [bytes(watch.stdout), bytes(watch.stderr), bytes(watch.report)]


def spawn(body: Callable[[], None]) -> int:
    """Fork; the child runs `body`, which never returns. Fault if the fork fails."""
    try:
        pid = os.fork()
    except OSError as exc:
        raise Fault(f"fork failed: {exc}") from exc
    if pid == 0:
        body()
        os._exit(SETUP_FAILED)  # body always exits; this is only a backstop
    return pid


class Watch:
    """Follows one child from fork to the end of the run: I/O, deadline, guards, clean-up."""

    def __init__(
        self, pid: int, limits: dict[str, Any], deadline: float, program_pid: int | None = None
    ) -> None:
        self.pid = pid
        self.program_pid = program_pid
        self.program_status: dict[str, Any] | None = None
        self.deadline = deadline
        self.output_cap = int(limits["output_bytes"])
        self.memory_cap = int(limits["memory_bytes"])
        self.files_cap = int(limits["max_tmp_files"])
        self.poll_s = float(limits["poll_s"])
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.report = bytearray()
        self.exit_code: int | None = None
        self.signal: int | None = None
        self.cpu_s = 0.0
        self.reaped = False
        self.timed_out = False
        self.memory_exceeded = False
        self.output_exceeded = False
        self.files_exceeded = False
        self.stdin_w: int | None = None

    def follow(self, stdin: bytes, stdin_w: int, out_r: int, err_r: int, rep_r: int) -> None:
        """Feed stdin and collect the outputs until the child exits or a limit ends the run.

        Takes ownership of the four descriptors and closes them.
        """
        sinks = {out_r: self.stdout, err_r: self.stderr, rep_r: self.report}
        for fd in (stdin_w, *sinks):
            os.set_blocking(fd, False)
        self.stdin_w = stdin_w
        pidfd = os.pidfd_open(self.pid)
        try:
            self._pump(stdin, stdin_w, sinks, pidfd)
        finally:
            os.close(pidfd)
            self._close_stdin()
            # Whatever is left in the namespace (daemons, stragglers, a bomb)
            # dies here; with every writer gone, the pipes drain to EOF.
            self._kill_all()
            for fd, sink in sinks.items():
                self._drain(fd, sink)
                os.close(fd)

    def _close_stdin(self) -> None:
        """The child sees EOF on stdin once our end is closed."""
        if self.stdin_w is not None:
            os.close(self.stdin_w)
            self.stdin_w = None

    def _pump(self, stdin: bytes, stdin_w: int, sinks: dict[int, bytearray], pidfd: int) -> None:
        poller = select.poll()
        for fd in sinks:
            poller.register(fd, select.POLLIN)
        poller.register(pidfd, select.POLLIN)
        pending = memoryview(stdin)
        if pending:
            poller.register(stdin_w, select.POLLOUT)
        else:
            self._close_stdin()
        next_check = time.monotonic() + self.poll_s
        while True:
            now = time.monotonic()
            if now >= self.deadline:
                self.timed_out = True
                return
            if now >= next_check:
                if self._over_limits():
                    return
                self._reap_orphans()
                if self.reaped:
                    return
                next_check = now + self.poll_s
            wait = max(0.0, min(self.deadline, next_check) - now)
            for fd, events in poller.poll(wait * 1000):
                if fd == pidfd:
                    self._reap_child()
                    return
                if fd == stdin_w:
                    pending = self._feed(pending, stdin_w, events)
                    if not pending:
                        poller.unregister(fd)
                        self._close_stdin()
                    continue
                if not self._read(fd, sinks[fd]):
                    poller.unregister(fd)
                if self.output_exceeded:
                    return

    def _feed(self, pending: memoryview, fd: int, events: int) -> memoryview:
        if events & (select.POLLERR | select.POLLHUP):
            return pending[:0]  # the child closed stdin; the rest is not wanted
        try:
            return pending[os.write(fd, pending[:READ_CHUNK]) :]
        except BlockingIOError:
            return pending
        except BrokenPipeError:
            return pending[:0]

    def _read(self, fd: int, sink: bytearray) -> bool:
        """Read what is there; False at EOF."""
        try:
            chunk = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        self._keep(sink, chunk)
        return True

    def _keep(self, sink: bytearray, chunk: bytes) -> None:
        """Past its cap stdout ends the run; stderr and the report are just cut."""
        cap = REPORT_CAP if sink is self.report else self.output_cap
        room = max(cap - len(sink), 0)
        sink += chunk[:room]
        if len(chunk) > room and sink is self.stdout:
            self.output_exceeded = True

    def _drain(self, fd: int, sink: bytearray) -> None:
        while True:
            try:
                chunk = os.read(fd, READ_CHUNK)
            except BlockingIOError:
                return
            if not chunk:
                return
            self._keep(sink, chunk)

    def _over_limits(self) -> bool:
        # The rough sum is cheap; the precise one walks page tables, so it only confirms.
        if memory_in_use(precise=False) > self.memory_cap and (
            memory_in_use(precise=True) > self.memory_cap
        ):
            self.memory_exceeded = True
            return True
        if scratch_files() > self.files_cap:
            self.files_exceeded = True
            return True
        return False

    def _record(self, status: int, usage: resource.struct_rusage) -> None:
        self.reaped = True
        self.cpu_s = usage.ru_utime + usage.ru_stime
        if os.WIFSIGNALED(status):
            self.signal = os.WTERMSIG(status)
        else:
            self.exit_code = os.waitstatus_to_exitcode(status)

    def _reap_child(self) -> None:
        if not self.reaped:  # _reap_orphans may have got it first
            _, status, usage = os.wait4(self.pid, 0)
            self._record(status, usage)

    def _record_program(self, status: int, usage: resource.struct_rusage) -> None:
        signalled = os.WIFSIGNALED(status)
        self.program_status = {
            "exit_code": None if signalled else os.waitstatus_to_exitcode(status),
            "signal": os.WTERMSIG(status) if signalled else None,
            "cpu_s": usage.ru_utime + usage.ru_stime,
        }

    def _reaped(self, pid: int, status: int, usage: resource.struct_rusage) -> None:
        if pid == self.pid:
            self._record(status, usage)
        elif pid == self.program_pid:
            self._record_program(status, usage)

    def _reap_orphans(self) -> None:
        """As PID 1 every orphan is ours; reap them so zombies do not eat the process budget."""
        while True:
            try:
                pid, status, usage = os.wait3(os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._reaped(pid, status, usage)

    def _kill_all(self) -> None:
        """SIGKILL every other process in the namespace and reap them all.

        kill(-1) from PID 1 reaches every process of the namespace and nothing
        outside it. A process that is dying cannot fork, and its children are
        handed to us before it can be reaped, so once waitpid says there are
        no children left and a second kill(-1) finds nobody, the namespace is
        empty.
        """
        while True:
            try:
                os.kill(-1, signal.SIGKILL)
                anyone = True
            except ProcessLookupError:
                anyone = False
            while True:
                try:
                    pid, status, usage = os.wait3(0)
                except ChildProcessError:
                    break
                self._reaped(pid, status, usage)
            if not anyone:
                return


def memory_in_use(precise: bool) -> int:
    """Bytes held by the run: anonymous memory of every process plus System V shared memory.

    The rough figure sums anonymous RSS (statm: resident minus file-backed and
    shmem pages), which counts a page a fork still shares with its parent
    once per process: cheap, and never too low. The precise figure uses the
    proportional share (Pss_Anon), which counts every page once; a process
    that made itself unreadable keeps its rough figure. /dev/shm and /tmp are
    bounded by their tmpfs size instead.
    """
    total = 0
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        held = pss_anon(name) if precise else None
        if held is None:
            held = anon_rss(name)
        total += held or 0
    return total + sysv_bytes()


def pss_anon(pid: str) -> int | None:
    """Proportional anonymous memory; None if the process is gone or not dumpable."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss_Anon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def anon_rss(pid: str) -> int | None:
    """Resident anonymous memory, shared pages included; None if the process is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            fields = f.read().split()
    except OSError:
        return None
    return (int(fields[1]) - int(fields[2])) * os.sysconf("SC_PAGE_SIZE")


def sysv_bytes() -> int:
    """Resident bytes of System V shared memory and queued message bytes in this IPC namespace."""
    total = 0
    for path, column in (("/proc/sysvipc/shm", "rss"), ("/proc/sysvipc/msg", "cbytes")):
        with open(path) as f:
            rows = [line.split() for line in f]
        if len(rows) > 1:
            at = rows[0].index(column)
            total += sum(int(row[at]) for row in rows[1:])
    return total


def sysv_objects() -> int:
    count = 0
    for kind in ("shm", "msg", "sem"):
        with open(f"/proc/sysvipc/{kind}") as f:
            count += sum(1 for _ in f) - 1
    return count


def scratch_files() -> int:
    """Inodes in use on the scratch tmpfs mounts: tmpfs inodes cost kernel memory, unbounded by size."""
    used = 0
    for path in SCRATCH:
        st = os.statvfs(path)
        used += st.f_files - st.f_ffree - 1  # the mount's root directory
    return used


def reset() -> bool:
    """Leave the sandbox as it was before the run; False if that could not be done.

    What cannot be cleaned here (a tree too deep to wipe, System V objects,
    which outlive their creator) goes with the worker: the host replaces it.
    """
    try:
        for path in SCRATCH:
            wipe(path)
    except (OSError, RecursionError):
        return False
    return sysv_objects() == 0


def wipe(directory: str) -> None:
    for entry in os.scandir(directory):
        if entry.is_dir(follow_symlinks=False):
            os.chmod(entry.path, 0o700)  # the program may have locked itself out
            wipe(entry.path)
            os.rmdir(entry.path)
        else:
            os.unlink(entry.path)


# ---------------------------------------------------------------------------- child: stdio


def child(request: dict[str, Any], nonce_r: int, fds: list[int]) -> None:
    """Runs in the forked child of a stdio run; never returns. `fds` become stdin, stdout,
    stderr and fd 3 (the report)."""
    nonce = os.read(nonce_r, 256).decode()
    try:
        place(fds)
    except BaseException:
        # Best effort on the report pipe's own descriptor, in case it is still open.
        line = json.dumps({"nonce": nonce, "status": "setup_failed", "error": "placing fds"})
        with contextlib.suppress(BaseException):
            os.write(fds[REPORT_FD], line.encode() + b"\n")
        os._exit(SETUP_FAILED)
    outlet = Outlet(nonce)
    del nonce
    try:
        setup(request, outlet, dumpable=True)
    except BaseException:
        outlet.report({"status": "setup_failed", "error": traceback.format_exc()[-2000:]})
        os._exit(SETUP_FAILED)
    try:
        status = harness(request, outlet)
    except BaseException as exc:
        # The program broke the harness itself: exhausted memory while it was
        # reporting, replaced a module it uses, ...
        with contextlib.suppress(BaseException):
            outlet.fail(classify(exc), exc)
        status = 1
    os._exit(status)


def place(fds: list[int]) -> None:
    """Make fds[i] descriptor i and close every other descriptor (the control pipes above all)."""
    # Copies above the target range first, so no dup2 overwrites a source still needed.
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, len(fds)) for fd in fds]
    for target, fd in enumerate(high):
        os.dup2(fd, target)
    os.closerange(len(fds), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    for fd in range(3, len(fds)):
        os.set_inheritable(fd, False)


def setup(request: dict[str, Any], outlet: Outlet | None, *, dumpable: bool) -> None:
    os.chdir("/tmp")
    os.umask(0o077)
    limit_resources(request["limits"])
    if dumpable:
        # An ordinary process is dumpable (the server is not); programs may read /proc/self/fd.
        # The assert harness stays as the server made it: not dumpable, so the program's
        # process (same uid) can neither ptrace it nor open its /proc files.
        ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
    # Every child would otherwise share the random state the server drew at import.
    random.seed()
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8")
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace"
    )
    if outlet is not None:
        outlet.streams = [sys.stdout, sys.stderr]
    sys.argv = ["solution.py"]


def limit_resources(limits: dict[str, Any]) -> None:
    pairs = {
        resource.RLIMIT_AS: int(limits["memory_bytes"]),
        resource.RLIMIT_CPU: int(limits["cpu_seconds"]),
        resource.RLIMIT_FSIZE: int(limits["max_file_bytes"]),
        resource.RLIMIT_NOFILE: int(limits["max_open_files"]),
        resource.RLIMIT_NPROC: int(limits["max_processes"]),
        resource.RLIMIT_CORE: 0,
        resource.RLIMIT_MEMLOCK: 0,
        resource.RLIMIT_MSGQUEUE: 0,
    }
    for which, value in pairs.items():
        _, ceiling = resource.getrlimit(which)
        if ceiling != resource.RLIM_INFINITY:
            value = min(value, ceiling)  # the host may already allow less than asked
        # The hard CPU limit a second later turns SIGXCPU (catchable) into SIGKILL.
        hard = value + 1 if which == resource.RLIMIT_CPU else value
        if ceiling != resource.RLIM_INFINITY:
            hard = min(hard, ceiling)
        resource.setrlimit(which, (value, hard))


class Outlet:
    """The harness's ways out of the child: the program's streams and the report pipe.

    The nonce lives in a closure cell of `report`, never in a frame local,
    so the program's own frame walk (sys._getframe().f_back...) shows none.
    """

    def __init__(self, nonce: str) -> None:
        # Ours, kept here because the program may rebind sys.stdout and sys.stderr.
        self.streams: list[TextIO] = []

        def report(fields: dict[str, Any]) -> None:
            line = json.dumps({"nonce": nonce, **fields}) + "\n"
            # If the program closed or replaced fd 3, the host sees no report.
            with contextlib.suppress(OSError):
                os.write(REPORT_FD, line.encode())

        self.report = report

    def flush(self) -> None:
        for stream in (sys.stdout, sys.stderr, *self.streams):
            # A closed or broken stream: what got through is all there is.
            with contextlib.suppress(BaseException):
                stream.flush()

    def fail(self, detail: str, exc: BaseException) -> int:
        """Report the exception that ended the run; the exit status to use."""
        self.flush()
        lines = traceback.format_exception_only(type(exc), exc)
        return self.error(detail, "".join(lines).strip())

    def error(self, detail: str, message: str) -> int:
        self.flush()
        self.report({"status": "error", "detail": detail, "error": message[-2000:]})
        return 1


def compile_program(source: str) -> types.CodeType:
    program = compile(source, "solution.py", "exec")
    # So that tracebacks show the offending source line.
    linecache.cache["solution.py"] = (len(source), None, source.splitlines(True), "solution.py")
    return program


def fresh_main() -> dict[str, Any]:
    module = types.ModuleType("__main__")
    module.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = module
    return module.__dict__


def harness(request: dict[str, Any], outlet: Outlet) -> int:
    """Run a stdio program; return the exit status."""
    namespace = fresh_main()
    try:
        program = compile_program(request["code"])
    except MemoryError as exc:
        return outlet.fail("memory_limit", exc)
    except BaseException as exc:
        return outlet.fail("syntax_error", exc)
    status = 0
    try:
        try:
            exec(program, namespace)
        except SystemExit as exc:
            status = exit_status(exc)
        finish()
    except BaseException as exc:
        # As `python3 -c` would print it: from the program's frames on, not the harness's.
        frames = exc.__traceback__
        traceback.print_exception(type(exc), exc, frames.tb_next if frames else None)
        return outlet.fail(classify(exc), exc)
    outlet.flush()
    outlet.report({"status": "finished", "exit_code": status})
    return status


def finish() -> None:
    """What interpreter shutdown would do: join the program's threads, run its atexit hooks."""
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()


def exit_status(exc: SystemExit) -> int:
    """The status `python3 -c` would exit with for this SystemExit."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    print(exc.code, file=sys.stderr)
    return 1


def classify(exc: BaseException) -> str:
    if isinstance(exc, AssertionError):
        return "wrong_answer"
    if isinstance(exc, MemoryError):
        return "memory_limit"
    if isinstance(exc, ProgramGone):
        return "program_exited"
    return "runtime_error"


# ---------------------------------------------------------------------------- child: assert
#
# The program's process and the harness's process talk over two pipes, one frame per message
# (the wire format above, without blobs). The harness asks, the program answers:
#   {"op": "call", "id": H, "args": [...], "kwargs": {...}}   call handle H
#   {"op": "getattr" | "iter" | "next" | "len" | "bool", "id": H[, "name": ...]}
#   {"op": "getitem", "id": H, "key": ...}
# and the answer is {"ok": value}, {"raise": [exception type name, message]} or, for "next"
# past the end, {"stop": true}. Before the calls, the program's process says {"started":
# true} once it is set up (before any of its code runs: what comes later is the program's
# word, never the sandbox's) and then {"names": {...}} (its globals) or {"error": {...}}.


class ProgramGone(BaseException):
    """The program's process closed its end or broke the protocol: no test can go on.

    A BaseException, so test code that catches Exception cannot swallow it."""


class ProgramError(Exception):
    """An exception the program raised whose type the harness does not have."""


def encode(value: Any, handles: dict[int, Any] | None) -> Any:
    """Plain data as tagged JSON; with `handles` (the program's side), anything else becomes a
    handle to an entry of that table. Subclasses of the plain types travel as the plain type:
    only their data crosses, never their methods."""
    if value is None or isinstance(value, (bool, str)):
        return value if type(value) in (bool, str, type(None)) else str.__str__(value)
    if isinstance(value, int):
        number = int(value)
        return number if -BIG_INT < number < BIG_INT else {"int": hex(number)}
    if isinstance(value, float):
        return float(value)
    if isinstance(value, complex):
        return {"complex": [value.real, value.imag]}
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": bytes(value).hex()}
    if isinstance(value, Remote):
        return {"handle": [value._id, value._type]}
    for kind, tag in SEQUENCES:
        if isinstance(value, kind):
            return {tag: [encode(item, handles) for item in value]}
    if isinstance(value, dict):
        return {"dict": [[encode(k, handles), encode(v, handles)] for k, v in value.items()]}
    if handles is None:
        raise TypeError(
            f"the tests passed a {type(value).__name__} to the program: only plain data "
            "(numbers, strings, bytes, lists, tuples, dicts, sets) and the program's own "
            "objects can cross into the sandboxed program"
        )
    if isinstance(value, types.ModuleType) and in_stdlib(str(value.__name__)):
        # The harness imports its own copy: a module is code, not data.
        return {"module": value.__name__}
    key = id(value)
    handles[key] = value
    return {"handle": [key, type(value).__name__]}


STDLIB = frozenset(getattr(sys, "stdlib_module_names", ()))


def in_stdlib(name: str) -> bool:
    return name.split(".")[0] in STDLIB


SEQUENCES = ((list, "list"), (tuple, "tuple"), (set, "set"), (frozenset, "frozenset"))


def decode(data: Any, link: Link | None, handles: dict[int, Any] | None) -> Any:
    """The value `encode` made. On the harness's side (`link`), handles become `Remote`s and
    nothing but plain data is built; on the program's side (`handles`), they are looked up."""
    if data is None or type(data) in (bool, int, float, str):
        return data
    if type(data) is not dict or len(data) != 1:
        raise ValueError(f"not an encoded value: {type(data).__name__}")
    ((tag, body),) = data.items()
    if tag == "int":
        return int(body, 16)
    if tag == "complex":
        return complex(float(body[0]), float(body[1]))
    if tag == "bytes":
        return bytes.fromhex(body)
    if tag in ("list", "tuple", "set", "frozenset"):
        if type(body) is not list:
            raise ValueError(f"{tag}: not a list")
        items = [decode(item, link, handles) for item in body]
        return {name: kind for kind, name in SEQUENCES}[tag](items)
    if tag == "dict":
        if type(body) is not list:
            raise ValueError("dict: not a list of pairs")
        return {decode(k, link, handles): decode(v, link, handles) for k, v in body}
    if tag == "module" and link is not None and type(body) is str and in_stdlib(body):
        return importlib.import_module(body)
    if tag == "handle":
        if type(body) is not list or len(body) != 2 or type(body[0]) is not int:
            raise ValueError("handle: not [id, type name]")
        if handles is not None:
            return handles[body[0]]
        if link is not None:
            return Remote(link, body[0], str(body[1])[:100])
    raise ValueError(f"unknown tag {tag!r}")


class Link:
    """One end of the call pipes. The harness's end trusts nothing it reads: a frame over
    `max_bytes`, malformed JSON or a closed pipe breaks the link for good."""

    def __init__(self, read_fd: int, write_fd: int, max_bytes: int) -> None:
        self.read_fd, self.write_fd, self.max_bytes = read_fd, write_fd, max_bytes
        self.broken = ""

    def send(self, message: dict[str, Any]) -> None:
        body = json.dumps(message).encode()
        write_all(self.write_fd, FRAME.pack(len(body)) + body)

    def receive(self) -> dict[str, Any] | None:
        """The next message; None at a clean end of the pipe."""
        head = read_exact(self.read_fd, FRAME.size)
        if head is None:
            return None
        size = FRAME.unpack(head)[0]
        if size > self.max_bytes:
            raise ValueError(f"a message of {size} bytes")
        body = read_exact(self.read_fd, size)
        if body is None:
            raise ValueError("the pipe closed inside a message")
        message = json.loads(body)
        if type(message) is not dict:
            raise ValueError("a message that is not an object")
        return message

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        """The harness's side: send a request, return the program's answer or raise
        ProgramGone (and stay broken)."""
        if self.broken:
            raise ProgramGone(self.broken)
        try:
            self.send(request)
            answer = self.receive()
        except (OSError, ValueError, RecursionError, MemoryError) as exc:
            self.broken = f"the program broke the call protocol: {type(exc).__name__}: {exc}"
            raise ProgramGone(self.broken) from None
        if answer is None:
            self.broken = "the program's process ended during the tests"
            raise ProgramGone(self.broken)
        return answer

    def call(self, request: dict[str, Any]) -> Any:
        answer = self.ask(request)
        try:
            if "ok" in answer:
                return decode(answer["ok"], self, None)
            if answer.get("stop") is True:
                raise StopIteration
            kind, message = answer["raise"]
            error = program_exception(str(kind), str(message))
        except (ValueError, KeyError, TypeError, RecursionError, ImportError) as exc:
            self.broken = f"the program broke the call protocol: {type(exc).__name__}: {exc}"
            raise ProgramGone(self.broken) from None
        raise error


def program_exception(kind: str, message: str) -> BaseException:
    """The exception to raise in the tests for one the program raised: the builtin exception
    of that name when there is one (tests catch ValueError, IndexError, ...), else
    ProgramError; leaving the program (SystemExit, KeyboardInterrupt) is ProgramGone."""
    if kind in ("SystemExit", "KeyboardInterrupt", "GeneratorExit"):
        return ProgramGone(f"the program raised {kind} during a call: {message}")
    cls = getattr(builtins, kind, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except Exception:  # an exception type that needs other arguments
            pass
    return ProgramError(f"{kind}: {message}")


class Remote:
    """A program object in the harness: calls, attributes, items, iteration, len and truth go
    to the program and come back as plain data or more handles. Equality, ordering, hashing
    and `in` are the harness's own (identity): a program object never decides a comparison,
    so an object that claims to equal anything equals nothing but itself."""

    __slots__ = ("_id", "_link", "_type")

    def __init__(self, link: Link, handle: int, type_name: str) -> None:
        object.__setattr__(self, "_link", link)
        object.__setattr__(self, "_id", handle)
        object.__setattr__(self, "_type", type_name)

    def _ask(self, op: str, **fields: Any) -> Any:
        return self._link.call({"op": op, "id": self._id, **fields})

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._ask(
            "call",
            args=[encode(a, None) for a in args],
            kwargs={k: encode(v, None) for k, v in kwargs.items()},
        )

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self._ask("getattr", name=name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("the program's objects are read-only from the tests")

    def __iter__(self) -> RemoteIterator:
        iterator = self._ask("iter")
        if not isinstance(iterator, Remote):
            raise TypeError("the program's iterator came back as data")
        return RemoteIterator(iterator)

    def __len__(self) -> int:
        size = self._ask("len")
        if type(size) is not int or size < 0:
            raise TypeError("the program's len() did not return a count")
        return size

    def __bool__(self) -> bool:
        truth = self._ask("bool")
        if type(truth) is not bool:
            raise TypeError("the program's bool() did not return a bool")
        return truth

    def __getitem__(self, key: Any) -> Any:
        return self._ask("getitem", key=encode(key, None))

    def __repr__(self) -> str:
        return f"<the program's {self._type}>"


class RemoteIterator:
    def __init__(self, iterator: Remote) -> None:
        self.iterator = iterator

    def __iter__(self) -> RemoteIterator:
        return self

    def __next__(self) -> Any:
        return self.iterator._ask("next")


def message_bytes(limits: dict[str, Any]) -> int:
    # A value larger than a quarter of the memory limit cannot be decoded within it anyway.
    return max(1 << 20, int(limits["memory_bytes"]) // 4)


def program_child(request: dict[str, Any], fds: list[int]) -> None:
    """The program's process of an assert run; never returns. `fds` become stdin, stdout,
    stderr, the calls it reads (3) and the answers it writes (4)."""
    try:
        place(fds)
    except BaseException:
        os._exit(SETUP_FAILED)  # the harness sees the pipe close before "started"
    link = Link(PROGRAM_CALLS_FD, PROGRAM_ANSWERS_FD, message_bytes(request["limits"]))
    try:
        setup(request, None, dumpable=True)
    except BaseException:
        with contextlib.suppress(BaseException):
            link.send({"setup_failed": traceback.format_exc()[-2000:]})
        os._exit(SETUP_FAILED)
    link.send({"started": True})
    # From here on the program runs: everything this process says is the program's word.
    namespace = fresh_main()
    try:
        program = compile_program(request["code"])
        exec(program, namespace)
    except BaseException as exc:
        if isinstance(exc, SyntaxError):
            detail = "syntax_error"
        elif isinstance(exc, SystemExit):
            detail, exc = (
                "runtime_error",
                RuntimeError(
                    f"the program exited with status {exit_status(exc)} before the tests ran"
                ),
            )
        else:
            frames = exc.__traceback__
            traceback.print_exception(type(exc), exc, frames.tb_next if frames else None)
            detail = classify(exc)
        message = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        with contextlib.suppress(BaseException):
            sys.stderr.flush()
            link.send({"error": {"detail": detail, "message": message[-2000:]}})
        os._exit(1)
    handles: dict[int, Any] = {}
    names = {}
    for name, value in list(namespace.items()):
        if name.startswith("__") and name.endswith("__"):
            continue
        with contextlib.suppress(Exception):
            names[name] = encode(value, handles)
    link.send({"names": names})
    serve_calls(link, handles)
    os._exit(0)


def serve_calls(link: Link, handles: dict[int, Any]) -> None:
    """Answer the harness's requests until it closes its end."""
    while True:
        try:
            request = link.receive()
        except (OSError, ValueError):
            return
        if request is None:
            return
        try:
            answer = {"ok": encode(perform(request, handles), handles)}
        except StopIteration:
            answer = {"stop": True}
        except BaseException as exc:
            # Like any uncaught exception: the program's traceback on its stderr.
            frames = exc.__traceback__
            traceback.print_exception(type(exc), exc, frames.tb_next if frames else None)
            answer = {"raise": [type(exc).__name__, str(exc)[-2000:]]}
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
        link.send(answer)


def perform(request: dict[str, Any], handles: dict[int, Any]) -> Any:
    target = handles[request["id"]]
    op = request["op"]
    if op == "call":
        args = [decode(a, None, handles) for a in request["args"]]
        kwargs = {k: decode(v, None, handles) for k, v in request["kwargs"].items()}
        return target(*args, **kwargs)
    if op == "getattr":
        return getattr(target, request["name"])
    if op == "iter":
        return iter(target)
    if op == "next":
        return next(target)
    if op == "len":
        return len(target)
    if op == "bool":
        return bool(target)
    if op == "getitem":
        return target[decode(request["key"], None, handles)]
    raise ValueError(f"unknown op {op!r}")


def harness_child(request: dict[str, Any], nonce_r: int, fds: list[int]) -> None:
    """The test harness's process of an assert run; never returns. `fds` become stdin
    (/dev/null), stdout, stderr, the report (3), the answers it reads (4), the calls it
    writes (5). It is not dumpable and the program's process holds none of its pipes."""
    nonce = os.read(nonce_r, 256).decode()
    try:
        place(fds)
    except BaseException:
        line = json.dumps({"nonce": nonce, "status": "setup_failed", "error": "placing fds"})
        with contextlib.suppress(BaseException):
            os.write(fds[REPORT_FD], line.encode() + b"\n")
        os._exit(SETUP_FAILED)
    outlet = Outlet(nonce)
    del nonce
    try:
        setup(request, outlet, dumpable=False)
    except BaseException:
        outlet.report({"status": "setup_failed", "error": traceback.format_exc()[-2000:]})
        os._exit(SETUP_FAILED)
    link = Link(HARNESS_ANSWERS_FD, HARNESS_CALLS_FD, message_bytes(request["limits"]))
    try:
        status = run_tests(request, link, outlet)
    except BaseException as exc:
        with contextlib.suppress(BaseException):
            outlet.fail(classify(exc), exc)
        status = 1
    os._exit(status)


def run_tests(request: dict[str, Any], link: Link, outlet: Outlet) -> int:
    """Wait for the program's globals, run the tests against them; the exit status."""
    try:
        first = link.receive()
    except (OSError, ValueError):
        first = None
    if first != {"started": True}:
        # Written before the program ran: a failure of the sandbox, not of the program.
        why = first.get("setup_failed", "") if isinstance(first, dict) else "no greeting"
        outlet.report({"status": "setup_failed", "error": f"program process: {why}"[-2000:]})
        return SETUP_FAILED
    try:
        loaded = link.receive()
    except (OSError, ValueError, RecursionError) as exc:
        return outlet.error("runtime_error", f"the program broke the call protocol: {exc}")
    if loaded is None:
        return outlet.error("program_exited", "the program ended before the tests ran")
    if "error" in loaded:
        error = loaded["error"] if isinstance(loaded["error"], dict) else {}
        detail = error.get("detail")
        if detail not in ("syntax_error", "runtime_error", "memory_limit", "wrong_answer"):
            detail = "runtime_error"
        return outlet.error(str(detail), str(error.get("message", "")))
    names = loaded.get("names")
    if not isinstance(names, dict):
        return outlet.error("runtime_error", "the program broke the call protocol: no names")
    namespace = fresh_main()
    for name, data in names.items():
        if isinstance(name, str) and name.isidentifier():
            try:
                namespace[name] = decode(data, link, None)
            except (ValueError, TypeError, KeyError, RecursionError, ImportError) as exc:
                return outlet.error("runtime_error", f"the program's {name!r}: {exc}")
    entry_point = request["entry_point"]
    if entry_point not in namespace:
        return outlet.error("missing_entry_point", entry_point)
    try:
        exec(compile(request["tests"], "tests.py", "exec"), namespace)
        check = namespace.get("check")
        # Only a `check` the tests define is called: one the program defines is a Remote.
        if isinstance(check, types.FunctionType):
            check(namespace[entry_point])
    except BaseException as exc:
        return outlet.fail(classify(exc), exc)
    if link.broken:
        # The tests swallowed the failure (a bare except); the run still failed.
        return outlet.error("program_exited", link.broken)
    outlet.flush()
    # The last thing the run does: a pass is only ever reported once the tests have returned.
    outlet.report({"status": "passed"})
    return 0


if __name__ == "__main__":
    main()
