"""The `openai` backend against a real HTTP server on 127.0.0.1 with injected faults.

The server (`generators.backends.loopback`) answers deterministically, so every stored text
can be recomputed; faults are real socket events: answers later than the client's timeout,
429 with and without Retry-After, 500, bodies cut off mid-response, connections closed
without an answer.
"""

from __future__ import annotations

import email.utils
import time
from types import SimpleNamespace

import pytest

from generators.backends.base import BackendError, Identity, Request, Sampling, sample_seed
from generators.backends.config import BackendConfig, OpenAIConfig
from generators.backends.loopback import Faults, LoopbackServer, expected_completion
from generators.backends.openai_compatible import (
    OpenAIBackend,
    _Wait,
    retry_after_seconds,
    retry_reason,
)
from generators.generate import (
    GenerateConfig,
    PromptsConfig,
    SamplingConfig,
    generate,
    generation_cost,
    load_prompts,
    prompt_seed,
    request_variant,
)
from generators.templates import render
from store.lineage import Lineage
from store.store import Store

FAST_RETRIES = {"backoff_initial": 0.01, "backoff_max": 0.05}


def config(server, *, table="gen", n=2, max_tokens=16, shard_prompts=5, sources=None, **backend):
    options = {"timeout": 5.0, "concurrency": 8, **FAST_RETRIES, **backend}
    return GenerateConfig(
        table=table,
        backend=BackendConfig(
            kind="openai",
            openai=OpenAIConfig(base_url=server.base_url, model=server.model, **options),
        ),
        prompts=PromptsConfig(sources=sources or {"toy-arithmetic": 8, "toy-facts": 4}),
        sampling=SamplingConfig(temperature=0.7, max_tokens=max_tokens, n=n, seed=3),
        shard_prompts=shard_prompts,
    )


def expected_rows(store, cfg, backend_name="openai"):
    """sample index -> stored completion, per prompt id, recomputed from the server's rule."""
    prompts, _ = load_prompts(store, cfg.prompts)
    variant = request_variant(cfg, Identity(backend_name, "m", None))
    expected = {}
    for p in prompts:
        shown = render(cfg.template, p.prompt, track=p.track)
        seed = prompt_seed(cfg.sampling.seed, p.prompt_id, variant)
        for j in range(cfg.sampling.n):
            text, finish, tokens = expected_completion(
                shown.text, sample_seed(seed, j), cfg.sampling.max_tokens
            )
            expected[(p.prompt_id, j)] = (shown.prefix + text, finish, tokens)
    return expected


def stored(store, table):
    frame = store.read(
        table, columns=["sample_id", "prompt_id", "sample_index", "completion", "finish_reason"]
    )
    return frame.to_dicts()


def test_every_fault_kind_is_retried_and_the_run_is_exactly_once(tmp_path):
    faults = Faults(rate=0.5, slow_seconds=2.0, retry_after=0.02)
    with LoopbackServer(faults=faults) as server:
        cfg = config(server, timeout=0.4)
        store = Store(tmp_path / "store")
        report = generate(store, cfg, Lineage(writer="tests"))
    for kind in ("slow", "429", "429-bare", "500", "drop", "reset"):
        assert server.stats[kind] > 0, f"no {kind} fault was injected"
    assert {"timeout", "connection", "429", "500"} <= set(report.retries)
    # Every fault cost a retry (a pooled connection the server had closed may cost one more).
    assert sum(report.retries.values()) >= sum(server.stats[k] for k in faults.kinds)

    rows = stored(store, "gen")
    expected = expected_rows(store, cfg)
    assert report.generated == len(rows) == len(expected) == 24
    assert len({r["sample_id"] for r in rows}) == 24
    assert {(r["prompt_id"], r["sample_index"]) for r in rows} == set(expected)
    for r in rows:
        text, finish, _ = expected[(r["prompt_id"], r["sample_index"])]
        assert (r["completion"], r["finish_reason"]) == (text, finish)
    assert report.completion_tokens == sum(t for *_, t in expected.values())
    assert report.missing == 0 and report.failed_prompts == 0


def test_rerun_skips_committed_shards_without_a_request(tmp_path):
    store = Store(tmp_path / "store")
    with LoopbackServer() as server:
        cfg = config(server)
        first = generate(store, cfg, Lineage(writer="tests"))
        requests = server.stats["requests"]
        again = generate(store, cfg, Lineage(writer="tests"))
        assert server.stats["requests"] == requests  # no shard was sent again
    assert (first.shards, first.shards_skipped, first.generated) == (3, 0, 24)
    assert (again.shards_skipped, again.generated, again.already_present) == (3, 0, 24)
    assert again.version == first.version  # no new version either
    # The cost of each committed shard is in the table's log, once.
    (run,) = generation_cost(store, "gen")
    assert (run.run_id, run.shards, run.samples) == (first.run_id, 3, 24)
    assert run.completion_tokens == first.completion_tokens
    assert (run.first_version, run.last_version) == (0, 2)


