"""Hostile programs against the sandbox, one per property.

Order of business: harmless probes first (no network, own PID namespace,
unprivileged uid). Every destructive program (bombs, floods, daemons) runs
through the `sealed` fixture, which repeats those probes on every worker and
fails loudly, running nothing destructive, if the sandbox is not sealed. After
each hostile program, `assert_contained` checks that nothing of it survived
on the host, that the scratch space is empty again, and that every worker
still serves.

Network probes talk only to listeners this test opens on the host's own
loopback; nothing here sends traffic to any other address. No test signals
any process: the sandbox kills its own.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from verifiers.code import CodeVerdict, Run, RunResult, SandboxConfig, SandboxPool, verify_code
from verifiers.code import sandbox as sandbox_module

REPO = Path(__file__).resolve().parents[3]
TIMEOUT = 1.0
WORKERS = 2


@pytest.fixture(scope="module")
def config(uid_base: int) -> SandboxConfig:
    # Smaller than the defaults so that every bomb hits its wall quickly.
    return SandboxConfig(
        memory_bytes=256 << 20,
        max_processes=24,
        max_file_bytes=8 << 20,
        output_bytes=256 << 10,
        tmpfs_bytes=16 << 20,
        max_tmp_files=512,
        uid_base=uid_base,
    )


@pytest.fixture(scope="module")
def pool(config: SandboxConfig) -> Iterator[SandboxPool]:
    with SandboxPool(workers=WORKERS, config=config) as p:
        yield p


def run(pool: SandboxPool, code: str, stdin: str = "", timeout: float = TIMEOUT) -> RunResult:
    return pool.run(Run("stdio", code, timeout, stdin=stdin))


def on_every_worker(pool: SandboxPool, code: str, stdin: str = "") -> list[RunResult]:
    """Run `code` until every worker has run it once (idle workers are handed out in turn)."""
    seen: dict[int, RunResult] = {}
    for _ in range(4 * pool.size):
        result = run(pool, code, stdin, timeout=10.0)
        seen.setdefault(result.worker_pid, result)
        if len(seen) == pool.size:
            break
    assert len(seen) == pool.size, "some worker never ran the probe"
    return list(seen.values())


def sandbox_tasks(pool: SandboxPool) -> tuple[int, int]:
    """(processes, threads) on the host running as one of the pool's sandbox uids."""
    uids = set(pool.worker_uids())
    processes = threads = 0
    for proc in psutil.process_iter(["uids", "num_threads"]):
        info = proc.info
        if info["uids"] is not None and info["uids"].real in uids:
            processes += 1
            threads += info["num_threads"] or 0
    return processes, threads


class Peak:
    """Samples the sandbox's host-side footprint while a hostile program runs."""

    def __init__(self, pool: SandboxPool) -> None:
        self.pool = pool
        self.processes = self.threads = self.rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        uids = set(self.pool.worker_uids())
        while not self._stop.is_set():
            processes = threads = rss = 0
            for proc in psutil.process_iter(["uids", "num_threads", "memory_info"]):
                info = proc.info
                if info["uids"] is not None and info["uids"].real in uids:
                    processes += 1
                    threads += info["num_threads"] or 0
                    # Private resident memory, as the guard counts it: file-backed pages
                    # (the interpreter, its libraries) are shared by every fork and would
                    # be counted once per process.
                    memory = info["memory_info"]
                    rss += memory.rss - memory.shared if memory else 0
            self.processes = max(self.processes, processes)
            self.threads = max(self.threads, threads)
            self.rss = max(self.rss, rss)
            time.sleep(0.01)

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------- seal probes (harmless)

SEAL_PROBE = r"""
import json, os, socket, sys
targets = json.loads(sys.stdin.read())

def connect(family, address):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(0.5)
    try:
        s.connect(address)
        return "connected"
    except OSError as exc:
        return type(exc).__name__
    finally:
        s.close()

status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
print(json.dumps({
    "uids": os.getresuid(), "gids": os.getresgid(), "groups": os.getgroups(),
    "pid_ns": os.readlink("/proc/self/ns/pid"), "net_ns": os.readlink("/proc/self/ns/net"),
    "visible_pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    "interfaces": [name for _, name in socket.if_nameindex()],
    "cap_eff": status["CapEff"].strip(), "cap_bnd": status["CapBnd"].strip(),
    "no_new_privs": status["NoNewPrivs"].strip(),
    "tcp4": connect(socket.AF_INET, ("127.0.0.1", targets["tcp4"])),
    "tcp6": connect(socket.AF_INET6, ("::1", targets["tcp6"])) if targets["tcp6"] else None,
    "unix": connect(socket.AF_UNIX, "\0" + targets["unix"]),
}))
"""


