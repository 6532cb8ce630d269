"""The store: atomic versioned commits, idempotent appends, lineage, reads and diffs."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pytest

from store.diff import diff_versions
from store.lineage import Lineage, TableRef
from store.record import SAMPLE_SCHEMA, to_table, validate_sample
from store.store import Store, StoreError


def test_commit_creates_versions_and_reads_them_back(store, rows, lineage):
    first = store.commit("t", to_table(rows(20)), lineage=lineage)
    assert (first.version, first.rows_written, first.created) == (0, 20, True)
    second = store.commit("t", to_table(rows(10, start=20)), lineage=lineage)
    assert (second.version, second.rows_written) == (1, 10)
    assert store.read("t", 0).height == 20
    assert store.read("t").height == 30
    assert store.tables() == ["t"]
    assert store.info("t").rows == 30 and store.info("t", 0).rows == 20


def test_append_skips_rows_already_present_and_repeats_in_input(store, rows, lineage):
    store.commit("t", to_table(rows(10)), lineage=lineage)
    again = store.commit("t", to_table(rows(10) + rows(5, start=8)), lineage=lineage)
    # 0..9 present; 8..12 adds 10..12 once; the repeated 8, 9 are skipped too.
    assert (again.rows_written, again.rows_skipped) == (3, 12)
    nothing = store.commit("t", to_table(rows(13)), lineage=lineage)
    assert nothing.created is False and nothing.version == again.version
    ids = store.read("t", columns=["sample_id"]).get_column("sample_id")
    assert ids.n_unique() == ids.len() == 13


def test_overwrite_replaces_the_rows_but_keeps_history(store, rows, lineage):
    store.commit("t", to_table(rows(10)), lineage=lineage)
    result = store.commit("t", to_table(rows(4, start=100)), lineage=lineage, mode="overwrite")
    assert result.version == 1
    assert store.read("t").height == 4
    assert store.read("t", 0).height == 10


def test_content_hash_column_is_recomputed_on_write(store, rows, lineage):
    table = to_table(rows(5))
    forged = table.set_column(
        table.schema.get_field_index("content_hash"),
        SAMPLE_SCHEMA.field("content_hash"),
        pa.array(["forged"] * 5),
    )
    store.commit("t", forged, lineage=lineage)
    stored = store.read("t", columns=["content_hash"]).get_column("content_hash").to_list()
    assert sorted(stored) == sorted(table.column("content_hash").to_pylist())


def test_lineage_is_recorded_per_commit(store, rows):
    parent = TableRef("inputs", 3)
    store.commit(
        "t",
        to_table(rows(3)),
        lineage=Lineage(writer="w1", flow_run_id="run-1", config_hash="abc", parents=(parent,)),
    )
    store.commit("t", to_table(rows(3, start=3)), lineage=Lineage(writer="w2"))
    history = store.history("t")
    assert [c.version for c in history] == [1, 0]
    oldest = history[-1]
    assert oldest.lineage is not None
    assert (oldest.lineage.writer, oldest.lineage.flow_run_id, oldest.lineage.config_hash) == (
        "w1",
        "run-1",
        "abc",
    )
    assert oldest.lineage.parents == (parent,)
    assert oldest.lineage.code_version  # package version, plus the git commit in a checkout
    assert oldest.rows_added == 3
    assert history[0].lineage.writer == "w2"


def test_upsert_updates_changed_rows_and_inserts_new_ones(store, rows, lineage):
    base = rows(6)
    store.commit("t", to_table(base), lineage=lineage)
    changed = validate_sample({**base[0], "kept": False, "filter_reason": "too_long"})
    result = store.upsert("t", to_table([changed, base[1], *rows(1, start=50)]), lineage=lineage)
    # base[1] is unchanged: matched but not rewritten.
    assert (result.rows_written, result.rows_skipped) == (2, 1)
    now = store.read("t").sort("sample_id")
    assert now.height == 7
    assert now.filter(pl.col("sample_id") == base[0]["sample_id"])["kept"].to_list() == [False]


def test_delete_removes_rows_in_one_commit_and_old_versions_keep_them(store, rows, lineage):
    base = rows(5)
    store.commit("t", to_table(base), lineage=lineage)
    result = store.delete("t", [base[0]["sample_id"], "no-such-id"], lineage=lineage)
    assert (result.rows_written, result.rows_skipped, result.version) == (1, 1, 1)
    assert store.read("t").height == 4 and store.read("t", 0).height == 5


def test_diff_counts_added_removed_changed_and_composition(store, rows, lineage):
    base = rows(12)
    store.commit("t", to_table(base), lineage=lineage)
    store.delete("t", [base[0]["sample_id"], base[1]["sample_id"]], lineage=lineage)
    moved = validate_sample({**base[2], "domain": "science"})  # changed and moved to a new group
    store.upsert("t", to_table([moved, *rows(3, start=100)]), lineage=lineage)
    diff = diff_versions(store, "t", 0, store.latest_version("t"))
    assert (diff.added, diff.removed, diff.changed, diff.unchanged) == (3, 2, 1, 9)
    assert (diff.old_rows, diff.new_rows) == (12, 13)
    by_group = {(r["domain"], r["track"], r["source"]): r for r in diff.composition}
    assert sum(r["old"] for r in diff.composition) == 12
    assert sum(r["new"] for r in diff.composition) == 13
    science = by_group[("science", moved["track"], moved["source"])]
    assert (science["old"], science["new"], science["changed"]) == (0, 1, 1)
    assert diff.examples["changed"] == [moved["sample_id"]]


def test_content_hash_ignores_order_and_tracks_content(store, rows, lineage, tmp_path):
    data = rows(8)
    store.commit("a", to_table(data), lineage=lineage)
    other = Store(tmp_path / "other")
    other.commit("a", to_table(list(reversed(data))), lineage=lineage)
    assert store.content_hash("a") == other.content_hash("a")
    other.commit("a", to_table(rows(1, start=99)), lineage=lineage)
    assert store.content_hash("a") != other.content_hash("a")


def test_iter_batches_streams_the_version_in_schema(store, rows, lineage):
    store.commit("t", to_table(rows(30)), lineage=lineage)
    batches = list(store.iter_batches("t", batch_rows=7))
    assert sum(b.num_rows for b in batches) == 30
    assert all(b.schema.equals(SAMPLE_SCHEMA) for b in batches)
    only = next(store.iter_batches("t", columns=["sample_id", "prompt"]))
    assert only.schema.names == ["sample_id", "prompt"]


def test_unknown_table_and_version_errors_say_what_exists(store, rows, lineage):
    store.commit("known", to_table(rows(2)), lineage=lineage)
    with pytest.raises(StoreError, match=r"no table 'missing'.*known"):
        store.read("missing")
    with pytest.raises(StoreError, match=r"known@5: no such version \(versions 0..0\)"):
        store.read("known", 5)


@pytest.mark.parametrize("name", ["Upper", "has space", "../escape", "", "-lead"])
def test_bad_table_names_are_refused(store, rows, lineage, name):
    with pytest.raises(StoreError, match="invalid table name"):
        store.commit(name, to_table(rows(1)), lineage=lineage)


def test_schema_mismatch_is_a_clear_error(store, lineage):
    with pytest.raises(StoreError, match=r"missing: \['sample_id'"):
        store.commit("t", pa.table({"prompt": ["x"]}), lineage=lineage)


def test_object_store_uri_passes_through_unchanged():
    remote = Store("s3://bucket/prefix/", {"AWS_REGION": "eu-west-1"})
    assert remote.root == "s3://bucket/prefix"
    assert remote.uri("toy") == "s3://bucket/prefix/toy"
    assert remote.storage_options == {"AWS_REGION": "eu-west-1"}


def test_table_ref_parsing():
    assert TableRef.parse("toy@3") == TableRef("toy", 3)
    assert TableRef.parse("toy") == TableRef("toy", None)
    with pytest.raises(ValueError, match="must be a number"):
        TableRef.parse("toy@latest")
