"""Releases: zstd Parquet shards + manifest (+ card) that `datasets` loads offline."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from data_cards.from_store import release_card_writer
from store.record import SAMPLE_SCHEMA, to_table
from store.release import export_release, verify_release
from store.store import StoreError


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))


def test_export_writes_verified_shards_that_datasets_loads_offline(
    store, rows, lineage, tmp_path, offline
):
    import datasets

    data = rows(300)
    store.commit("t", to_table(data), lineage=lineage)
    out = tmp_path / "release"
    release = export_release(
        store, "t", 0, out, write_card=release_card_writer(store), shard_bytes=64 * 1024
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == release.manifest
    assert manifest["rows"] == 300 and len(manifest["shards"]) > 1
    assert manifest["content_hash"] == store.content_hash("t", 0)
    assert sum(s["rows"] for s in manifest["shards"]) == 300
    for shard in manifest["shards"]:
        meta = pq.ParquetFile(out / shard["path"]).metadata
        assert meta.row_group(0).column(0).compression == "ZSTD"
        assert pq.read_schema(out / shard["path"]).equals(SAMPLE_SCHEMA, check_metadata=False)
    assert verify_release(out) == []

    files = [str(out / s["path"]) for s in manifest["shards"]]
    by_files = datasets.load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "c1"))
    by_dir = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "c2"))
    for loaded in (by_files, by_dir):
        train = loaded["train"]
        assert train.num_rows == 300
        assert sorted(train["sample_id"]) == sorted(r["sample_id"] for r in data)

    card = (out / "README.md").read_text()
    assert card.startswith("---\n")
    for plot in (out / "plots").glob("*.png"):
        assert f"plots/{plot.name}" in card
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((out / "plots").glob("*.png"))


def test_tampered_or_extra_shards_are_reported(store, rows, lineage, tmp_path):
    store.commit("t", to_table(rows(50)), lineage=lineage)
    out = tmp_path / "release"
    manifest = export_release(store, "t", 0, out, shard_bytes=4 * 1024).manifest
    first = out / manifest["shards"][0]["path"]
    data = bytearray(first.read_bytes())
    data[100] ^= 0xFF
    first.write_bytes(bytes(data))
    (out / "data" / "stray.parquet").write_bytes(b"x")
    (out / manifest["shards"][1]["path"]).unlink()
    problems = verify_release(out)
    assert any("sha256 differs" in p for p in problems)
    assert any("stray.parquet: not in the manifest" in p for p in problems)
    assert any(manifest["shards"][1]["path"] + ": missing" in p for p in problems)


def test_export_refuses_a_non_empty_target_and_leaves_no_partial_dir(
    store, rows, lineage, tmp_path
):
    store.commit("t", to_table(rows(5)), lineage=lineage)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "file").write_text("keep me")
    with pytest.raises(StoreError, match="not empty"):
        export_release(store, "t", 0, taken)
    assert (taken / "file").read_text() == "keep me"

    def failing_card(staging, manifest):
        raise RuntimeError("card failed")

    with pytest.raises(RuntimeError):
        export_release(store, "t", 0, tmp_path / "new", write_card=failing_card)
    assert not (tmp_path / "new").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".new")] == []


def test_old_versions_export_as_they_were(store, rows, lineage, tmp_path):
    store.commit("t", to_table(rows(10)), lineage=lineage)
    store.commit("t", to_table(rows(5, start=10)), lineage=lineage)
    assert export_release(store, "t", 0, tmp_path / "v0").manifest["rows"] == 10
    assert export_release(store, "t", 1, tmp_path / "v1").manifest["rows"] == 15
