"""A sandbox for untrusted Python: bubblewrap around a pre-started fork server.

Each worker of a `SandboxPool` is one bubblewrap sandbox holding one warm
`python3` (inside.py) as PID 1 of its own PID namespace. A run is a request
to that server: it forks a child, the child takes the run's limits and
executes the program, and the server watches it from outside. An assert run
forks two: the program's process and the test harness's, which calls the
program's functions through a pipe that carries plain data. The host
decides the verdict from what the server reports (exit status, captured
output, and a report line that must carry a per-run random nonce).

What is covered
---------------
- Isolation (Linux): bubblewrap with every namespace unshared (user, mount,
  PID, network, IPC, UTS, cgroup) and further user namespaces disabled; no
  network but the sandbox's own loopback; `/usr` (and the `/bin`, `/lib`
  links into it) plus two files of `/etc` read-only, and nothing else of the
  host: no `/home`, `/root`, `/run`, `/var`, `/sys`, no project tree; the
  root and `/dev` read-only; a fresh `/proc` and `/dev`; private tmpfs on
  `/tmp` and `/dev/shm`, size-bounded and wiped after every run; a new
  session, so no controlling terminal.
- A clean environment: bubblewrap starts with an empty environment and sets
  only PATH, HOME and LANG (bwrap adds PWD); none of the caller's variables
  reach the sandbox, and the server (PID 1) is not dumpable, so
  `/proc/1/environ`, `/proc/1/fd` and `/proc/1/mem` are closed to the program.
- An unprivileged uid, one per worker slot (`uid_base` + slot) when the host
  runs as root: no capabilities, `no_new_privs` (setuid binaries do not
  help). RLIMIT_NPROC is enforced because the real uid is not root, and it
  is counted per user namespace, so one slot's fork bomb cannot starve
  another slot, and a replaced worker's dying processes do not count against
  its successor.
- rlimits per run: processes (threads count, the server too), address
  space, CPU seconds, file size, open files, no core files, no locked
  memory, no POSIX message queues. A guard sampled every `poll_s` (10 ms)
  also sums the anonymous memory of all the run's processes and System V
  shared memory and message queues, so forking does not multiply the memory
  limit, and bounds the number of files in `/tmp` and `/dev/shm`.
- A wall-clock deadline enforced by the server, which then SIGKILLs every
  process in the namespace (kill(-1) from PID 1 reaches the whole namespace,
  double-forked daemons included, and nothing outside it) and reaps them
  all before it answers. The host keeps its own deadline around every
  request and replaces a worker that stops answering.
- PID 1 of a namespace ignores signals from inside it that it has no handler
  for, and the server installs none: the program cannot kill, stop or
  ptrace it.
- Capped stdout and stderr (1 MiB each by default). Past the stdout cap the
  run ends with `output_limit`; stderr past its cap is read and dropped.
- A verdict decided outside the sandbox. Stdio tests: the host compares the
  captured stdout with the expected output, which never enters the sandbox.
  Assert tests: the test code runs in a harness process of its own, not
  dumpable, which alone holds the report pipe and the nonce; the program's
  process holds no descriptor of the harness and cannot ptrace it, open its
  /proc files or take its descriptors (pidfd_getfd). The tests reach the
  program's functions through a pipe that carries plain data (None, bool,
  numbers, str, bytes, lists, tuples, dicts, sets, in either direction) and
  opaque handles to the program's other objects (calls, attributes, items,
  iteration, len and truth go to the program; equality, ordering, hashing
  and `in` stay with the harness, so no object of the program decides a
  comparison). A pass needs the harness's exit status 0 and exactly one
  report line with the run's nonce, written only after the tests returned.
  Searching the program's own interpreter (frames, `gc`, its memory) for the
  harness, patching builtins, returning objects that equal anything,
  printing "all tests passed", exiting early, writing guessed report lines:
  none of these pass (an adversarial test tries each).
- Failures of the sandbox itself (a worker that could not start, died, could
  not fork, could not set a run up) are retried on a fresh worker and then
  raised as `SandboxError` (`unverifiable` / `sandbox_error` in verdicts),
  never reported as the program's failure.
- Refusal instead of fallback: without bubblewrap, or where it cannot create
  its namespaces, `SandboxPool` raises `SandboxUnavailable` saying how to
  fix it. There is no unsandboxed mode.

What is not covered
-------------------
- No seccomp filter: the program may make any system call the kernel allows
  an unprivileged user in a user namespace; kernel bugs reachable that way
  are out of scope.
- No cgroup. Memory is bounded by RLIMIT_AS per process plus the sampled
  guard, so a burst faster than the sampling interval overshoots briefly;
  kernel memory held in socket and pipe buffers is bounded only loosely
  (open files times processes). CPU is shared by the kernel's scheduler
  alone; runs are not niced.
- A host limit hit while the program itself runs (the machine out of PIDs
  or memory) shows as the program's error; only failures before and around
  the program are recognised as the sandbox's.
- In assert tests only data and handles cross from the tests to the
  program: a test that passes a function (a key, a callback) or an object
  of its own to the program fails with `runtime_error`; the program's
  objects are read-only from the tests (no attribute assignment), a test
  cannot mutate the program's copy of an argument through its own (a list
  the program sorts in place stays unsorted in the tests), object identity
  does not cross (`f(x) is x` is False), and `isinstance` against the
  program's classes fails. Tests that read the program's source or reward
  hacks that are correct answers for the visible tests only (hard-coded
  outputs) are not the sandbox's to catch.
- Each run is a fork of the same warm interpreter: the string hash seed is
  the worker's, not fresh per run (set iteration order repeats across runs
  on one worker), and modules the server preloaded are already imported.
  The random module is reseeded per run.
- Timing side channels, the contents of the read-only system image, and
  the host's load are visible to the program.
- The interpreter is the system `python3` with its own packages, not the
  project's virtual environment.
"""