class HostListeners:
    """Listeners on this host's loopback only; the sandbox must not reach any of them."""

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []
        tcp4 = self._listen(socket.AF_INET, ("127.0.0.1", 0))
        self.tcp4_port = tcp4.getsockname()[1]
        self.tcp6_port = 0
        if socket.has_ipv6:
            try:
                self.tcp6_port = self._listen(socket.AF_INET6, ("::1", 0)).getsockname()[1]
            except OSError:
                self.tcp6_port = 0  # no IPv6 loopback on this host
        self.unix_name = f"r1f-seal-probe-{secrets.token_hex(8)}"
        self._listen(socket.AF_UNIX, "\0" + self.unix_name)

    def _listen(self, family: int, address: Any) -> socket.socket:
        s = socket.socket(family, socket.SOCK_STREAM)
        s.bind(address)
        s.listen(8)
        self.sockets.append(s)
        return s

    def targets(self) -> str:
        return json.dumps({"tcp4": self.tcp4_port, "tcp6": self.tcp6_port, "unix": self.unix_name})

    def reached(self) -> bool:
        """True if anyone knocked on any listener."""
        readable, _, _ = select.select(self.sockets, [], [], 0.2)
        return bool(readable)

    def close(self) -> None:
        for s in self.sockets:
            s.close()


def seal_problems(pool: SandboxPool) -> list[str]:
    """What is wrong with the sandbox's seal on any worker; empty when sealed."""
    problems: list[str] = []
    listeners = HostListeners()
    try:
        results = on_every_worker(pool, SEAL_PROBE, listeners.targets())
        if listeners.reached():
            problems.append("a host loopback listener was reached from the sandbox")
    finally:
        listeners.close()
    host_pid_ns = os.readlink("/proc/self/ns/pid")
    host_net_ns = os.readlink("/proc/self/ns/net")
    for result in results:
        if result.exit_code != 0:
            problems.append(f"the probe failed: {result.stderr[-300:]!r}")
            continue
        seen = json.loads(result.stdout)
        if seen["interfaces"] != ["lo"]:
            problems.append(f"network interfaces {seen['interfaces']} (only lo expected)")
        for target in ("tcp4", "tcp6", "unix"):
            if seen[target] == "connected":
                problems.append(f"connected to the host's {target} listener")
        if seen["net_ns"] == host_net_ns:
            problems.append("the host's network namespace")
        if seen["pid_ns"] == host_pid_ns:
            problems.append("the host's PID namespace")
        if 1 not in seen["visible_pids"] or len(seen["visible_pids"]) > 2:
            problems.append(f"sees processes {seen['visible_pids']} (server and itself expected)")
        if 0 in seen["uids"] or 0 in seen["gids"] or 0 in seen["groups"]:
            problems.append(f"root ids {seen['uids']} {seen['gids']} {seen['groups']}")
        if int(seen["cap_eff"], 16) or int(seen["cap_bnd"], 16):
            problems.append(f"capabilities eff={seen['cap_eff']} bnd={seen['cap_bnd']}")
        if seen["no_new_privs"] != "1":
            problems.append("no_new_privs is not set")
    # The uid is real on the host, not only inside: that is what RLIMIT_NPROC counts.
    if os.geteuid() == 0:
        for pid, uid in zip(pool.worker_pids(), pool.worker_uids(), strict=True):
            if psutil.Process(pid).uids().real != uid:
                problems.append(f"worker {pid} does not run as uid {uid} on the host")
    return problems


@pytest.fixture(scope="module")
def sealed(pool: SandboxPool) -> SandboxPool:
    """The pool, once the probes showed it sealed; otherwise a loud failure, no bomb run."""
    problems = seal_problems(pool)
    if problems:
        pytest.fail(
            "SANDBOX NOT SEALED, destructive tests were NOT run: " + "; ".join(problems),
            pytrace=False,
        )
    assert_contained(pool)
    return pool


def assert_contained(pool: SandboxPool) -> None:
    """Nothing of the last program is left: no process, no file; every worker serves."""
    processes, _ = sandbox_tasks(pool)
    assert processes == 2 * pool.size, "only each worker's bwrap and server may remain"
    listing = "import os\nprint(os.listdir('/tmp'), os.listdir('/dev/shm'))"
    for result in on_every_worker(pool, listing):
        assert result.stdout == b"[] []\n"
    ok = verify_code("print(6 * 7)", PRINTS_42, pool, timeout=10.0)
    assert ok == CodeVerdict("correct", "passed")


