"""The `Sample` record: the one row type that flows through the data side.

Every sample table in the store shares `SAMPLE_SCHEMA`. Rows are plain dicts
keyed by field name (that is what Arrow, polars and JSONL all speak);
`validate_sample` turns an untrusted dict into a checked, complete row, or
raises `RecordError` naming the offending field.

Two hashes identify a row:

- `sample_id` names *which generation* this is: a hash of the prompt id, the
  generator identity (backend, model id and hash), the sampling parameters,
  the seed and the sample index. Regenerating with the same settings gives the
  same id, which is what lets a rerun skip work it has already done.
- `content_hash` names *what the row says*: a hash of every content and
  judgement field. The store computes it on each write; two versions of a
  table are diffed by comparing (sample_id, content_hash) pairs alone.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

TRACKS = ("reasoning", "non_reasoning")
VERDICTS = ("correct", "incorrect", "unverifiable")

SAMPLING_TYPE = pa.struct(
    [
        pa.field("temperature", pa.float64()),
        pa.field("top_p", pa.float64()),
        pa.field("top_k", pa.int32()),
        pa.field("max_tokens", pa.int32()),
    ]
)

VERDICT_TYPE = pa.struct(
    [
        pa.field("verifier", pa.string(), nullable=False),
        pa.field("verdict", pa.string(), nullable=False),
        pa.field("reason", pa.string()),
        pa.field("version", pa.string()),
    ]
)

SAMPLE_SCHEMA = pa.schema(
    [
        # identity
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("prompt_id", pa.string(), nullable=False),
        # content
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("completion", pa.string(), nullable=False),
        pa.field("reasoning", pa.string()),  # text inside <think>, null when not parsed
        pa.field("answer", pa.string()),  # final answer text
        pa.field("gold", pa.string()),  # reference answer, or tests as JSON
        # kind
        pa.field("domain", pa.string(), nullable=False),
        pa.field("track", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("language", pa.string()),  # target language of the CoT (R1's language reward)
        # generation
        pa.field("backend", pa.string()),
        pa.field("model_id", pa.string()),
        pa.field("model_hash", pa.string()),
        pa.field("sampling", SAMPLING_TYPE),
        pa.field("seed", pa.int64()),
        pa.field("sample_index", pa.int32()),
        pa.field("finish_reason", pa.string()),
        pa.field("prompt_tokens", pa.int32()),
        pa.field("completion_tokens", pa.int32()),
        # judgement
        pa.field("verdicts", pa.list_(pa.field("item", VERDICT_TYPE))),
        pa.field("kept", pa.bool_()),  # null until a filter has decided
        pa.field("filter_reason", pa.string()),
        # lineage
        pa.field("flow_run_id", pa.string()),
        pa.field("config_hash", pa.string()),
        # written by the store, never by callers
        pa.field("content_hash", pa.string(), nullable=False),
    ]
)

SAMPLE_FIELDS: tuple[str, ...] = tuple(SAMPLE_SCHEMA.names)
REQUIRED_FIELDS = ("prompt", "completion", "domain", "track", "source")
# Fields that say where a row came from rather than what it says: a rerun under
# another flow run writes the same content and must not count as a change.
LINEAGE_FIELDS = ("flow_run_id", "config_hash", "content_hash")
CONTENT_FIELDS: tuple[str, ...] = tuple(f for f in SAMPLE_FIELDS if f not in LINEAGE_FIELDS)
IDENTITY_FIELDS = (
    "prompt_id",
    "backend",
    "model_id",
    "model_hash",
    "sampling",
    "seed",
    "sample_index",
)

# Fields `r1f generate` writes beside a sample that the record does not hold:
# the token ids are the completion re-encoded by the checkpoint's tokenizer
# (reproducible from the text and `model_hash`), and per-token log-probs are a
# generation-time diagnostic (RL recomputes them under the policy it trains).
# `store.ingest` drops them on import and reports that it did.
GENERATION_ONLY_FIELDS = ("token_ids", "logprobs")

_STRING_FIELDS = {f.name for f in SAMPLE_SCHEMA if pa.types.is_string(f.type)}
_INT_FIELDS = {f.name: f.type.bit_width for f in SAMPLE_SCHEMA if pa.types.is_integer(f.type)}
_SAMPLING_KEYS = {f.name: f.type for f in SAMPLING_TYPE}
_VERDICT_KEYS = {f.name: f.nullable for f in VERDICT_TYPE}


class RecordError(ValueError):
    """A row does not fit the Sample schema. `field` names the offending key."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _digest(kind: str, payload: Any) -> str:
    """A stable 128-bit hex digest of a JSON-encodable value, tagged by kind."""
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(f"{kind}\x00{text}".encode()).hexdigest()[:32]