from __future__ import annotations

import json
import math
import os
import queue
import secrets
import select
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

FRAME = struct.Struct(">I")
INSIDE = Path(__file__).with_name("inside.py")
INSTALL_HINT = (
    "install bubblewrap: `apt-get install bubblewrap` (Debian, Ubuntu), "
    "`dnf install bubblewrap` (Fedora, RHEL), `pacman -S bubblewrap` (Arch), "
    "or pass SandboxConfig(bwrap=...) pointing at the binary"
)
USERNS_HINT = (
    "bubblewrap needs unprivileged user namespaces: check `sysctl user.max_user_namespaces` "
    "(must be > 0), `kernel.unprivileged_userns_clone=1` on older Debian kernels, and "
    "`kernel.apparmor_restrict_unprivileged_userns=0` (or an AppArmor profile for bwrap) "
    "on Ubuntu 24.04 and later"
)
# The server's command: compile inside.py (passed as the next argument) and run it. Python
# keeps the syntax tree of a `-c` command until the command returns, which the server never
# does; compiled here, the tree of inside.py is freed before the server starts, and every
# process of every run, which starts with the server's memory, is that much smaller.
BOOTSTRAP = (
    "import sys; exec(compile(sys.argv.pop(1), 'inside.py', 'exec'), {'__name__': '__main__'})"
)
# Host files a Python program may need; everything else of /etc stays out.
ETC_FILES = ("/etc/ld.so.cache", "/etc/localtime")


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot run on this machine; untrusted code is refused."""


class SandboxError(RuntimeError):
    """The sandbox itself failed (not the program); the run's outcome is unknown."""


