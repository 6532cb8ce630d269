"""The generation stage on the local backend: shards, reruns, templates, prompts from a table,
a prompt that cannot be served, and the cost that each commit carries."""

from __future__ import annotations

import pyarrow as pa
import pytest

from generators.backends.config import BackendConfig, LocalConfig
from generators.generate import (
    GenerateConfig,
    PromptsConfig,
    SamplingConfig,
    generate,
    generation_cost,
)
from generators.tasks import SOURCES
from store.config import ConfigError, config_from_dict
from store.lineage import Lineage, TableRef
from store.record import SAMPLE_SCHEMA, validate_sample
from store.store import Store

ONE_OF_EACH = {name: 1 for name in SOURCES}  # 8 prompts, both tracks


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One thread: the tests run two to a machine of two cores (xdist), as the trainer's do."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def backend(tmp_path_factory, one_torch_thread):
    from generators.backends.local import LocalBackend
    from trainer.init import init_checkpoint, model_args
    from trainer.tokenizer import MIN_VOCAB_SIZE, train_tokenizer

    tasks = [t for s in SOURCES.values() for t in s.generate(20, seed=0)]
    tokenizer = train_tokenizer(
        [t.prompt + t.solution for t in tasks], vocab_size=MIN_VOCAB_SIZE + 64
    )
    out, _ = init_checkpoint(
        model_args("tiny", None), 0, tmp_path_factory.mktemp("model"), tokenizer=tokenizer
    )
    return LocalBackend(out)


def config(backend, *, shard_prompts=64, template="chat", prompts=None, table="gen"):
    return GenerateConfig(
        table=table,
        backend=BackendConfig(kind="local", local=LocalConfig(model_dir=str(backend.model_dir))),
        prompts=prompts or PromptsConfig(sources=ONE_OF_EACH, seed=3),
        sampling=SamplingConfig(temperature=1.0, max_tokens=12, n=2, seed=5),
        template=template,
        shard_prompts=shard_prompts,
    )


def run(store, backend, **kw):
    return generate(store, config(backend, **kw), Lineage(writer="tests"), backend=backend)


def test_samples_do_not_depend_on_sharding_and_reruns_add_nothing(backend, tmp_path):
    one = Store(tmp_path / "one")
    report = run(one, backend, shard_prompts=64)
    assert (report.prompts, report.shards, report.generated, report.already_present) == (
        8,
        1,
        16,
        0,
    )
    assert one.latest_version("gen") == 0

    three = Store(tmp_path / "three")
    sharded = run(three, backend, shard_prompts=3)
    assert (sharded.shards, sharded.generated) == (3, 16)
    assert three.latest_version("gen") == 2  # one commit per shard
    assert three.content_hash("gen") == one.content_hash("gen")

    again = run(one, backend, shard_prompts=3)  # another sharding finds every sample done
    assert (again.generated, again.already_present, again.shards_skipped) == (0, 16, 3)
    assert again.version == 0


def test_rows_carry_identity_generation_facts_and_the_shards_cost(backend, tmp_path):
    store = Store(tmp_path / "s")
    report = run(store, backend, shard_prompts=4)
    rows = store.read("gen").to_dicts()
    assert {r["backend"] for r in rows} == {"local"}
    assert {r["model_hash"] for r in rows} == {backend.model_hash}
    assert {r["sample_index"] for r in rows} == {0, 1}
    for r in rows:
        assert r["finish_reason"] in ("stop", "length")
        assert 0 < r["completion_tokens"] <= 12
        assert r["sampling"]["max_tokens"] == 12
        prefix = "<think>" if r["track"] == "reasoning" else "<think></think>"
        assert r["completion"].startswith(prefix)
    by_prompt: dict[str, set[int]] = {}
    for r in rows:
        by_prompt.setdefault(r["prompt_id"], set()).add(r["seed"])
    assert all(len(seeds) == 1 for seeds in by_prompt.values())

    (cost,) = generation_cost(store, "gen")
    assert (cost.run_id, cost.shards, cost.prompts, cost.samples) == (report.run_id, 2, 8, 16)
    assert cost.completion_tokens == sum(r["completion_tokens"] for r in rows)
    assert cost.completion_tokens == report.completion_tokens
    assert cost.prompt_tokens == sum(r["prompt_tokens"] for r in rows)
    assert sum(cost.finish_reasons.values()) == 16
    # Each shard's commit carries the running total: the first shard's report, the second's.
    first, second = (store.reports("gen", v).get("generation.cost") for v in (0, 1))
    assert first is not None and second is not None
    assert (first.version, second.version) == (0, 1)
    assert first.report.data["shard"]["shard"] == 0 and second.report.data["shard"]["shard"] == 1
    assert first.report.data["total"]["shards"] == 1
    assert second.report.data["total"]["samples"] == 16
    assert second.report.data["total"]["completion_tokens"] == cost.completion_tokens
    history = {c.version: c.lineage for c in store.history("gen")}
    assert "shard 2/2" in history[1].message


