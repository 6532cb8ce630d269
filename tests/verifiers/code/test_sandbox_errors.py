"""Failures of the sandbox itself: refusal without bubblewrap, retries, `sandbox_error`."""

from __future__ import annotations

import json
import resource
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from verifiers.code import CodeVerdict, SandboxConfig, SandboxPool, SandboxUnavailable, verify_code
from verifiers.code.batch import verify_jsonl
from verifiers.code.sandbox import SandboxError, Worker

PRINT_42 = {"kind": "stdio", "cases": [{"input": "", "output": "42"}]}


@pytest.fixture
def config(uid_base: int) -> SandboxConfig:
    return SandboxConfig(uid_base=uid_base + 50)


@pytest.fixture
def pool(config: SandboxConfig) -> Iterator[SandboxPool]:
    with SandboxPool(workers=1, config=config) as p:
        yield p


def test_missing_bubblewrap_is_refused_with_an_install_hint(tmp_path: Path) -> None:
    with pytest.raises(SandboxUnavailable) as raised:
        SandboxPool(workers=1, config=SandboxConfig(bwrap=str(tmp_path / "no-bwrap")))
    message = str(raised.value)
    assert "bubblewrap not found" in message
    assert "apt-get install bubblewrap" in message
    assert "refuses to run untrusted code" in message


def test_verify_jsonl_refuses_before_writing_anything(tmp_path: Path) -> None:
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(json.dumps({"completion": "print(42)", "tests": PRINT_42}) + "\n")
    with pytest.raises(SandboxUnavailable):
        verify_jsonl(
            source,
            target,
            workers=1,
            timeout=5,
            config=SandboxConfig(bwrap=str(tmp_path / "no-bwrap")),
        )
    assert not target.exists()


def test_a_bwrap_that_cannot_start_is_refused_with_a_userns_hint(tmp_path: Path) -> None:
    with pytest.raises(SandboxUnavailable) as raised:
        SandboxPool(workers=1, config=SandboxConfig(bwrap="/bin/false"))
    assert "could not start" in str(raised.value)
    assert "user namespaces" in str(raised.value)


def test_a_failed_start_is_retried(pool: SandboxPool, monkeypatch: pytest.MonkeyPatch) -> None:
    real_start = Worker.start
    failures = iter([True])

    def flaky_start(self: Worker) -> None:
        if next(failures, False):
            raise SandboxError("simulated start failure")
        real_start(self)

    pool._workers[0].stop()  # the next run must start a worker
    monkeypatch.setattr(Worker, "start", flaky_start)
    assert verify_code("print(42)", PRINT_42, pool, timeout=5) == CodeVerdict("correct", "passed")


def test_a_worker_dying_mid_run_is_retried(
    pool: SandboxPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_run = Worker.run
    killed: list[int] = []

    def dying_run(self: Worker, job: Any, nonce: str) -> Any:
        if not killed:
            assert self.proc is not None
            killed.append(self.proc.pid)
            self.proc.kill()  # this worker's own bwrap: the whole sandbox goes with it
        return real_run(self, job, nonce)

    monkeypatch.setattr(Worker, "run", dying_run)
    starts = pool.starts()
    assert verify_code("print(42)", PRINT_42, pool, timeout=5) == CodeVerdict("correct", "passed")
    assert pool.starts() == starts + 1
    assert killed and pool.worker_pids()[0] != killed[0]


def test_persistent_failure_is_unverifiable_not_incorrect(
    pool: SandboxPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_start(self: Worker) -> None:
        raise SandboxError("simulated start failure")

    pool._workers[0].stop()
    monkeypatch.setattr(Worker, "start", broken_start)
    verdict = verify_code("print(42)", PRINT_42, pool, timeout=5)
    assert (verdict.verdict, verdict.detail) == ("unverifiable", "sandbox_error")
    assert verdict.message.count("simulated start failure") == 2  # first try and the retry


@pytest.mark.skipif(resource.getrlimit(resource.RLIMIT_NPROC)[0] == 0, reason="odd host")
def test_host_process_limit_is_a_sandbox_error_and_recovers(pool: SandboxPool) -> None:
    """RLIMIT_NPROC hit while a worker starts: the check is unverifiable, then recovers.

    The limit is lowered on this (root) test process only; root's own forks
    ignore it, but the sandbox's unprivileged uid inherits it, so bwrap cannot
    create the sandbox's first process.
    """
    if pool.worker_uids()[0] is None:
        pytest.skip("needs root: the host's uid is then not the sandbox's")
    pool._workers[0].stop()
    saved = resource.getrlimit(resource.RLIMIT_NPROC)
    resource.setrlimit(resource.RLIMIT_NPROC, (1, saved[1]))
    try:
        verdict = verify_code("print(42)", PRINT_42, pool, timeout=5)
    finally:
        resource.setrlimit(resource.RLIMIT_NPROC, saved)
    assert (verdict.verdict, verdict.detail) == ("unverifiable", "sandbox_error")
    assert verify_code("print(42)", PRINT_42, pool, timeout=5) == CodeVerdict("correct", "passed")


def test_a_program_cannot_fake_a_sandbox_error(pool: SandboxPool) -> None:
    # Exit with the harness's own set-up failure status, and a report line without the nonce.
    code = (
        "import os, json\n"
        "os.write(3, json.dumps({'nonce': 'guess', 'status': 'setup_failed'}).encode() + b'\\n')\n"
        "os._exit(125)\n"
    )
    verdict = verify_code(code, PRINT_42, pool, timeout=5)
    assert (verdict.verdict, verdict.detail) == ("incorrect", "runtime_error")


def test_bad_config_is_an_error() -> None:
    with pytest.raises(ValueError, match="memory_bytes"):
        SandboxConfig(memory_bytes=0)
    with pytest.raises(ValueError, match="workers"):
        SandboxPool(workers=0)
