"""Generation into the store: resumable, and independent of how prompts were chunked."""

from __future__ import annotations

import pytest

from flows.generate import generate_into_store
from generators.tasks import SOURCES
from store.lineage import Lineage
from store.store import Store


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    from generators.backends.local import LocalBackend
    from trainer.init import init_checkpoint, model_args
    from trainer.tokenizer import MIN_VOCAB_SIZE, train_tokenizer

    tasks = [t for s in SOURCES.values() for t in s.generate(20, seed=0)]
    tokenizer = train_tokenizer(
        [t.prompt + t.solution for t in tasks], vocab_size=MIN_VOCAB_SIZE + 64
    )
    args = model_args("tiny", None)
    out, _ = init_checkpoint(args, 0, tmp_path_factory.mktemp("model"), tokenizer=tokenizer)
    return LocalBackend(out)


def tasks(n_per_source=1):
    return [t for s in SOURCES.values() for t in s.generate(n_per_source, seed=3)]


def run(store, backend, items, chunk):
    return generate_into_store(
        store,
        "gen",
        backend,
        items,
        temperature=1.0,
        max_tokens=12,
        n=2,
        seed=5,
        lineage=Lineage(writer="tests"),
        chunk_prompts=chunk,
    )


def test_samples_do_not_depend_on_chunking_and_reruns_add_nothing(backend, tmp_path):
    items = tasks()
    one = Store(tmp_path / "one")
    report = run(one, backend, items, chunk=64)
    assert (report.prompts, report.generated, report.already_present) == (8, 16, 0)
    assert one.latest_version("gen") == 0

    # A run interrupted after half the prompts, then finished: same table content.
    two = Store(tmp_path / "two")
    run(two, backend, items[:3], chunk=2)
    finished = run(two, backend, items, chunk=2)
    assert (finished.generated, finished.already_present) == (10, 6)
    assert two.content_hash("gen") == one.content_hash("gen")

    again = run(one, backend, items, chunk=64)
    assert (again.generated, again.already_present, again.version) == (0, 16, 0)


def test_generated_rows_carry_identity_and_generation_facts(backend, tmp_path):
    store = Store(tmp_path / "s")
    run(store, backend, tasks(), chunk=64)
    rows = store.read("gen").to_dicts()
    assert {r["backend"] for r in rows} == {"local"}
    assert {r["model_hash"] for r in rows} == {backend.model_hash}
    assert {r["sample_index"] for r in rows} == {0, 1}
    for r in rows:
        assert r["completion"].startswith("<think>")
        assert r["finish_reason"] in ("stop", "length")
        assert 0 < r["completion_tokens"] <= 12
        assert r["sampling"]["max_tokens"] == 12
    # Two samples of one prompt differ in seed-derived randomness, not in seed.
    by_prompt = {}
    for r in rows:
        by_prompt.setdefault(r["prompt_id"], set()).add(r["seed"])
    assert all(len(seeds) == 1 for seeds in by_prompt.values())