def test_a_request_that_cannot_succeed_fails_alone_and_is_not_retried(tmp_path, monkeypatch):
    import generators.generate as stage

    real = stage.load_prompts

    def with_a_long_prompt(store, cfg):
        prompts, parents = real(store, cfg)
        long = stage.Prompt("too-long-1", "TOO_LONG " * 50, None, "general", "reasoning", "t")
        return [*prompts[:3], long, *prompts[3:]], parents

    monkeypatch.setattr(stage, "load_prompts", with_a_long_prompt)
    store = Store(tmp_path / "store")
    with LoopbackServer() as server:
        cfg = config(server)
        report = generate(store, cfg, Lineage(writer="tests"))
    assert server.stats["bad_request"] == 2  # one attempt for each of its 2 samples
    assert (report.failed_prompts, dict(report.failures)) == (1, {"http_400": 1})
    assert "maximum context length" in report.examples["http_400"]
    assert report.generated == 24 and report.missing == 2
    assert "too-long-1" not in set(store.read("gen").get_column("prompt_id").to_list())
    assert sum(r.failed for r in generation_cost(store, "gen")) == 1


def test_wrong_key_and_unknown_model_stop_the_run_with_one_message(tmp_path, monkeypatch):
    store = Store(tmp_path / "store")
    monkeypatch.setenv("R1F_TEST_KEY", "wrong")
    with LoopbackServer(api_key="right") as server:
        cfg = config(server, api_key_env="R1F_TEST_KEY")
        with pytest.raises(BackendError, match=r"HTTP 401.*R1F_TEST_KEY"):
            generate(store, cfg, Lineage(writer="tests"))
        monkeypatch.setenv("R1F_TEST_KEY", "right")
        other = OpenAIConfig(base_url=server.base_url, model="nope", api_key_env="R1F_TEST_KEY")
        with OpenAIBackend(other) as backend, pytest.raises(BackendError, match="HTTP 404"):
            backend.sample([Request("x", seed=1)], Sampling(max_tokens=4))
    assert not store.exists("gen")


def test_retries_that_run_out_stop_the_run_and_keep_committed_shards(tmp_path):
    store = Store(tmp_path / "store")
    with LoopbackServer() as server:
        generate(store, config(server, sources={"toy-arithmetic": 5}), Lineage(writer="tests"))
    always_500 = Faults(rate=1.0, kinds=("500",), max_faults=1000)
    with LoopbackServer(faults=always_500) as server:
        cfg = config(server, max_attempts=3)
        with pytest.raises(BackendError, match="gave up after 3 attempts"):
            generate(store, cfg, Lineage(writer="tests"))
        assert max(server.attempts.values()) == 3
    assert store.read("gen").height == 10  # the first run's shard, untouched


def test_concurrency_is_bounded(tmp_path):
    with LoopbackServer(seconds_per_token=0.01) as server:
        cfg = OpenAIConfig(base_url=server.base_url, model=server.model, concurrency=3)
        with OpenAIBackend(cfg) as backend:
            results = backend.sample(
                [Request(f"p{i}", seed=i, n=2) for i in range(8)], Sampling(max_tokens=8)
            )
    assert all(len(r.outputs) == 2 for r in results)
    assert 2 <= server.max_in_flight <= 3


def test_the_rate_limit_holds_for_the_whole_run():
    rate = 40.0
    with LoopbackServer() as server:
        cfg = OpenAIConfig(
            base_url=server.base_url, model=server.model, concurrency=64, requests_per_second=rate
        )
        with OpenAIBackend(cfg) as backend:
            started = time.monotonic()
            for call in range(2):  # the bucket spans calls: one limiter per backend
                backend.sample(
                    [Request(f"p{call}-{i}", seed=i) for i in range(50)], Sampling(max_tokens=4)
                )
    arrivals = sorted(server.arrivals)
    assert len(arrivals) == 100
    # A leaky bucket lets `rate` requests through at once, then `rate` per second: the last
    # of 100 cannot leave before (100 - rate) / rate seconds, where without the limit all
    # would arrive within a fraction of a second. (A lower bound: a loaded machine only
    # delays arrivals. The window check's slack covers requests that leave the client on
    # time but reach the server's threads in a bunch.)
    assert arrivals[-1] - started >= (100 - rate) / rate
    for i, start in enumerate(arrivals):
        within = sum(1 for t in arrivals[i:] if t - start < 1.0)
        assert within <= 2 * rate * 1.25


def test_retry_after_is_read_as_seconds_or_a_date():
    def error(value):
        headers = {} if value is None else {"retry-after": value}
        return SimpleNamespace(response=SimpleNamespace(headers=headers))

    assert retry_after_seconds(error("2.5")) == 2.5
    assert retry_after_seconds(error(None)) is None
    assert retry_after_seconds(error("soon")) is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= retry_after_seconds(error(later)) <= 31


def test_back_off_stretches_to_retry_after_up_to_its_cap():
    cfg = OpenAIConfig(base_url="http://127.0.0.1:1/v1", model="m", **FAST_RETRIES)
    wait = _Wait(cfg)

    def state(exc, attempt=1):
        outcome = SimpleNamespace(exception=lambda: exc)
        return SimpleNamespace(outcome=outcome, attempt_number=attempt)

    asks = SimpleNamespace(response=SimpleNamespace(headers={"retry-after": "3"}))
    too_much = SimpleNamespace(response=SimpleNamespace(headers={"retry-after": "9999"}))
    plain = ConnectionError("x")
    assert wait(state(asks)) == 3.0
    assert wait(state(too_much)) == cfg.retry_after_max
    assert all(0 <= wait(state(plain, a)) <= cfg.backoff_max for a in range(1, 10))
    assert retry_reason(plain) is None  # only the client's own error types are retried


def test_sample_seeds_match_the_local_engine():
    from trainer.generate import sample_seed as engine_sample_seed

    for seed in (0, 1, 2**31 + 5, 2**62):
        for j in range(4):
            assert sample_seed(seed, j) == engine_sample_seed(seed, j)
