"""Import with validation: good rows committed, bad rows quarantined with line and reason."""

from __future__ import annotations

import json
import random

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.cli import main as r1f
from store.ingest import import_file
from store.store import StoreError

BAD_KINDS = {
    "broken_json": lambda row: json.dumps(row)[:-7],
    "bad_track": lambda row: json.dumps({**row, "track": "thinking"}),
    "missing_completion": lambda row: json.dumps(
        {k: v for k, v in row.items() if k != "completion"}
    ),
    "wrong_type": lambda row: json.dumps({**row, "seed": "seven"}),
    "unknown_field": lambda row: json.dumps({**row, "metadata": {}}),
    "not_an_object": lambda row: json.dumps([row]),
}


def write_jsonl(path, raw_row, n, bad_every=None, seed=0):
    """n lines; with bad_every, every such line (1-based) is malformed. Returns {line: kind}."""
    rng = random.Random(seed)
    planted = {}
    with path.open("w") as fh:
        for i in range(n):
            line = i + 1
            row = raw_row(i)
            if bad_every and line % bad_every == 0:
                kind = rng.choice(sorted(BAD_KINDS))
                planted[line] = kind
                fh.write(BAD_KINDS[kind](row) + "\n")
            else:
                fh.write(json.dumps(row) + "\n")
    return planted


def test_100k_rows_with_1_percent_malformed(store, raw_row, lineage, tmp_path):
    path = tmp_path / "samples.jsonl"
    planted = write_jsonl(path, raw_row, 100_000, bad_every=100)
    report = import_file(store, path, "imported", lineage=lineage)
    assert (report.rows_read, report.valid, report.invalid) == (100_000, 99_000, 1_000)
    assert (report.written, report.version) == (99_000, 0)
    assert store.read("imported").height == 99_000

    quarantine = store.read("imported.quarantine").sort("line")
    assert quarantine.height == 1_000
    assert quarantine.get_column("line").to_list() == sorted(planted)
    reasons = dict(zip(quarantine["line"].to_list(), quarantine["reason"].to_list(), strict=True))
    fields = dict(zip(quarantine["line"].to_list(), quarantine["field"].to_list(), strict=True))
    expect = {
        "broken_json": (None, "invalid JSON"),
        "bad_track": ("track", "'thinking' is not one of"),
        "missing_completion": ("completion", "missing"),
        "wrong_type": ("seed", "expected an integer"),
        "unknown_field": ("metadata", "unknown field"),
        "not_an_object": (None, "expected a JSON object"),
    }
    for line, kind in planted.items():
        field, fragment = expect[kind]
        assert fields[line] == field, (line, kind)
        assert fragment in reasons[line], (line, kind, reasons[line])
    # The raw text is kept, so nothing is lost.
    first_bad = min(planted)
    raw = quarantine.filter(pl.col("line") == first_bad)["raw"][0]
    assert raw == path.read_text().splitlines()[first_bad - 1]

    # Import lineage names the file and its digest.
    commit = store.history("imported")[0]
    assert commit.lineage.extra["source_sha256"] == report.source_sha256

    # A rerun (e.g. after a crash) adds nothing anywhere.
    again = import_file(store, path, "imported", lineage=lineage)
    assert (again.written, again.already_present, again.version) == (0, 99_000, 0)
    assert store.latest_version("imported.quarantine") == 0
    assert store.read("imported.quarantine").height == 1_000


def test_duplicate_sample_ids_in_a_file_are_quarantined_with_the_first_line(
    store, raw_row, lineage, tmp_path
):
    path = tmp_path / "dupes.jsonl"
    rows = [raw_row(1), raw_row(2), raw_row(1, completion="other text, same identity")]
    path.write_text(
        "\n".join(json.dumps(r) for r in rows) + "\n\n"
    )  # trailing blank line is no row
    report = import_file(store, path, "t", lineage=lineage)
    assert (report.valid, report.invalid, report.rows_read) == (2, 1, 3)
    row = store.read("t.quarantine").row(0, named=True)
    assert row["line"] == 3 and "first seen at line 1" in row["reason"]


def test_non_utf8_line_is_quarantined(store, raw_row, lineage, tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps(raw_row(1)).encode() + b"\n" + b'{"prompt": "caf\xe9"}\n')
    report = import_file(store, path, "t", lineage=lineage)
    assert (report.valid, report.invalid) == (1, 1)
    assert "not UTF-8" in store.read("t.quarantine")["reason"][0]


def test_parquet_import_validates_rows(store, raw_row, lineage, tmp_path):
    good = [raw_row(i) for i in range(20)]
    bad = {**raw_row(99), "track": "other"}
    path = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist([*good, bad]), path)
    report = import_file(store, path, "t", lineage=lineage)
    assert (report.valid, report.invalid) == (20, 1)
    assert store.read("t.quarantine")["line"].to_list() == [21]


def test_file_level_errors_name_the_file(store, lineage, tmp_path):
    with pytest.raises(StoreError, match="no such file"):
        import_file(store, tmp_path / "nope.jsonl", "t", lineage=lineage)
    csv = tmp_path / "rows.csv"
    csv.write_text("a,b\n")
    with pytest.raises(StoreError, match=r"unsupported file type '\.csv'"):
        import_file(store, csv, "t", lineage=lineage)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet")
    with pytest.raises(StoreError, match="not a readable Parquet file"):
        import_file(store, broken, "t", lineage=lineage)


def test_cli_import_exits_nonzero_only_when_nothing_valid(tmp_path, raw_row, capsys):
    root = str(tmp_path / "store")
    mixed = tmp_path / "mixed.jsonl"
    write_jsonl(mixed, raw_row, 50, bad_every=10)
    assert r1f(["datasets", "--store", root, "import", str(mixed), "--table", "t"]) == 0
    out = capsys.readouterr().out
    assert "45 valid" in out and "5 quarantined" in out

    all_bad = tmp_path / "bad.jsonl"
    all_bad.write_text('{"prompt": 1}\nnot json\n')
    assert r1f(["datasets", "--store", root, "import", str(all_bad), "--table", "u"]) == 1
    assert "no valid rows" in capsys.readouterr().err

    # A rerun of a fully imported file found valid rows: success, nothing new.
    assert r1f(["datasets", "--store", root, "import", str(mixed), "--table", "t", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["written"], report["already_present"]) == (0, 45)