def prompt_id_for(prompt: str) -> str:
    """The default prompt id: a hash of the prompt text."""
    return _digest("prompt", prompt)


def sample_id_for(row: Mapping[str, Any]) -> str:
    """Deterministic id of one generation: same prompt, generator and sampling -> same id."""
    return _digest("sample", [row.get(k) for k in IDENTITY_FIELDS])


def _content_digest(values: Iterable[Any]) -> str:
    # Length-prefixed fields with a type tag: cheaper than JSON-encoding 6 KB
    # texts, and "null" the string can never collide with a missing value.
    h = hashlib.sha256(b"content\x00")
    for v in values:
        if isinstance(v, str):
            data = b"s" + v.encode()
        elif v is None:
            data = b"n"
        else:
            data = b"j" + json.dumps(v, sort_keys=True, separators=(",", ":")).encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:32]


def sample_id_of(row: Mapping[str, Any]) -> str | None:
    """The `sample_id` import gives a raw row: its own, else the computed one (None without
    a string `prompt`). For commands that name rows the way the store will."""
    given = row.get("sample_id")
    if isinstance(given, str) and given:
        return given
    prompt = row.get("prompt")
    if not isinstance(prompt, str):
        return None
    prompt_id = row.get("prompt_id")
    identity = {**row, "prompt_id": prompt_id if prompt_id is not None else prompt_id_for(prompt)}
    return sample_id_for(identity)


def content_hash_for(row: Mapping[str, Any]) -> str:
    """Hash of everything a row says (identity, content, judgement), not where it came from."""
    return _content_digest(row.get(k) for k in CONTENT_FIELDS)


