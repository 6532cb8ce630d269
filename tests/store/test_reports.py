"""Reports stored with the version they describe: in the same commit, read back per version."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import CommitProperties, DeltaTable, write_deltalake

from store.record import to_table
from store.reports import MAX_REPORTS_BYTES, REPORTS_KEY, UNREADABLE_KIND, Report
from store.store import Store, StoreError


def cost(tokens: int) -> Report:
    return Report("generation.cost", "Generation cost", {"tokens": tokens})


STEPS = Report("filter.steps", "Filter steps", {"steps": [{"step": "dedup"}]}, "Every step.")


def test_reports_travel_with_their_commit(store, rows, lineage):
    result = store.commit("t", to_table(rows(10)), lineage=lineage, reports=[cost(100), STEPS])
    found = store.reports("t", result.version)
    assert found.kinds() == ["generation.cost", "filter.steps"]  # in the order given
    first = found.reports[0]
    assert (first.report, first.version, first.writer) == (cost(100), 0, "tests")
    commit = store.history("t")[0]
    assert commit.reports == (cost(100), STEPS)
    assert commit.to_dict()["reports"] == ["generation.cost", "filter.steps"]
    assert found.to_dict()["reports"][1]["markdown"] == "Every step."


def test_reports_describe_a_version_until_an_overwrite_replaces_its_rows(store, rows, lineage):
    store.commit("t", to_table(rows(10)), lineage=lineage, reports=[cost(100), STEPS])
    store.commit("t", to_table(rows(5, start=10)), lineage=lineage)  # v1: no report
    store.commit("t", to_table(rows(5, start=15)), lineage=lineage, reports=[cost(150)])  # v2
    data = to_table(rows(3, start=20))
    store.upsert("t", data, lineage=lineage)  # v3: a merge, no report
    store.delete("t", [rows(1)[0]["sample_id"]], lineage=lineage)  # v4

    def newest(version: int) -> dict[str, int]:
        return {r.kind: r.version for r in store.reports("t", version).reports}

    assert newest(0) == {"generation.cost": 0, "filter.steps": 0}
    assert newest(1) == {"generation.cost": 0, "filter.steps": 0}
    assert newest(2) == {"filter.steps": 0, "generation.cost": 2}
    assert newest(4) == newest(3) == newest(2)
    for version, expected in ((1, cost(100)), (4, cost(150))):
        found = store.reports("t", version).get("generation.cost")
        assert found is not None and found.report == expected
    assert [r.kind for r in store.reports("t").reports] == ["filter.steps", "generation.cost"]

    # An overwrite replaces every row, so nothing before it describes the new version.
    store.commit("t", to_table(rows(4)), lineage=lineage, mode="overwrite")
    bare = store.reports("t")
    assert (bare.version, bare.reports, bare.searched_from, bare.complete) == (5, (), 5, True)
    store.commit("t", to_table(rows(2, start=50)), lineage=lineage, reports=[STEPS])
    assert newest(6) == {"filter.steps": 6} and store.reports("t", 5).reports == ()
    # Older versions keep what they had.
    assert newest(2) == {"filter.steps": 0, "generation.cost": 2}


def test_merges_and_deletes_store_their_reports(store, rows, lineage):
    data = rows(6)
    store.commit("t", to_table(data), lineage=lineage)
    changed = [{**data[0], "answer": "8"}]
    store.upsert("t", to_table(changed), lineage=lineage, reports=[cost(1)])
    store.delete("t", [data[1]["sample_id"]], lineage=lineage, reports=[STEPS])
    assert [(r.kind, r.version) for r in store.reports("t").reports] == [
        ("generation.cost", 1),
        ("filter.steps", 2),
    ]
    # A first upsert creates the table with an append: the report comes along.
    store.upsert("u", to_table(data), lineage=lineage, reports=[cost(2)])
    assert store.reports("u", 0).kinds() == ["generation.cost"]


def test_no_new_version_stores_no_report(store, rows, lineage):
    data = to_table(rows(5))
    store.commit("t", data, lineage=lineage)
    result = store.commit("t", data, lineage=lineage, reports=[cost(9)])  # adds nothing
    assert not result.created and store.latest_version("t") == 0
    assert store.reports("t").reports == ()


@pytest.mark.parametrize(
    ("report", "message"),
    [
        (Report("Generation Cost", "x"), "lowercase words joined by dots"),
        (Report("generation.cost", " "), "title"),
        (Report("generation.cost", "two\nlines"), "one line"),
        (Report("generation.cost", "x", {"ratio": float("nan")}), "not plain JSON"),
        (Report("generation.cost", "x", {"when": Path("/tmp")}), "not plain JSON"),
        (Report("generation.cost", "x", {"by": {1: 2}}), "not plain JSON"),
        (Report("generation.cost", "x", {"blob": "x" * MAX_REPORTS_BYTES}), "limit"),
    ],
)
def test_a_bad_report_is_refused_before_anything_is_written(store, rows, lineage, report, message):
    store.commit("t", to_table(rows(5)), lineage=lineage)
    with pytest.raises(StoreError, match=message) as caught:
        store.commit("t", to_table(rows(5, start=5)), lineage=lineage, reports=[report])
    assert str(caught.value).startswith("writing t: ")
    assert store.latest_version("t") == 0
    with pytest.raises(StoreError, match=message):
        store.commit("new", to_table(rows(5)), lineage=lineage, reports=[report])
    assert not store.exists("new") and not Path(store.uri("new")).exists()


def test_a_kind_given_twice_is_refused(store, rows, lineage):
    with pytest.raises(StoreError, match="given twice"):
        store.commit("t", to_table(rows(5)), lineage=lineage, reports=[cost(1), cost(2)])


def test_an_unreadable_entry_shows_up_as_such(store, rows, lineage):
    store.commit("t", to_table(rows(5)), lineage=lineage)
    row = next(store.iter_batches("t")).slice(0, 1)
    write_deltalake(
        store.uri("t"),
        pa.Table.from_batches([row]),
        mode="append",
        commit_properties=CommitProperties(custom_metadata={REPORTS_KEY: "{not json"}),
    )
    found = store.reports("t", 1)
    assert found.kinds() == [UNREADABLE_KIND]
    assert "cannot be read" in found.reports[0].report.markdown


def test_a_log_cleaned_up_before_the_boundary_is_reported(store, rows, lineage):
    store.commit("t", to_table(rows(5)), lineage=lineage, reports=[cost(5)])
    store.commit("t", to_table(rows(5, start=5)), lineage=lineage)
    store.commit("t", to_table(rows(5, start=10)), lineage=lineage)
    DeltaTable(store.uri("t")).create_checkpoint()
    # What Delta's expired-log cleanup does to entries past the retention period.
    (Path(store.uri("t")) / "_delta_log" / f"{0:020d}.json").unlink()
    found = Store(store.root).reports("t")
    assert (found.reports, found.searched_from, found.complete) == ((), 1, False)


def test_a_commit_made_outside_r1f_has_no_reports(store, tmp_path):
    write_deltalake(store.uri("raw"), pa.table({"x": [1, 2]}))
    # Any table under the root: no lineage, no reports, and no error.
    assert store.history("raw")[0].reports == ()
    assert store.reports("raw").reports == ()


def test_reports_json_is_what_was_given(store, rows, lineage):
    data = {"by_reason": {"b": 2, "a": 1}, "shares": [0.5, 0.25], "note": "ünïcode"}
    store.commit("t", to_table(rows(2)), lineage=lineage, reports=[Report("x.y", "X", data)])
    raw = DeltaTable(store.uri("t")).history()[0][REPORTS_KEY]
    assert json.loads(raw)[0]["data"] == data
    assert dict(store.reports("t").reports[0].report.data) == data
    assert list(store.reports("t").reports[0].report.data["by_reason"]) == ["b", "a"]