PRINTS_42 = {"kind": "stdio", "cases": [{"input": "", "output": "42"}]}


def test_seal_probe_catches_a_leaky_sandbox(
    config: SandboxConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probes are not vacuous: a sandbox sharing the host's network fails them.

    Harmless: the leaky sandbox runs the probe only, which knocks on this
    test's own loopback listeners.
    """
    real_argv = sandbox_module.bwrap_argv

    def leaky_argv(cfg: SandboxConfig) -> list[str]:
        argv = real_argv(cfg)
        at = argv.index("--unshare-all") + 1  # --share-net only counts after it
        return [*argv[:at], "--share-net", *argv[at:]]

    monkeypatch.setattr(sandbox_module, "bwrap_argv", leaky_argv)
    leaky = dataclasses.replace(config, uid_base=config.uid_base + 2 * WORKERS)
    with SandboxPool(workers=1, config=leaky) as pool:
        problems = seal_problems(pool)
    assert any("host's network namespace" in p for p in problems)
    assert any("listener" in p for p in problems)


def test_probe_no_network(pool: SandboxPool) -> None:
    assert not [p for p in seal_problems(pool) if "network" in p or "listener" in p]


def test_probe_own_pid_namespace(pool: SandboxPool) -> None:
    assert not [p for p in seal_problems(pool) if "PID" in p or "processes" in p]


def test_probe_unprivileged_uid(pool: SandboxPool) -> None:
    bad = [p for p in seal_problems(pool) if "root" in p or "capab" in p or "uid" in p]
    assert not bad


# ---------------------------------------------------------------- destructive (after the seal)

FORK_BOMB = """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
"""


def test_fork_bomb(sealed: SandboxPool, config: SandboxConfig) -> None:
    with Peak(sealed) as peak:
        result = run(sealed, FORK_BOMB)
    verdict = verify_code(FORK_BOMB, PRINTS_42, sealed, timeout=TIMEOUT)
    assert verdict.detail in ("timeout", "runtime_error")
    assert result.timed_out or result.exit_code
    # RLIMIT_NPROC counts the server too; bwrap outside the namespace adds one per worker.
    assert config.max_processes // 2 < peak.processes <= config.max_processes + 2 * sealed.size
    assert_contained(sealed)


THREAD_BOMB = """
import threading, time
threading.stack_size(256 * 1024)  # small stacks: the process limit, not memory, must stop it
while True:
    try:
        threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
    except RuntimeError:
        time.sleep(3600)  # hold on to every thread it got until the deadline
"""


def test_thread_bomb(sealed: SandboxPool, config: SandboxConfig) -> None:
    with Peak(sealed) as peak:
        verdict = verify_code(THREAD_BOMB, PRINTS_42, sealed, timeout=TIMEOUT)
    assert (verdict.verdict, verdict.detail) == ("incorrect", "timeout")
    # Threads count against RLIMIT_NPROC: the bomb got some, then no more.
    assert config.max_processes // 2 < peak.threads <= config.max_processes + 2 * sealed.size
    assert_contained(sealed)


MEMORY_BOMB = """
blocks = []
while True:
    blocks.append(bytearray(16 * 2**20))
"""


def test_memory_bomb(sealed: SandboxPool) -> None:
    verdict = verify_code(MEMORY_BOMB, PRINTS_42, sealed, timeout=5.0)
    assert (verdict.verdict, verdict.detail) == ("incorrect", "memory_limit")
    assert_contained(sealed)


FORKED_MEMORY_BOMB = """
import os, time
for _ in range(16):
    if os.fork() == 0:
        blocks = []
        try:
            while True:
                blocks.append(bytearray(8 * 2**20))
        except MemoryError:
            time.sleep(3600)
time.sleep(3600)
"""


def test_forked_memory_bomb_is_bounded_in_total(sealed: SandboxPool, config: SandboxConfig) -> None:
    """Sixteen processes each under RLIMIT_AS would hold 16x the limit; the guard stops them."""
    with Peak(sealed) as peak:
        verdict = verify_code(FORKED_MEMORY_BOMB, PRINTS_42, sealed, timeout=5.0)
    assert (verdict.verdict, verdict.detail) == ("incorrect", "memory_limit")
    assert peak.rss < 4 * config.memory_bytes
    assert_contained(sealed)


RECURSION_BOMB = """
import sys
sys.setrecursionlimit(10**9)
def f(n):
    return 1 + f(n + 1)
f(0)
"""


def test_recursion_bomb(sealed: SandboxPool) -> None:
    verdict = verify_code(RECURSION_BOMB, PRINTS_42, sealed, timeout=TIMEOUT)
    assert verdict.verdict == "incorrect"
    assert verdict.detail in ("runtime_error", "memory_limit", "timeout")
    assert_contained(sealed)


def test_infinite_loop(sealed: SandboxPool) -> None:
    started = time.monotonic()
    verdict = verify_code("while True:\n    pass\n", PRINTS_42, sealed, timeout=TIMEOUT)
    assert (verdict.verdict, verdict.detail) == ("incorrect", "timeout")
    assert time.monotonic() - started < TIMEOUT + 20  # a hang guard: the parent killed it
    assert_contained(sealed)


def test_long_sleep(sealed: SandboxPool) -> None:
    started = time.monotonic()
    code = "import time\ntime.sleep(3600)\nprint(42)\n"
    verdict = verify_code(code, PRINTS_42, sealed, timeout=TIMEOUT)
    assert (verdict.verdict, verdict.detail) == ("incorrect", "timeout")
    assert time.monotonic() - started < TIMEOUT + 20  # a hang guard: the parent killed it
    assert_contained(sealed)


DAEMON = """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        while True:
            with open("/tmp/daemon-alive", "a") as f:
                f.write("x")
            time.sleep(0.01)
    os._exit(0)
os.wait()
while not os.path.exists("/tmp/daemon-alive"):
    time.sleep(0.01)
print(42)
"""


def test_double_fork_daemon(sealed: SandboxPool) -> None:
    verdict = verify_code(DAEMON, PRINTS_42, sealed, timeout=5.0)
    assert verdict == CodeVerdict("correct", "passed")  # the program itself is fine...
    assert_contained(sealed)  # ...and its daemon is gone, files and all


NETWORK = """
import json, socket, sys
targets = json.loads(sys.stdin.read())
out = {"interfaces": [name for _, name in socket.if_nameindex()]}
for name, family, address in (
    ("tcp4", socket.AF_INET, ("127.0.0.1", targets["tcp4"])),
    ("tcp6", socket.AF_INET6, ("::1", targets["tcp6"])),
    ("unix", socket.AF_UNIX, "\\0" + targets["unix"]),
):
    if name == "tcp6" and not targets["tcp6"]:
        continue
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(0.5)
    try:
        s.connect(address)
        out[name] = "connected"
    except OSError as exc:
        out[name] = type(exc).__name__
# Its own loopback works, and is its own: a server here is reachable from here only.
own = socket.socket()
own.bind(("127.0.0.1", targets["tcp4"]))
own.listen(1)
c = socket.create_connection(("127.0.0.1", targets["tcp4"]), timeout=0.5)
out["own_loopback"] = own.accept()[0] is not None
print(json.dumps(out))
"""


def test_network_host_loopback_stays_unreachable(sealed: SandboxPool) -> None:
    listeners = HostListeners()
    try:
        result = run(sealed, NETWORK, listeners.targets(), timeout=10.0)
        reached = listeners.reached()
    finally:
        listeners.close()
    assert not reached
    seen = json.loads(result.stdout)
    assert seen["interfaces"] == ["lo"]
    assert "connected" not in {seen["tcp4"], seen.get("tcp6"), seen["unix"]}
    assert seen["own_loopback"] is True
    assert_contained(sealed)


WRITES = """
import json, os, sys
out = {}
for path in json.loads(sys.stdin.read()) + [os.path.expanduser("~/r1f-probe")]:
    try:
        with open(path, "w") as f:
            f.write("x")
        out[path] = "written"
    except OSError as exc:
        out[path] = exc.strerror
print(json.dumps(out))
"""


def test_writes_to_system_paths_and_home(sealed: SandboxPool) -> None:
    name = f"r1f-probe-{secrets.token_hex(4)}"
    targets = [
        f"/usr/{name}",
        f"/usr/lib/{name}",
        f"/etc/{name}",
        f"/{name}",
        f"/bin/{name}",
        f"/dev/{name}",
        f"/proc/{name}",
        f"/root/{name}",
        f"/home/{name}",
        str(Path.home() / name),
        str(REPO / name),
    ]
    result = run(sealed, WRITES, json.dumps(targets), timeout=10.0)
    seen = json.loads(result.stdout)
    assert all(seen[t] != "written" for t in targets), seen
    # The sandbox's own home is its private /tmp, gone after the run.
    assert seen["/tmp/r1f-probe"] == "written"
    assert not any(os.path.lexists(t) for t in targets)
    project = run(sealed, f"import os\nprint(os.path.exists({str(REPO)!r}))")
    assert project.stdout == b"False\n"
    assert_contained(sealed)


ENVIRONMENT = """
import glob, json, os
out = {"environ": dict(os.environ)}
for path in ["/proc/self/environ", "/proc/1/environ", *glob.glob("/proc/[0-9]*/environ")]:
    try:
        out[path] = open(path, "rb").read().decode(errors="replace")
    except OSError as exc:
        out[path] = type(exc).__name__
print(json.dumps(out))
"""


def test_caller_environment_is_invisible(
    sealed: SandboxPool, config: SandboxConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = secrets.token_hex(16)
    monkeypatch.setenv("R1F_SANDBOX_SECRET", secret)
    # A pool started now, with the secret in this process's environment; uids of
    # its own, so that its teardown does not blur the count of `sealed`'s processes.
    own_uids = dataclasses.replace(config, uid_base=config.uid_base + WORKERS)
    with SandboxPool(workers=1, config=own_uids) as fresh:
        result = run(fresh, ENVIRONMENT)
    assert secret not in result.stdout.decode()
    seen = json.loads(result.stdout)
    assert set(seen["environ"]) <= {"PATH", "HOME", "LANG", "PWD"}
    assert seen["/proc/1/environ"] == "PermissionError"
    assert_contained(sealed)


FILL_SCRATCH = """
import os, sys
name = sys.stdin.read()
sizes = {}
for root in ("/tmp", "/dev/shm"):
    i = 0
    full = False
    while not full and i < 100:
        try:
            with open(f"{root}/{name}-{i}", "wb") as f:
                while True:
                    f.write(b"x" * 2**20)
        except OSError as exc:
            full = exc.errno == 28  # ENOSPC; EFBIG just ends this file
        i += 1
    sizes[root] = sum(os.path.getsize(f"{root}/{n}") for n in os.listdir(root))
print(sizes["/tmp"], sizes["/dev/shm"])
"""


def test_filling_tmp_and_dev_shm(sealed: SandboxPool, config: SandboxConfig) -> None:
    name = f"r1f-fill-{secrets.token_hex(4)}"
    result = run(sealed, FILL_SCRATCH, name, timeout=10.0)
    tmp, shm = (int(x) for x in result.stdout.split())
    assert 0 < tmp <= config.tmpfs_bytes
    assert 0 < shm <= config.tmpfs_bytes
    # None of it landed in the host's own /tmp or /dev/shm.
    assert not [p for root in ("/tmp", "/dev/shm") for p in Path(root).glob(f"{name}-*")]
    assert_contained(sealed)


def test_many_files(sealed: SandboxPool) -> None:
    code = "i = 0\nwhile True:\n    open(f'/tmp/f{i}', 'w').close()\n    i += 1\n"
    verdict = verify_code(code, PRINTS_42, sealed, timeout=5.0)
    assert (verdict.verdict, verdict.detail) == ("incorrect", "output_limit")
    assert_contained(sealed)


SYSV_SHM = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
size = 64 * 2**20
for _ in range(int(input())):
    segment = libc.shmget(0, size, 0o1600)  # private, created, mode 0600
    if segment < 0:
        break
    address = libc.shmat(segment, None, 0)
    ctypes.memset(address, 1, size)
    libc.shmdt(ctypes.c_void_p(address))  # detached, the segment lives on
print(42)
"""


def test_system_v_shared_memory(sealed: SandboxPool, config: SandboxConfig) -> None:
    """Segments outlive their processes and escape RLIMIT_AS once detached: the guard
    counts them, and a worker left holding any is replaced."""
    tests = {"kind": "stdio", "cases": [{"input": "8", "output": "42"}]}  # 512 MiB in all
    verdict = verify_code(SYSV_SHM, tests, sealed, timeout=5.0)
    assert (verdict.verdict, verdict.detail) == ("incorrect", "memory_limit")
    starts = sealed.starts()
    small = {"kind": "stdio", "cases": [{"input": "1", "output": "42"}]}
    assert verify_code(SYSV_SHM, small, sealed, timeout=5.0).verdict == "correct"
    listing = "print(len(open('/proc/sysvipc/shm').read().splitlines()))"
    for result in on_every_worker(sealed, listing):
        assert result.stdout == b"1\n"  # the header line only
    assert sealed.starts() > starts  # workers were replaced to drop the segments
    assert_contained(sealed)


HUGE_FILE = """
import errno
for how in ("dense", "sparse"):
    try:
        with open(f"/tmp/huge-{how}", "wb") as f:
            if how == "sparse":
                f.seek(10 * 2**30)
                f.write(b"x")
            else:
                while True:
                    f.write(b"\\0" * 2**20)
    except OSError as exc:
        print(errno.errorcode[exc.errno])
"""


def test_huge_file(sealed: SandboxPool) -> None:
    result = run(sealed, HUGE_FILE, timeout=10.0)
    assert result.stdout == b"EFBIG\nEFBIG\n"
    assert_contained(sealed)


def test_stdout_flood(sealed: SandboxPool, config: SandboxConfig) -> None:
    code = "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n"
    result = run(sealed, code)
    assert result.output_exceeded and len(result.stdout) == config.output_bytes
    verdict = verify_code(code, PRINTS_42, sealed, timeout=TIMEOUT)
    assert (verdict.verdict, verdict.detail) == ("incorrect", "output_limit")
    assert_contained(sealed)


def test_stderr_flood_is_cut_not_stored(sealed: SandboxPool, config: SandboxConfig) -> None:
    code = "import sys\nwhile True:\n    sys.stderr.write('x' * 65536)\n"
    result = run(sealed, code)
    assert result.timed_out and len(result.stderr) == config.output_bytes
    assert_contained(sealed)


KILL_PARENT = """
import os, signal
for target in (os.getppid(), 1):
    for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGSTOP, signal.SIGINT, signal.SIGSEGV):
        try:
            os.kill(target, sig)
        except OSError:
            pass
try:
    os.kill(-1, signal.SIGKILL)
except OSError:
    pass
print(42)
"""


def test_killing_the_parent(sealed: SandboxPool) -> None:
    pids, starts = sealed.worker_pids(), sealed.starts()
    for _ in range(sealed.size):  # every worker gets a go
        verdict = verify_code(KILL_PARENT, PRINTS_42, sealed, timeout=5.0)
        assert verdict == CodeVerdict("correct", "passed")
    assert (sealed.worker_pids(), sealed.starts()) == (pids, starts)  # no worker was lost
    assert_contained(sealed)


CTYPES_ESCAPE = """
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long

def call(result):
    return "ok" if result == 0 else os.strerror(ctypes.get_errno())

print(json.dumps({
    "setuid(0)": call(libc.setuid(0)),
    "setgid(0)": call(libc.setgid(0)),
    "unshare(user)": call(libc.unshare(0x10000000)),
    "unshare(net)": call(libc.unshare(0x40000000)),
    "unshare(mount)": call(libc.unshare(0x00020000)),
    "mount(tmpfs)": call(libc.mount(b"none", b"/usr", b"tmpfs", 0, None)),
    "chroot": call(libc.chroot(b"/tmp")),
    "sethostname": call(libc.sethostname(b"pwned", 5)),
    "ptrace(attach, 1)": call(libc.ptrace(16, 1, None, None)),
    "kill(1, SIGKILL)": call(libc.syscall(62, 1, 9)),
}))
"""


def test_escape_through_ctypes(sealed: SandboxPool) -> None:
    pids = sealed.worker_pids()
    result = run(sealed, CTYPES_ESCAPE, timeout=10.0)
    seen = json.loads(result.stdout)
    allowed = {"kill(1, SIGKILL)"}  # "succeeds" but PID 1 ignores it, see the pids below
    assert all(v != "ok" for k, v in seen.items() if k not in allowed), seen
    assert sealed.worker_pids() == pids
    assert_contained(sealed)


POSIX_SPAWN = """
import os
inner = (
    "import json, os, socket; print(json.dumps([os.getuid(), "
    "[n for _, n in socket.if_nameindex()], os.path.exists({repo!r})]))"
)
r, w = os.pipe()
pid = os.posix_spawn(
    "/usr/bin/python3", ["python3", "-c", inner], {{}}, file_actions=[(os.POSIX_SPAWN_DUP2, w, 1)]
)
os.close(w)
data = b""
while chunk := os.read(r, 4096):
    data += chunk
os.waitpid(pid, 0)
print(data.decode().strip())
os.posix_spawn("/bin/sleep", ["sleep", "3600"], {{}}, setsid=True)  # left behind on purpose
"""


def test_escape_through_posix_spawn(sealed: SandboxPool) -> None:
    result = run(sealed, POSIX_SPAWN.format(repo=str(REPO)), timeout=10.0)
    uid, interfaces, repo_visible = json.loads(result.stdout)
    assert uid != 0 and interfaces == ["lo"] and repo_visible is False
    assert_contained(sealed)  # the sleep it left behind is gone


SUBPROCESS = """
import json, subprocess

def sh(command):
    p = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, timeout=5)
    return [p.returncode, p.stdout.strip()]

out = {
    "id -u": sh("id -u"),
    "cat /etc/shadow": sh("cat /etc/shadow"),
    "touch /usr": sh("touch /usr/r1f-probe"),
    "setpriv root": sh("setpriv --reuid=0 --regid=0 --clear-groups id -u"),
    "su root": sh("su -c 'id -u' root < /dev/null"),
}
subprocess.Popen(["sleep", "3600"], start_new_session=True)  # left behind on purpose
print(json.dumps(out))
"""


def test_escape_through_subprocess(sealed: SandboxPool) -> None:
    result = run(sealed, SUBPROCESS, timeout=10.0)
    seen = json.loads(result.stdout)
    assert seen["id -u"][0] == 0 and seen["id -u"][1] not in ("", "0")
    for attempt in ("cat /etc/shadow", "touch /usr", "setpriv root", "su root"):
        assert seen[attempt][0] != 0 and seen[attempt][1] != "0", (attempt, seen[attempt])
    assert_contained(sealed)


ADD_ONE = {"kind": "assert", "code": "def check(candidate):\n    assert candidate(2) == 3\n"}


@pytest.mark.parametrize(
    "code",
    [
        # print the verdict, forge report lines on every likely descriptor, leave early
        "import os, json\nprint('all tests passed')\n"
        "for fd in range(3, 12):\n"
        "    for nonce in ('', '0' * 32, None):\n"
        "        try:\n"
        "            os.write(fd, (json.dumps({'nonce': nonce, 'status': 'passed'}) + '\\n').encode())\n"
        "        except OSError:\n"
        "            pass\n"
        "os._exit(0)\n",
        # a clean exit before the tests run
        "import sys\nprint('all tests passed')\nsys.exit(0)\n",
        # a wrong answer that announces success on the way out
        "import atexit\natexit.register(print, 'all tests passed')\ndef f(x):\n    return x\n",
        # leave from inside the candidate, with status 0
        "def f(x):\n    raise SystemExit(0)\n",
    ],
    ids=["forged-report", "early-exit", "atexit-boast", "exit-in-candidate"],
)
def test_fake_all_tests_passed(sealed: SandboxPool, code: str) -> None:
    verdict = verify_code(code, {**ADD_ONE, "entry_point": "f"}, sealed, timeout=5.0)
    assert verdict.verdict == "incorrect", verdict
    assert_contained(sealed)


def test_fake_all_tests_passed_on_stdout(sealed: SandboxPool) -> None:
    verdict = verify_code("print('all tests passed')", PRINTS_42, sealed, timeout=5.0)
    assert (verdict.verdict, verdict.detail) == ("incorrect", "wrong_answer")


def test_one_slot_bombing_does_not_starve_the_other(sealed: SandboxPool) -> None:
    bomb = threading.Thread(target=run, args=(sealed, FORK_BOMB, "", 2.0))
    bomb.start()
    time.sleep(0.3)  # the bomb now holds one worker
    try:
        verdicts = [verify_code("print(6 * 7)", PRINTS_42, sealed, timeout=5.0) for _ in range(5)]
    finally:
        bomb.join()
    assert all(v == CodeVerdict("correct", "passed") for v in verdicts)
    assert_contained(sealed)


# ---------------------------------------------------------------- forging an assert pass
#
# The documented hole of the one-interpreter harness: a program that searches its own
# interpreter for the harness (its report function, the nonce, the frames that hold them), or
# bends what the tests rely on (builtins, equality), forged a pass. Tests and program now run
# in two processes; each program below tries one way and must be judged incorrect, against
# HumanEval-style `check(candidate)` tests and against plain top-level asserts alike.

FORGE_TESTS = {
    "check": {"kind": "assert", "code": "def check(candidate):\n    assert candidate(2) == 3\n"},
    "plain": {"kind": "assert", "code": "assert f(2) == 3\nassert f(10) == 11\n"},
}

FORGERIES = {
    # The harness's report function is a closure over the nonce: find it with gc and call it.
    "report-closure-via-gc": """
import gc, json, os
def f(x):
    for obj in gc.get_objects():
        if getattr(obj, "__name__", "") == "report" and getattr(obj, "__closure__", None):
            for cell in obj.__closure__:
                value = cell.cell_contents
                if isinstance(value, str) and len(value) == 32:
                    line = json.dumps({"nonce": value, "status": "passed"}) + "\\n"
                    for fd in range(3, 32):
                        try:
                            os.write(fd, line.encode())
                        except OSError:
                            pass
                    os._exit(0)
        if type(obj).__name__ == "Outlet":
            obj.report({"status": "passed"})
            os._exit(0)
    return x
""",
    # Walk up from the candidate's frame to the harness's and use its outlet.
    "frame-walk": """
import os, sys
def f(x):
    frame = sys._getframe()
    while frame is not None:
        for value in list(frame.f_locals.values()) + list(frame.f_globals.values()):
            if hasattr(value, "report"):
                value.report({"status": "passed"})
                os._exit(0)
        frame = frame.f_back
    return x
""",
    # Read the process's own memory for anything that looks like the nonce.
    "nonce-scan-of-own-memory": """
import json, os, re
def f(x):
    found = set()
    with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb") as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if "r" not in perms or "[v" in line:
                continue
            start, end = (int(v, 16) for v in span.split("-"))
            if end - start > 64 << 20:
                continue
            try:
                mem.seek(start)
                found.update(re.findall(rb"[0-9a-f]{32}", mem.read(end - start)))
            except (OSError, ValueError, OverflowError):
                pass
    for nonce in found:
        line = json.dumps({"nonce": nonce.decode(), "status": "passed"}) + "\\n"
        for fd in range(3, 32):
            try:
                os.write(fd, line.encode())
            except OSError:
                pass
    os._exit(0)
""",
    # An answer that claims to equal anything, and a subclass of int that does the same.
    "object-equal-to-anything": """
class Anything:
    def __eq__(self, other):
        return True
    __hash__ = object.__hash__
def f(x):
    return Anything()
""",
    "int-subclass-equal-to-anything": """
class Number(int):
    def __eq__(self, other):
        return True
    __hash__ = int.__hash__
def f(x):
    return Number(0)
""",
    # Bend what the harness and the tests use: compile, exec, callable, AssertionError.
    "patched-builtins": """
import builtins
_compile = builtins.compile
builtins.compile = lambda source, name, mode, *a, **k: _compile("pass", name, mode)
builtins.exec = lambda *args, **kwargs: None
builtins.callable = lambda obj: False
builtins.AssertionError = type("Quiet", (Exception,), {})
def f(x):
    return x
""",
    # Reach the harness's report pipe from outside: its /proc fds, pidfd_getfd, ptrace.
    "harness-pipes-from-outside": """
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
def f(x):
    line = (json.dumps({"nonce": "", "status": "passed"}) + "\\n").encode()
    for pid in [p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]:
        for fd in range(3, 8):
            try:
                with open(f"/proc/{pid}/fd/{fd}", "wb", buffering=0) as pipe:
                    pipe.write(line)
            except OSError:
                pass
        libc.ptrace(16, int(pid), None, None)  # PTRACE_ATTACH
        pidfd = libc.syscall(434, int(pid), 0)  # pidfd_open
        if pidfd >= 0:
            for fd in range(3, 8):
                got = libc.syscall(438, pidfd, fd, 0)  # pidfd_getfd
                if got >= 0:
                    os.write(got, line)
    os._exit(0)
""",
}


@pytest.mark.parametrize("tests", sorted(FORGE_TESTS))
@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_forging_an_assert_pass_fails(sealed: SandboxPool, name: str, tests: str) -> None:
    spec = {**FORGE_TESTS[tests], "entry_point": "f"}
    verdict = verify_code(FORGERIES[name], spec, sealed, timeout=10.0)
    assert verdict.verdict == "incorrect", verdict
    assert_contained(sealed)


HARNESS_PROBE = """
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
seen = {}
for pid in sorted(int(p) for p in os.listdir("/proc") if p.isdigit()):
    if pid == os.getpid():
        continue
    try:
        os.listdir(f"/proc/{pid}/fd")
        fds = "readable"
    except OSError as exc:
        fds = type(exc).__name__
    attach = libc.ptrace(16, pid, None, None)
    pidfd = libc.syscall(434, pid, 0)
    got = libc.syscall(438, pidfd, 3, 0) if pidfd >= 0 else -1
    seen[pid] = {"fd_dir": fds, "ptrace": attach, "pidfd_getfd": got}
print(json.dumps(seen))
def f(x):
    return x + 1
"""


def test_the_program_cannot_reach_the_harness(sealed: SandboxPool) -> None:
    """The program's process sees the server (PID 1) and the harness, and can open neither's
    descriptors, attach to neither, take no descriptor of theirs; a correct answer passes."""
    result = sealed.run(
        Run("assert", HARNESS_PROBE, 10.0, tests=FORGE_TESTS["check"]["code"], entry_point="f")
    )
    seen = json.loads(result.stdout)
    assert len(seen) >= 2, seen  # PID 1 and the harness at least
    for pid, attempt in seen.items():
        assert attempt == {"fd_dir": "PermissionError", "ptrace": -1, "pidfd_getfd": -1}, pid
    assert result.report is not None and result.report["status"] == "passed"
    assert_contained(sealed)
