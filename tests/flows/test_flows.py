"""The factory's flows against a Prefect server (the session's test harness): generate, verify,
filter and assemble, card; the versions they commit, their lineage and the card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from flows.demo import reference_rows
from generators.tasks import SOURCES
from store.lineage import Lineage
from store.record import to_table, validate_sample
from store.store import Store


def write_config(tmp_path: Path, model: Path, *, workers: int = 1, table: str = "gen") -> Path:
    """A run config small enough for a test: 8 prompts in 2 shards, 2 samples each, from a
    random tiny checkpoint, beside a table of worked solutions so that the mixture has rows."""
    config = tmp_path / "run.yaml"
    config.write_text(
        f"""
name: flows-test
seed: 0
store: {{root: {tmp_path / "store"}}}
flows: {{executor: process, workers: {workers}}}
generate:
  table: {table}
  template: r1-zero
  shard_prompts: 4
  prompts: {{sources: {{toy-arithmetic: 4, toy-greeting: 2, toy-facts: 2}}, seed: 0}}
  sampling: {{temperature: 1.0, max_tokens: 8, n: 2, seed: 0}}
  backend:
    kind: local
    local: {{model_dir: {model}, threads: 1}}
judge: {{table: {table}, workers: 1}}
filter:
  inputs: [{{table: {table}}}, {{table: ref}}]
  outputs: {{candidates: cand, mixture: mix, card_dir: {tmp_path / "cards"}}}
  execution: {{executor: local}}
  mixture:
    tracks:
      reasoning: {{target: 12}}
      non_reasoning: {{target: 6}}
"""
    )
    return config


def commit_reference(store: Store) -> None:
    tasks = [t for name in ("toy-arithmetic", "toy-greeting") for t in SOURCES[name].generate(8, 0)]
    rows = [validate_sample(row) for row in reference_rows(tasks)]
    store.commit("ref", to_table(rows), lineage=Lineage(writer="tests"))


def artifacts_of(flow_run_id: str) -> dict[str, Any]:
    """The artifacts a flow run published, by key."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)])
            )
        )
    return {a.key: a for a in found if a.key}


@pytest.mark.usefixtures("prefect_server")
def test_generate_verify_filter_and_card(tmp_path: Path, tiny_model: Path) -> None:
    from flows.factory import card, filter_and_assemble, generate, verify

    config = str(write_config(tmp_path, tiny_model))
    store = Store(tmp_path / "store")
    commit_reference(store)

    generated = generate(config)
    # One commit per shard; the lineage names the flow run that made it.
    assert (generated["prompts"], generated["shards"], generated["generated"]) == (8, 2, 16)
    assert generated["version"] == 1 and store.info("gen").rows == 16
    for version in (0, 1):
        lineage = store.commit_info("gen", version).lineage
        assert lineage is not None and lineage.flow_run_id == generated["run_id"]
        assert lineage.writer == "flow generate"

    # The flow run published the version as artifacts: card, diff, cost.
    published = artifacts_of(generated["run_id"])
    assert set(published) == {"gen-card", "gen-diff", "gen-cost"}
    assert "Generation cost" in published["gen-card"].data  # the card holds the cost report
    cost_rows = json.loads(published["gen-cost"].data)
    assert [row["samples"] for row in cost_rows] == [16]

    judged = verify(config)
    assert (judged["judged_version"], judged["version"], judged["rows"]) == (1, 2, 16)
    verdicts = store.read("gen", 2).to_dicts()
    assert all(row["verdicts"] for row in verdicts)

    # A rerun commits nothing: every shard is in the store, and every verdict.
    again = generate(config)
    assert (again["shards_skipped"], again["generated"], again["version"]) == (2, 0, 2)
    assert verify(config)["changed"] == 0

    mixed = filter_and_assemble(config)
    assert mixed["inputs"] == ["gen@2", "ref@0"]
    assert (mixed["candidates"], mixed["mixture"]) == ("cand@0", "mix@0")
    assert mixed["mixture_rows"] == store.info("mix", 0).rows > 0
    mix_lineage = store.commit_info("mix", 0).lineage
    assert mix_lineage is not None and mix_lineage.writer == "r1f filter run"
    assert mix_lineage.flow_run_id is not None and mix_lineage.flow_run_id != generated["run_id"]
    parents = [str(p) for p in mix_lineage.parents]
    assert parents == ["gen@2", "ref@0", "cand@0"]

    card_path = Path(card(config, table="mix"))
    assert card_path == Path(mixed["card"]) == tmp_path / "cards" / "mix-v0" / "README.md"
    text = card_path.read_text()
    # The card carries the reports stored with the version: steps, mixture, yield and cost.
    assert "gen@2" in text and "Yield and cost per accepted sample" in text
    front = json.dumps(text.split("\n---\n", 1)[0])
    assert "mix" in front