def test_templates_shape_the_prompt_and_the_sample_ids(backend, tmp_path):
    store = Store(tmp_path / "s")
    ids = {}
    for template in ("chat", "r1-zero", "no-reasoning"):
        table = template.replace("-", "_")
        run(store, backend, template=template, table=table)
        rows = store.read(table).to_dicts()
        ids[template] = {r["sample_id"] for r in rows}
        for r in rows:
            think = template == "r1-zero" or (template == "chat" and r["track"] == "reasoning")
            opened = r["completion"].startswith("<think></think>")
            assert opened != think, (template, r["track"], r["completion"][:20])
    assert not ids["chat"] & ids["r1-zero"]
    assert not ids["chat"] & ids["no-reasoning"]


def test_prompts_from_a_table_and_a_prompt_too_long_for_the_model(backend, tmp_path):
    store = Store(tmp_path / "s")
    tasks = [t for s in SOURCES.values() for t in s.generate(2, seed=1)][:5]
    reference = [
        validate_sample(
            {
                "prompt_id": t.prompt_id,
                "prompt": t.prompt,
                "completion": t.solution,
                "gold": t.gold,
                "domain": t.domain,
                "track": t.track,
                "source": t.source,
                "backend": "reference",
                "sample_index": i,
            }
        )
        for t in tasks
        for i in range(2)  # two rows per prompt: the stage takes each prompt once
    ]
    huge = validate_sample(
        {
            "prompt_id": "huge",
            "prompt": "count the words: " + "seven " * 3000,
            "completion": "x",
            "domain": "general",
            "track": "non_reasoning",
            "source": "planted",
            "backend": "reference",
        }
    )
    lineage = Lineage(writer="tests")
    store.commit(
        "ref", pa.Table.from_pylist([*reference, huge], schema=SAMPLE_SCHEMA), lineage=lineage
    )

    report = run(store, backend, prompts=PromptsConfig(table="ref@0"))
    assert report.prompts == 6
    assert (report.failed_prompts, dict(report.failures)) == (1, {"prompt_too_long": 1})
    assert "max_seq_len is 2048" in report.examples["prompt_too_long"]
    rows = store.read("gen").to_dicts()
    assert len(rows) == 10 and "huge" not in {r["prompt_id"] for r in rows}
    assert {r["gold"] for r in rows} == {t.gold for t in tasks}
    assert store.history("gen")[0].lineage.parents == (TableRef("ref", 0),)
    # The failed prompt is tried again by the next run, and fails again, alone.
    again = run(store, backend, prompts=PromptsConfig(table="ref@0"))
    assert (again.generated, again.failed_prompts, again.missing) == (0, 1, 2)


def test_config_errors_name_the_key():
    base = {
        "table": "gen",
        "backend": {"kind": "local", "local": {"model_dir": "m"}},
        "prompts": {"sources": {"toy-arithmetic": 2}},
    }
    assert config_from_dict(base, GenerateConfig).shard_prompts == 64
    bad = [
        ({"backend": {"kind": "openai", "local": {"model_dir": "m"}}}, "no openai: section"),
        ({"prompts": {"sources": {"toy-arithmetic": 2}, "table": "t"}}, "not both"),
        ({"sampling": {"max_tokens": 0}}, "max_tokens"),
        ({"sampling": {"n": 0}}, "n must be >= 1"),
        ({"template": "zero"}, "template"),
        ({"table": "Bad Name"}, "invalid table name"),
        ({"shard_prompts": 0}, "shard_prompts"),
        ({"sampling": {"temprature": 1.0}}, "temprature"),
    ]
    for override, message in bad:
        with pytest.raises(ConfigError, match=message):
            config_from_dict({**base, **override}, GenerateConfig, source="gen.yaml")


def test_the_example_run_config_loads():
    from pathlib import Path

    from flows.config import load_run_config

    path = Path(__file__).resolve().parents[2] / "configs" / "generate-openai.example.yaml"
    cfg = load_run_config(path)
    assert cfg.generate is not None and cfg.generate.backend.kind == "openai"
    assert cfg.judge is not None and cfg.judge.table == cfg.generate.table
