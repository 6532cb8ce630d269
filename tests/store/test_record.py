"""The Sample record: validation, deterministic ids, content hashes."""

from __future__ import annotations

import pyarrow as pa
import pytest

from store.record import (
    CONTENT_FIELDS,
    SAMPLE_SCHEMA,
    RecordError,
    content_hash_for,
    sample_id_for,
    to_table,
    validate_sample,
    with_content_hashes,
)


def test_valid_row_is_completed_with_ids_and_nulls(raw_row):
    row = validate_sample(raw_row(1))
    assert list(row) == SAMPLE_SCHEMA.names
    assert len(row["sample_id"]) == 32 and len(row["prompt_id"]) == 32
    assert row["verdicts"] == [] and row["kept"] is None and row["gold"] is None
    assert to_table([row]).schema.equals(SAMPLE_SCHEMA)


def test_sample_id_depends_on_identity_not_content(raw_row):
    a = validate_sample(raw_row(1))
    b = validate_sample(raw_row(1, completion="a different completion"))
    assert a["sample_id"] == b["sample_id"]
    assert a["content_hash"] != b["content_hash"]
    for change in (
        {"sample_index": 1},
        {"seed": 7},
        {"model_id": "m"},
        {"sampling": {"temperature": 0.6}},
    ):
        assert validate_sample(raw_row(1, **change))["sample_id"] != a["sample_id"], change


def test_ids_are_stable_across_calls():
    # Pinned values: a change here breaks every stored table's keys, so it must be deliberate.
    row = validate_sample(
        {"prompt": "p", "completion": "c", "domain": "math", "track": "reasoning", "source": "s"}
    )
    assert row["prompt_id"] == validate_sample(dict(row, content_hash=None))["prompt_id"]
    assert sample_id_for(row) == row["sample_id"]
    assert row["sample_id"] == "a96d3bb762337df0cb741852f5e74279"


def test_lineage_fields_do_not_change_content_hash(raw_row):
    a = validate_sample(raw_row(2))
    b = validate_sample(raw_row(2, flow_run_id="run-9", config_hash="abc"))
    assert a["content_hash"] == b["content_hash"]


def test_given_sample_id_is_kept_and_content_hash_recomputed(raw_row):
    row = validate_sample(raw_row(3, sample_id="my-id", content_hash="forged"))
    assert row["sample_id"] == "my-id"
    assert row["content_hash"] == content_hash_for(row)


@pytest.mark.parametrize(
    ("override", "field", "fragment"),
    [
        ({"track": "thinking"}, "track", "not one of"),
        ({"prompt": None}, "prompt", "missing"),
        ({"completion": 5}, "completion", "expected a string"),
        ({"domain": "  "}, "domain", "must not be empty"),
        ({"seed": "7"}, "seed", "expected an integer"),
        ({"seed": True}, "seed", "expected an integer"),
        ({"prompt_tokens": -1}, "prompt_tokens", ">= 0"),
        ({"sample_index": 2**40}, "sample_index", "does not fit"),
        ({"kept": "yes"}, "kept", "true, false or null"),
        ({"sampling": {"temp": 1}}, "sampling.temp", "unknown key"),
        ({"sampling": {"temperature": float("nan")}}, "sampling.temperature", "finite"),
        (
            {"verdicts": [{"verifier": "math", "verdict": "right"}]},
            "verdicts[0].verdict",
            "not one of",
        ),
        ({"verdicts": [{"verdict": "correct"}]}, "verdicts[0].verifier", "missing"),
        ({"verdicts": "correct"}, "verdicts", "expected a list"),
        ({"extra_field": 1}, "extra_field", "unknown field"),
    ],
)
def test_invalid_rows_name_the_field(raw_row, override, field, fragment):
    with pytest.raises(RecordError) as err:
        validate_sample(raw_row(4, **override))
    assert err.value.field == field
    assert fragment in str(err.value)


def test_non_object_row_is_rejected():
    with pytest.raises(RecordError, match="expected a JSON object"):
        validate_sample(["not", "a", "dict"])  # type: ignore[arg-type]


def test_batch_content_hashes_match_row_hashes(rows):
    table = to_table(rows(50))
    batch = table.to_batches()[0]
    blanked = batch.set_column(
        batch.schema.get_field_index("content_hash"),
        SAMPLE_SCHEMA.field("content_hash"),
        pa.array(["x"] * batch.num_rows),
    )
    recomputed = with_content_hashes(blanked).column("content_hash").to_pylist()
    assert recomputed == table.column("content_hash").to_pylist()


def test_content_hash_covers_every_content_field(raw_row):
    base = validate_sample(raw_row(5))
    assert "verdicts" in CONTENT_FIELDS and "kept" in CONTENT_FIELDS
    judged = validate_sample(raw_row(5, verdicts=[{"verifier": "math", "verdict": "correct"}]))
    assert judged["content_hash"] != base["content_hash"]
    kept = validate_sample(raw_row(5, kept=False, filter_reason="too_long"))
    assert kept["content_hash"] != base["content_hash"]


def test_vectorised_batch_hash_equals_row_hash_on_edge_cases():
    # Values that Python equality would merge (0.0 / -0.0, 1 / 1.0, {} / None) must not be.
    import random

    rows = []
    for i in range(600):
        r = random.Random(i)
        rows.append(
            validate_sample(
                {
                    "prompt": "é中文 " * r.randint(0, 3) + str(i),
                    "completion": "" if i % 7 == 0 else "x" * r.randint(0, 300),
                    "domain": "math",
                    "track": "reasoning",
                    "source": "s",
                    "seed": r.choice([None, -5, 0, 2**40]),
                    "kept": r.choice([None, True, False]),
                    "sampling": r.choice(
                        [
                            None,
                            {},
                            {"temperature": -0.0},
                            {"temperature": 0.0, "top_k": 1},
                            {"temperature": 1},
                        ]
                    ),
                    "verdicts": r.choice([[], None, [{"verifier": "m", "verdict": "correct"}]]),
                    "reasoning": r.choice([None, "", "abc"]),
                    "sample_index": i,
                }
            )
        )
    batch = to_table(rows).combine_chunks().to_batches()[0]
    expected = [row["content_hash"] for row in rows]
    assert with_content_hashes(batch).column("content_hash").to_pylist() == expected
    assert (
        with_content_hashes(batch.slice(100, 50)).column("content_hash").to_pylist()
        == expected[100:150]
    )
    plain = [row for row in rows if row["verdicts"] == []]
    plain_batch = to_table(plain).combine_chunks().to_batches()[0]
    assert with_content_hashes(plain_batch).column("content_hash").to_pylist() == [
        row["content_hash"] for row in plain
    ]
