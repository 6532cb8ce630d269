"""The fork server that runs inside the sandbox, under the system Python.

The host starts this file once per worker as `python3 -I -c <this source>`
inside bubblewrap (see sandbox.py), as PID 1 of the sandbox's PID namespace.
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
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import ctypes
import fcntl
import gc
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
    child_ends = (nonce_r, stdin_r, out_w, err_w, rep_w)
    started = time.monotonic()
    try:
        pid = os.fork()
    except OSError as exc:
        for fd in (*child_ends, stdin_w, out_r, err_r, rep_r):
            os.close(fd)
        raise Fault(f"fork failed: {exc}") from exc
    if pid == 0:
        child(request, nonce_r, [stdin_r, out_w, err_w, rep_w])
    for fd in child_ends:
        os.close(fd)
    watch = Watch(pid, limits, started + timeout)
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
    }
    return header, [bytes(watch.stdout), bytes(watch.stderr), bytes(watch.report)]


class Watch:
    """Follows one child from fork to the end of the run: I/O, deadline, guards, clean-up."""

    def __init__(self, pid: int, limits: dict[str, Any], deadline: float) -> None:
        self.pid = pid
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

    def _reap_orphans(self) -> None:
        """As PID 1 every orphan is ours; reap them so zombies do not eat the process budget."""
        while True:
            try:
                pid, status, usage = os.wait3(os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.pid:
                self._record(status, usage)

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
                if pid == self.pid:
                    self._record(status, usage)
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


# ---------------------------------------------------------------------------- child


def child(request: dict[str, Any], nonce_r: int, fds: list[int]) -> None:
    """Runs in the forked child; never returns. `fds` become stdin, stdout, stderr and fd 3."""
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
        setup(request, outlet)
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
    os.set_inheritable(REPORT_FD, False)


def setup(request: dict[str, Any], outlet: Outlet) -> None:
    os.chdir("/tmp")
    os.umask(0o077)
    limit_resources(request["limits"])
    # An ordinary process is dumpable (the server is not); programs may read /proc/self/fd.
    ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
    # Every child would otherwise share the random state the server drew at import.
    random.seed()
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8")
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace"
    )
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
        self.report({"status": "error", "detail": detail, "error": "".join(lines).strip()[-2000:]})
        return 1


def harness(request: dict[str, Any], outlet: Outlet) -> int:
    """Run the program as the test kind asks; return the exit status."""
    mode = request["mode"]
    module = types.ModuleType("__main__")
    module.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = module
    namespace = module.__dict__
    source = request["code"]
    try:
        program = compile(source, "solution.py", "exec")
    except MemoryError as exc:
        return outlet.fail("memory_limit", exc)
    except BaseException as exc:
        return outlet.fail("syntax_error", exc)
    # So that tracebacks show the offending source line.
    linecache.cache["solution.py"] = (len(source), None, source.splitlines(True), "solution.py")
    if mode == "stdio":
        return run_stdio(program, namespace, outlet)
    return run_assert(program, namespace, request, outlet)


def run_stdio(program: types.CodeType, namespace: dict[str, Any], outlet: Outlet) -> int:
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


def run_assert(
    program: types.CodeType, namespace: dict[str, Any], request: dict[str, Any], outlet: Outlet
) -> int:
    entry_point = request["entry_point"]
    try:
        exec(program, namespace)
        if entry_point not in namespace:
            outlet.flush()
            outlet.report(
                {"status": "error", "detail": "missing_entry_point", "error": entry_point}
            )
            return 1
        exec(compile(request["tests"], "tests.py", "exec"), namespace)
        check = namespace.get("check")
        if callable(check):
            check(namespace[entry_point])
        finish()
    except BaseException as exc:
        return outlet.fail(classify(exc), exc)
    outlet.flush()
    # The last thing the run does: a pass is only ever reported once the
    # tests have returned and the program's threads have finished.
    outlet.report({"status": "passed"})
    return 0


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
    return "runtime_error"


if __name__ == "__main__":
    main()