def with_content_hashes(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Recompute the `content_hash` column of a SAMPLE_SCHEMA batch; equal to `content_hash_for`.

    The framing of `_content_digest` is built with Arrow kernels, so the long
    texts never become Python strings; Python only runs one sha256 per row
    over the joined bytes, and JSON-encodes the two small nested columns.
    """
    framed = [_framed_column(batch.column(name)) for name in CONTENT_FIELDS]
    joined = pc.binary_join_element_wise(pa.scalar(b"content\x00"), *framed, b"")
    offsets = np.frombuffer(joined.buffers()[1], dtype=np.int32)
    offsets = offsets[joined.offset : joined.offset + len(joined) + 1].tolist()
    data = memoryview(joined.buffers()[2] or b"")
    sha = hashlib.sha256
    hashes = pa.array(
        [sha(data[offsets[i] : offsets[i + 1]]).hexdigest()[:32] for i in range(len(joined))],
        pa.string(),
    )
    index = batch.schema.get_field_index("content_hash")
    return batch.set_column(index, SAMPLE_SCHEMA.field("content_hash"), hashes)


def _json_tagged(column: pa.Array) -> pa.Array:
    """b"j" + JSON of each nested value (null stays null), encoded once per distinct value.

    Distinct values are found on an exact key built by Arrow (floats cast to
    their shortest round-trip text), never on Python equality, which would
    merge 0.0 with -0.0 and 1 with 1.0.
    """
    key = _exact_key(column)
    if key is None:
        values = column.to_pylist()
        return pa.array([None if v is None else _json_bytes(v) for v in values], pa.binary())
    key = pc.if_else(column.is_null(), pa.scalar(None, pa.string()), key)
    encoded = pc.dictionary_encode(key)  # null rows get a null index
    first_row: dict[int, int] = {}
    for row, idx in enumerate(encoded.indices.to_pylist()):
        if idx is not None and idx not in first_row:
            first_row[idx] = row
    table = [_json_bytes(column[first_row[i]].as_py()) for i in range(len(encoded.dictionary))]
    return pc.take(pa.array(table, pa.binary()), encoded.indices)


def _exact_key(column: pa.Array) -> pa.Array | None:
    """A string per row that is equal exactly when the values' JSON is; None if not derivable."""
    if pa.types.is_struct(column.type):
        parts = [
            pc.fill_null(column.field(i).cast(pa.string()), "\x00")
            for i in range(column.type.num_fields)
        ]
        return pc.binary_join_element_wise(*parts, "\x01")
    if pa.types.is_list(column.type):
        # Only the empty list gets a shared key; anything else is encoded row by row.
        empty = pc.equal(pc.list_value_length(column), 0)
        if not pc.all(pc.fill_null(empty, True)).as_py():
            return None
        return pc.if_else(pc.fill_null(empty, False), "[]", pa.scalar(None, pa.string()))
    return None


def _json_bytes(value: Any) -> bytes:
    return b"j" + json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _framed_column(column: pa.Array) -> pa.Array:
    """Each value as `_content_digest` frames it: 8-byte length, type tag, payload."""
    kind = column.type
    if pa.types.is_string(kind):
        tagged = pc.binary_join_element_wise(b"s", column.cast(pa.binary()), b"")
    elif pa.types.is_integer(kind):
        tagged = pc.binary_join_element_wise(b"j", column.cast(pa.string()).cast(pa.binary()), b"")
    elif pa.types.is_boolean(kind):
        tagged = pc.if_else(column, pa.scalar(b"jtrue"), pa.scalar(b"jfalse"))
    else:  # sampling, verdicts: small nested values, JSON-encoded exactly as the row path does
        tagged = _json_tagged(column)
    payload = pc.fill_null(tagged, pa.scalar(b"n"))
    lengths = pc.binary_length(payload).to_numpy(zero_copy_only=False).astype("<u8")
    prefix = pa.Array.from_buffers(
        pa.binary(8), len(payload), [None, pa.py_buffer(lengths.tobytes())]
    ).cast(pa.binary())
    return pc.binary_join_element_wise(prefix, payload, b"")


def _check_int(name: str, value: Any, bits: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecordError(name, f"expected an integer, got {type(value).__name__} {value!r:.40}")
    limit = 1 << (bits - 1)
    if not -limit <= value < limit:
        raise RecordError(name, f"{value} does not fit in int{bits}")
    return value


def _check_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RecordError(name, f"expected a number, got {type(value).__name__} {value!r:.40}")
    if not math.isfinite(value):
        raise RecordError(name, f"expected a finite number, got {value}")
    return float(value)


def _check_sampling(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise RecordError("sampling", f"expected an object, got {type(value).__name__}")
    unknown = sorted(set(value) - set(_SAMPLING_KEYS))
    if unknown:
        raise RecordError(
            f"sampling.{unknown[0]}", f"unknown key; allowed: {', '.join(_SAMPLING_KEYS)}"
        )
    out: dict[str, Any] = {}
    for key, typ in _SAMPLING_KEYS.items():
        v = value.get(key)
        if v is None:
            out[key] = None
        elif pa.types.is_integer(typ):
            out[key] = _check_int(f"sampling.{key}", v, typ.bit_width)
        else:
            out[key] = _check_float(f"sampling.{key}", v)
    return out


def _check_verdicts(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise RecordError("verdicts", f"expected a list, got {type(value).__name__}")
    out = []
    for i, item in enumerate(value):
        where = f"verdicts[{i}]"
        if not isinstance(item, Mapping):
            raise RecordError(where, f"expected an object, got {type(item).__name__}")
        unknown = sorted(set(item) - set(_VERDICT_KEYS))
        if unknown:
            raise RecordError(f"{where}.{unknown[0]}", "unknown key")
        entry: dict[str, Any] = {}
        for key, nullable in _VERDICT_KEYS.items():
            v = item.get(key)
            if v is None and not nullable:
                raise RecordError(f"{where}.{key}", "missing")
            if v is not None and not isinstance(v, str):
                raise RecordError(f"{where}.{key}", f"expected a string, got {type(v).__name__}")
            entry[key] = v
        if entry["verdict"] not in VERDICTS:
            raise RecordError(
                f"{where}.verdict", f"{entry['verdict']!r} is not one of {', '.join(VERDICTS)}"
            )
        out.append(entry)
    return out


def validate_sample(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Check an untrusted row and return it complete, with ids and content hash filled in.

    Missing optional fields become null; `prompt_id` defaults to a hash of the
    prompt and `sample_id` to `sample_id_for(row)`. A given `sample_id` that
    differs from the computed one is kept: ids minted elsewhere stay stable.
    Raises RecordError naming the first bad field.
    """
    if not isinstance(raw, Mapping):
        raise RecordError("<row>", f"expected a JSON object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(SAMPLE_FIELDS))
    if unknown:
        raise RecordError(unknown[0], "unknown field (see store.record.SAMPLE_SCHEMA)")
    row: dict[str, Any] = {}
    for name in SAMPLE_FIELDS:
        value = raw.get(name)
        if name in ("sampling", "verdicts", "kept", "content_hash"):
            continue
        if value is None:
            if name in REQUIRED_FIELDS:
                raise RecordError(name, "missing (required)")
            row[name] = None
        elif name in _STRING_FIELDS:
            if not isinstance(value, str):
                raise RecordError(name, f"expected a string, got {type(value).__name__}")
            row[name] = value
        elif name in _INT_FIELDS:
            row[name] = _check_int(name, value, _INT_FIELDS[name])
    for name in ("prompt", "domain", "source"):
        if not row[name].strip():
            raise RecordError(name, "must not be empty")
    if row["track"] not in TRACKS:
        raise RecordError("track", f"{row['track']!r} is not one of {', '.join(TRACKS)}")
    kept = raw.get("kept")
    if kept is not None and not isinstance(kept, bool):
        raise RecordError("kept", f"expected true, false or null, got {kept!r:.40}")
    row["kept"] = kept
    row["sampling"] = _check_sampling(raw.get("sampling"))
    row["verdicts"] = _check_verdicts(raw.get("verdicts"))
    for name in ("prompt_tokens", "completion_tokens", "sample_index"):
        if row[name] is not None and row[name] < 0:
            raise RecordError(name, f"must be >= 0, got {row[name]}")
    if row["prompt_id"] is None:
        row["prompt_id"] = prompt_id_for(row["prompt"])
    if row["sample_id"] is None:
        row["sample_id"] = sample_id_for(row)
    row["content_hash"] = content_hash_for(row)
    return {name: row[name] for name in SAMPLE_FIELDS}


def to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Validated rows -> an Arrow table with SAMPLE_SCHEMA."""
    return pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA)


# Rows that failed validation on import. Kept, never dropped: the reason and
# the source location tell the user what to fix, `raw` holds the original text.
QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("quarantine_id", pa.string(), nullable=False),  # hash of file digest + line
        pa.field("target_table", pa.string(), nullable=False),
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("source_sha256", pa.string(), nullable=False),
        pa.field("line", pa.int64(), nullable=False),  # 1-based line (JSONL) or row (Parquet)
        pa.field("field", pa.string()),  # the offending key, when one is to blame
        pa.field("reason", pa.string(), nullable=False),
        pa.field("raw", pa.string(), nullable=False),  # the original text, capped
    ]
)


def quarantine_id_for(source_sha256: str, line: int) -> str:
    """Deterministic id, so re-importing the same file does not quarantine a row twice."""
    return _digest("quarantine", [source_sha256, line])