@dataclass(frozen=True)
class SandboxConfig:
    """Limits and paths of the sandbox; the defaults suit competition-style programs."""

    bwrap: str = "/usr/bin/bwrap"
    # The venv's interpreter lives under /root, which the sandbox does not mount.
    python: str = "/usr/bin/python3"
    # per process (RLIMIT_AS) and, sampled, for all the run's processes together
    memory_bytes: int = 1 << 30
    # tasks of the sandbox's uid, threads and the server itself included
    max_processes: int = 32
    max_open_files: int = 256
    max_file_bytes: int = 16 << 20
    # stdout and stderr, each
    output_bytes: int = 1 << 20
    # size of each of /tmp and /dev/shm, and the files both may hold together
    tmpfs_bytes: int = 64 << 20
    max_tmp_files: int = 4096
    # first uid of the per-slot uids; used when the host runs as root
    uid_base: int = 61000
    # how often the server samples memory and tmpfs inodes while a run goes on
    poll_s: float = 0.01
    start_timeout_s: float = 20.0
    stop_timeout_s: float = 5.0
    # the host's slack over a run's own deadline before it gives the worker up
    grace_s: float = 10.0
    # new attempts on a fresh worker after a sandbox failure
    retries: int = 1

    def __post_init__(self) -> None:
        for name in (
            "memory_bytes",
            "max_processes",
            "max_open_files",
            "max_file_bytes",
            "output_bytes",
            "tmpfs_bytes",
            "max_tmp_files",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(
                    f"SandboxConfig.{name} must be positive, got {getattr(self, name)}"
                )
        if self.retries < 0:
            raise ValueError(f"SandboxConfig.retries must be >= 0, got {self.retries}")
        for name in ("poll_s", "start_timeout_s", "stop_timeout_s", "grace_s"):
            if not getattr(self, name) > 0:
                raise ValueError(
                    f"SandboxConfig.{name} must be positive, got {getattr(self, name)}"
                )


@dataclass(frozen=True)
class Run:
    """One execution of a program.

    `mode="stdio"`: the code runs as `__main__` with `stdin` on its standard
    input. `mode="assert"`: the code runs, then `tests`; if the tests define
    `check`, it is called with the object named `entry_point`.
    """

    mode: Literal["stdio", "assert"]
    code: str
    timeout_s: float
    stdin: str = ""
    tests: str = ""
    entry_point: str = ""


@dataclass
class RunResult:
    """What happened to one run, as the server saw it from outside the program."""

    exit_code: int | None
    signal: int | None
    timed_out: bool
    memory_exceeded: bool
    output_exceeded: bool
    files_exceeded: bool
    stdout: bytes
    stderr: bytes
    # The harness's report, present only when exactly one line carried this run's nonce.
    report: dict[str, Any] | None
    # More than one line carried the nonce: someone besides the harness wrote it.
    tampered: bool
    wall_s: float
    # CPU seconds of the program's main process, and its RLIMIT_CPU
    cpu_s: float
    cpu_limit_s: int
    worker_pid: int = field(default=0, compare=False)
    # Assert runs: the program runs in a process of its own beside the test harness (whose
    # status the fields above describe); how that process ended, when it did before the
    # run's end (None when it was still serving the tests).
    program_exit_code: int | None = None
    program_signal: int | None = None
    program_cpu_s: float | None = None


def cpu_seconds(timeout_s: float) -> int:
    """RLIMIT_CPU of a run: past the wall-clock limit, so the deadline normally fires first."""
    return math.floor(timeout_s) + 1


def check_available(config: SandboxConfig) -> None:
    """Raise SandboxUnavailable, saying what to do, when the sandbox cannot work here."""
    if not sys.platform.startswith("linux"):
        raise SandboxUnavailable(
            f"the code sandbox needs Linux namespaces; this is {sys.platform}, "
            "so untrusted code is refused"
        )
    if not (os.path.isfile(config.bwrap) and os.access(config.bwrap, os.X_OK)):
        raise SandboxUnavailable(
            f"bubblewrap not found at {config.bwrap}: the code sandbox refuses to run "
            f"untrusted code without it; {INSTALL_HINT}"
        )
    if not (os.path.isfile(config.python) and os.access(config.python, os.X_OK)):
        raise SandboxUnavailable(
            f"no Python interpreter at {config.python} for the sandbox; "
            "install python3 or pass SandboxConfig(python=...)"
        )


def bwrap_argv(config: SandboxConfig) -> list[str]:
    """The bubblewrap command line of one worker."""
    size = str(config.tmpfs_bytes)
    argv = [
        config.bwrap,
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        # The server must be PID 1: kill(-1) from it empties the namespace,
        # and PID 1 cannot be signalled from inside.
        "--as-pid-1",
        "--hostname",
        "sandbox",
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    for path in ETC_FILES:
        argv += ["--ro-bind-try", path, path]
    argv += [
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--size",
        size,
        "--tmpfs",
        "/dev/shm",
        "--remount-ro",
        "/dev",
        "--size",
        size,
        "--tmpfs",
        "/tmp",
        "--remount-ro",
        "/",
        "--chdir",
        "/tmp",
        "--clearenv",
        "--setenv",
        "PATH",
        "/usr/local/bin:/usr/bin:/bin",
        "--setenv",
        "HOME",
        "/tmp",
        "--setenv",
        "LANG",
        "C.UTF-8",
        "--",
        config.python,
        "-I",
        "-c",
        BOOTSTRAP,
        INSIDE.read_text(),
    ]
    return argv


class Worker:
    """One sandbox with its warm server; used by one thread at a time."""

    def __init__(self, slot: int, config: SandboxConfig) -> None:
        self.slot = slot
        self.config = config
        self.uid = config.uid_base + slot if os.geteuid() == 0 else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    def start(self) -> None:
        """Start the sandbox and wait for the server's greeting; SandboxError if it fails."""
        self.stop()
        self.starts += 1
        try:
            self.proc = subprocess.Popen(
                bwrap_argv(self.config),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={},
                close_fds=True,
                start_new_session=True,
                # Drop to the slot's uid before bwrap starts: a real uid that is
                # not root is what makes the kernel enforce RLIMIT_NPROC.
                user=self.uid,
                group=self.uid,
                extra_groups=[] if self.uid is not None else None,
            )
        except OSError as exc:
            raise SandboxError(f"could not start bubblewrap: {exc}") from exc
        header, _ = self._receive(time.monotonic() + self.config.start_timeout_s)
        if not header.get("ready"):
            self._fail(f"unexpected greeting {header!r}")

    def stop(self) -> None:
        """End this worker's sandbox and wait until none of its processes is left.

        Closing the control pipe makes the server (PID 1) exit; the kernel
        then empties its namespace before bwrap can reap it, so once bwrap
        has exited nothing of the sandbox remains. A server that does not
        exit in time is killed with its bwrap.
        """
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        try:
            proc.wait(timeout=self.config.stop_timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def run(self, job: Run, nonce: str) -> tuple[dict[str, Any], list[bytes]]:
        """Send one run to the started server and return its reply; SandboxError if it fails."""
        request = {
            "mode": job.mode,
            "code": job.code,
            "stdin": job.stdin,
            "tests": job.tests,
            "entry_point": job.entry_point,
            "timeout": job.timeout_s,
            "nonce": nonce,
            "limits": {
                "cpu_seconds": cpu_seconds(job.timeout_s),
                "memory_bytes": self.config.memory_bytes,
                "max_processes": self.config.max_processes,
                "max_open_files": self.config.max_open_files,
                "max_file_bytes": self.config.max_file_bytes,
                "output_bytes": self.config.output_bytes,
                "max_tmp_files": self.config.max_tmp_files,
                "poll_s": self.config.poll_s,
            },
        }
        body = json.dumps(request).encode()
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(FRAME.pack(len(body)) + body)
            self.proc.stdin.flush()
        except OSError as exc:
            self._fail(f"could not send the run: {exc}")
        deadline = time.monotonic() + job.timeout_s + self.config.grace_s
        header, blobs = self._receive(deadline)
        if "fault" in header:
            self._fail(f"the sandbox failed: {header['fault']}")
        if header.get("recycle"):
            # The answer stands; the worker is replaced before its next run.
            self.stop()
        return header, blobs

    def _receive(self, deadline: float) -> tuple[dict[str, Any], list[bytes]]:
        head = self._read_exact(FRAME.size, deadline)
        body = self._read_exact(FRAME.unpack(head)[0], deadline)
        try:
            header = json.loads(body)
            sizes = [int(n) for n in header.get("sizes", [])]
        except (ValueError, TypeError, AttributeError):
            self._fail(f"garbled reply {body[:200]!r}")
        blobs = [self._read_exact(n, deadline) for n in sizes]
        return header, blobs

    def _read_exact(self, n: int, deadline: float) -> bytes:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        chunks = []
        while n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self._fail("the sandbox stopped answering")
            chunk = os.read(fd, min(n, 1 << 20))
            if not chunk:
                self._fail("the sandbox exited")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def _fail(self, what: str) -> NoReturn:
        """Give the worker up and raise SandboxError with whatever bwrap or the server said."""
        proc = self.proc
        said = ""
        if proc is not None and proc.stderr is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            said = proc.stderr.read().decode(errors="replace").strip()[-2000:]
        self.stop()
        raise SandboxError(f"worker {self.slot}: {what}" + (f"; it said: {said}" if said else ""))


class SandboxPool:
    """Pre-started sandbox workers, shared by threads; `run()` blocks for a free one.

    `with SandboxPool(workers=2) as pool: result = pool.run(Run("stdio", code, 5.0))`
    """

    def __init__(self, workers: int = 2, config: SandboxConfig | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.config = config or SandboxConfig()
        check_available(self.config)
        self._workers = [Worker(slot, self.config) for slot in range(workers)]
        # bwrap's --die-with-parent ties each sandbox to the *thread* that
        # started it, so all starts happen on this one long-lived thread.
        self._starter = ThreadPoolExecutor(1, thread_name_prefix="sandbox-starter")
        self._idle: queue.Queue[Worker] = queue.Queue()
        self._closed = False
        self._lock = threading.Lock()
        try:
            for worker in self._workers:
                self._starter.submit(worker.start).result()
                self._idle.put(worker)
        except SandboxError as exc:
            self.close()
            raise SandboxUnavailable(
                f"the code sandbox could not start: {exc}. If this names user namespaces "
                f"or uid maps: {USERNS_HINT}"
            ) from exc

    @property
    def size(self) -> int:
        return len(self._workers)

    def worker_pids(self) -> list[int]:
        """The host pids of the workers' bwrap processes (0 for a worker not running)."""
        return [w.pid for w in self._workers]

    def worker_uids(self) -> list[int | None]:
        """The host uid each worker's sandbox runs as (None when the host is not root)."""
        return [w.uid for w in self._workers]

    def starts(self) -> int:
        """Worker starts so far; more than `size` means workers were replaced."""
        return sum(w.starts for w in self._workers)

    def run(self, job: Run) -> RunResult:
        """Run one program; SandboxError when the sandbox failed on every attempt."""
        if not job.timeout_s > 0 or not math.isfinite(job.timeout_s):
            raise ValueError(f"timeout_s must be a positive number, got {job.timeout_s}")
        if job.mode not in ("stdio", "assert"):
            raise ValueError(f"mode must be 'stdio' or 'assert', got {job.mode!r}")
        if self._closed:
            raise SandboxError("the sandbox pool is closed")
        worker = self._idle.get()
        try:
            failures: list[str] = []
            for _ in range(self.config.retries + 1):
                nonce = secrets.token_hex(16)
                try:
                    if self._closed:  # killed while this run was in flight (Ctrl-C)
                        raise SandboxError("the sandbox pool is closed")
                    if not worker.alive:
                        self._starter.submit(worker.start).result()
                    header, blobs = worker.run(job, nonce)
                    return _result(job, header, blobs, nonce, worker.pid)
                except SandboxError as exc:
                    failures.append(str(exc))
            raise SandboxError("; then ".join(failures))
        finally:
            self._idle.put(worker)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for worker in self._workers:
            worker.stop()
        self._starter.shutdown(wait=True)

    def kill(self) -> None:
        """End every sandbox now, runs in flight included (Ctrl-C), then close the pool.

        Killing a worker's bwrap takes its whole namespace down (the server is
        bwrap's child with `--die-with-parent`), so nothing of a run survives;
        the threads waiting on those runs get a SandboxError at once.
        """
        with self._lock:
            self._closed = True
        for worker in self._workers:
            proc = worker.proc
            if proc is not None and proc.poll() is None:
                proc.kill()
        for worker in self._workers:
            worker.stop()
        self._starter.shutdown(wait=True)

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _result(
    job: Run, header: dict[str, Any], blobs: list[bytes], nonce: str, worker_pid: int
) -> RunResult:
    stdout, stderr, report_blob = blobs
    reports = []
    for line in report_blob.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("nonce") == nonce:
            reports.append(record)
    report = reports[0] if len(reports) == 1 else None
    if report is not None and report.get("status") == "setup_failed":
        raise SandboxError(f"the run could not be set up: {report.get('error', '')}")
    program = header.get("program") or {}
    return RunResult(
        exit_code=header["exit_code"],
        signal=header["signal"],
        timed_out=header["timed_out"],
        memory_exceeded=header["memory_exceeded"],
        output_exceeded=header["output_exceeded"],
        files_exceeded=header["files_exceeded"],
        stdout=stdout,
        stderr=stderr,
        report=report,
        tampered=len(reports) > 1,
        wall_s=header["wall_s"],
        cpu_s=header["cpu_s"],
        cpu_limit_s=cpu_seconds(job.timeout_s),
        worker_pid=worker_pid,
        program_exit_code=program.get("exit_code"),
        program_signal=program.get("signal"),
        program_cpu_s=program.get("cpu_s"),
    )
