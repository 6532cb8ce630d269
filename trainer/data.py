"""A store table version (or a release directory) becomes packed token batches, streamed.

    from trainer.data import DataSpec, open_rows, TokenizedRows, PackedDataset, BatchStream

    source, table = open_rows("toy-mixture@3", store, cache_dir=out / "data")  # or a release
    docs = TokenizedRows(table, tokenizer, DataSpec(loss_on="completion", chat_share=1.0))
    dataset = PackedDataset(docs, seq_len=256, seed=0, pad_id=tokenizer.pad_id)
    stream = BatchStream(dataset, rows_per_batch=8)
    batch = stream.next()            # Batch(inputs, targets, document_ids), each (8, 256)
    stream.state()                   # {"epoch": 0, "row": 8, "document": 41}: saved with a checkpoint

`load_rows(spec, store)` gives the rows as dicts instead (small tables, tests); `PackedDataset`
also takes a list of already tokenized `Document`s.

Streaming (why and how). At the factory's scale (600k + 200k samples of several KB each) the
rows do not fit in memory as Python objects, and tokenizing all of them before the first step
would take minutes to hours on a few cores (docs/training.md has the measurements). So:

- `open_rows` copies the version's training columns once, batch by batch, into an
  uncompressed Arrow IPC file under `cache_dir` (named by table, version and content hash, so
  a resumed run reuses it), and memory-maps it: any row is reachable without reading the
  others, and what stays resident is what the OS chooses to cache. Only `sample_id` is
  sorted in memory (rows are ordered by it, so the data depends on content, not file layout).
- `TokenizedRows` renders and tokenizes rows only when the packer asks for them, a chunk of
  `prefetch` documents at a time, in the order the epoch visits them.
- `PackedDataset` packs greedily as documents arrive; nothing holds a whole epoch.

Rendering, per row (`render_document`):

- chat: the R1 chat template (`trainer.tokenizer.render_chat`): the default system text, the
  user turn, then the assistant turn opened with `generation_prefix(think)`, `<think>` for the
  reasoning track and `<think></think>` for non_reasoning, exactly as a prompt is rendered for
  sampling. A completion that starts with that prefix (what the factory stores) continues after
  it; one that does not is written after it as it is. EOS closes the turn.
- text: `prompt`, a newline, `completion`, between BOS and EOS (the worked-solution shape of
  `generators.tasks.render_pretraining_text`).

`chat_share` picks chat for that share of rows (a hash of the row's sample_id and the seed, so
the choice is the same every epoch and on every machine). `loss_on="completion"` scores only
the completion's tokens and the closing EOS (SFT); `"all"` scores every token (pretraining).

Packing (`PackedDataset`): each document of n tokens gives n - 1 (input, target) pairs, its
targets being its own next tokens, so no pair ever predicts across documents. The epoch's
document order is a permutation from (seed, epoch); documents are laid greedily into rows of
`seq_len` in that order: a document that does not fit the current row starts the next one, and
the rest of the row is padding (PAD inputs, no targets, a document id of its own).
`Batch.document_ids` tells the model where documents start (block-diagonal causal attention,
RoPE positions from 0 in each). A document longer than seq_len + 1 tokens is cut to that length
(counted in `truncated`).

Resumption: the stream's position is (epoch, row, document): the next row of the epoch and the
place in the epoch's order where that row begins. Greedy packing from a row's first document
does not depend on anything before it, so a stream rebuilt from a saved position tokenizes
from there and yields exactly the batches the uninterrupted stream would have. (A position
saved without `document` is found again by packing the epoch from its start.)

What is not covered: documents split across rows (long ones are cut instead, after being
tokenized whole), and tokenizing ahead on another thread (a chunk costs far less than the
training steps it feeds; docs/training.md).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import pyarrow as pa
import torch
from torch import Tensor

from store.lineage import TableRef
from store.store import Store, StoreError
from trainer.tokenizer import R1Tokenizer, generation_prefix, render_chat

IGNORE_INDEX = -100
# The columns a training row needs; the rest of the Sample record stays in the store.
COLUMNS = ["sample_id", "prompt", "completion", "track", "kept"]

LossOn = Literal["all", "completion"]


class DataError(ValueError):
    """Training data that cannot be used, with what to do about it."""


# ----------------------------------------------------------------------------------------------
# Where rows come from


@dataclass(frozen=True)
class DataSource:
    """What a run trained on: recorded in the checkpoint so every model traces to its data."""

    table: str
    version: int
    content_hash: str
    rows: int
    store: str | None = None  # the store root, when read from the store
    release: str | None = None  # the release directory, when read from one

    @property
    def ref(self) -> str:
        return f"{self.table}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "version": self.version,
            "content_hash": self.content_hash,
            "rows": self.rows,
            "store": self.store,
            "release": self.release,
        }


class RowTable:
    """A table version's training rows in `sample_id` order, each reachable on its own.

    `table` is an Arrow table (in memory, or memory-mapped from an IPC file); `order[i]` is
    the table row of the i-th row in sample_id order. Rows come out as dicts of its columns."""

    def __init__(self, table: pa.Table) -> None:
        import pyarrow.compute as pc

        self.table = table
        # Stable: rows with equal ids (none in a store table) keep their read order.
        self.order = pc.array_sort_indices(table.column("sample_id"), null_placement="at_start")

    def __len__(self) -> int:
        return self.table.num_rows

    def rows(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """The rows at these positions of the sample_id order, as dicts."""
        picked = self.table.take(self.order.take(pa.array(indices, pa.int64())))
        return picked.to_pylist()


def open_rows(
    spec: str,
    store: Store | None,
    *,
    only_kept: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    columns: Sequence[str] = COLUMNS,
) -> tuple[DataSource, RowTable]:
    """The rows of `NAME@V` (or `NAME`, the latest version) in `store`, or of a release
    directory (a path holding manifest.json, checked against its shard hashes first).

    only_kept: drop rows a filter rejected (`kept` false); undecided rows (null) are kept.
    cache_dir: where the rows are copied to a memory-mapped file (reused when it is there);
    None keeps them in memory.
    columns: the Sample fields to read (`sample_id` and `kept` are always among them)."""
    schema = _schema(columns)
    source, batches = _source_batches(spec, store, schema)
    cache = None
    if cache_dir is not None:
        name = f"{source.table}@{source.version}-{source.content_hash[:16]}"
        fields = hashlib.sha256(",".join(schema.names).encode()).hexdigest()[:8]
        cache = Path(cache_dir) / f"rows-{name}-{fields}{'-kept' if only_kept else ''}.arrow"
    if cache is not None and cache.is_file():
        table = _mapped(cache)
    else:
        kept = (_kept(b) if only_kept else b for b in batches)
        table = (
            _write_mapped(kept, cache, schema) if cache is not None else _in_memory(kept, schema)
        )
    if table.num_rows == 0:
        raise DataError(f"{source.ref}: no rows to train on (is every row rejected?)")
    return source, RowTable(table)


def load_rows(
    spec: str,
    store: Store | None,
    *,
    only_kept: bool = True,
    columns: Sequence[str] = COLUMNS,
) -> tuple[DataSource, list[dict[str, Any]]]:
    """`open_rows` with every row read into memory as a dict, in sample_id order."""
    source, table = open_rows(spec, store, only_kept=only_kept, columns=columns)
    return source, table.rows(range(len(table)))


def _schema(columns: Sequence[str]) -> pa.Schema:
    """The Sample record's types for these columns (plus `sample_id` and `kept`), nullable:
    every batch is cast to it, so an empty read and a memory-mapped one look alike."""
    from store.record import SAMPLE_SCHEMA

    names = list(dict.fromkeys([*columns, "sample_id", "kept"]))
    unknown = [name for name in names if name not in SAMPLE_SCHEMA.names]
    if unknown:
        raise DataError(f"columns: {unknown} are not Sample fields")
    return pa.schema([SAMPLE_SCHEMA.field(name).with_nullable(True) for name in names])


def _kept(batch: pa.RecordBatch) -> pa.RecordBatch:
    import pyarrow.compute as pc

    return batch.filter(pc.fill_null(batch.column("kept"), True))


def _in_memory(batches: Iterable[pa.RecordBatch], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_batches(list(batches), schema=schema)


def _write_mapped(batches: Iterable[pa.RecordBatch], path: Path, schema: pa.Schema) -> pa.Table:
    """Write the batches to an uncompressed Arrow IPC file (beside it, then renamed: a killed
    writer leaves no half file under the final name) and memory-map it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            for batch in batches:
                writer.write_batch(batch)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return _mapped(path)


def _mapped(path: Path) -> pa.Table:
    return pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()


def _source_batches(
    spec: str, store: Store | None, schema: pa.Schema
) -> tuple[DataSource, Iterator[pa.RecordBatch]]:
    path = Path(spec)
    if (path / "manifest.json").is_file():
        return _release_batches(path, schema)
    if store is None:
        raise DataError(f"{spec!r}: not a release directory, and no store to read it from")
    return _store_batches(spec, store, schema)


def _store_batches(
    spec: str, store: Store, schema: pa.Schema
) -> tuple[DataSource, Iterator[pa.RecordBatch]]:
    try:
        ref = TableRef.parse(spec)
    except ValueError as err:
        raise DataError(str(err)) from None
    try:
        version = store.latest_version(ref.table) if ref.version is None else ref.version
        rows = store.info(ref.table, version).rows
        content_hash = store.content_hash(ref.table, version)
        batches = store.iter_batches(ref.table, version, schema.names)
    except StoreError as err:
        raise DataError(str(err)) from None
    source = DataSource(ref.table, version, content_hash, rows, store=store.root)
    return source, (b.cast(schema) for b in batches)


def _release_batches(path: Path, schema: pa.Schema) -> tuple[DataSource, Iterator[pa.RecordBatch]]:
    import pyarrow.parquet as pq

    from store.release import verify_release

    problems = verify_release(path)
    if problems:
        raise DataError(f"{path}: release does not match its manifest: {problems[0]}")
    manifest = json.loads((path / "manifest.json").read_text())
    shards = [path / shard["path"] for shard in manifest["shards"]]
    rows = sum(pq.ParquetFile(shard).metadata.num_rows for shard in shards)
    source = DataSource(
        manifest["name"],
        int(manifest["version"]),
        manifest["content_hash"],
        rows,
        release=os.fspath(path.resolve()),
    )

    def batches() -> Iterator[pa.RecordBatch]:
        for shard in shards:
            for batch in pq.ParquetFile(shard).iter_batches(columns=schema.names):
                yield batch.cast(schema)

    return source, batches()


# ----------------------------------------------------------------------------------------------
# Rendering and tokenizing


@dataclass(frozen=True)
class DataSpec:
    """How rows become documents."""

    loss_on: LossOn = "completion"
    chat_share: float = 1.0  # share of rows rendered with the chat template, the rest as text
    seed: int = 0  # picks which rows are rendered as chat

    def __post_init__(self) -> None:
        if self.loss_on not in ("all", "completion"):
            raise ValueError(f"loss_on must be 'all' or 'completion', got {self.loss_on!r}")
        if not 0.0 <= self.chat_share <= 1.0:
            raise ValueError(f"chat_share must be in [0, 1], got {self.chat_share!r}")


@dataclass(frozen=True)
class Document:
    """One training document: token ids and, per token, whether it is a scored target."""

    ids: list[int]
    scored: list[bool]


def uses_chat(sample_id: str, share: float, seed: int) -> bool:
    """The seeded per-row choice behind `chat_share` (stable across epochs and machines)."""
    if share >= 1.0:
        return True
    if share <= 0.0:
        return False
    digest = hashlib.sha256(f"{seed}:{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def render_document(row: Mapping[str, Any], *, chat: bool) -> tuple[str, str]:
    """(prompt part, completion part) of a row; the two concatenated are the document's text.

    chat: the R1 template with its generation prompt (`<think>` for the reasoning track,
    `<think></think>` for non_reasoning), then the completion (less that prefix when it
    carries it) and EOS. text: `prompt` and a newline, then `completion`; BOS and EOS are
    added when tokenizing.
    """
    prompt, completion = row["prompt"], row["completion"]
    if not chat:
        return prompt + "\n", completion
    think = row.get("track", "reasoning") != "non_reasoning"
    prefix = generation_prefix(think)
    head = render_chat([{"role": "user", "content": prompt}], True, think)
    rest = completion[len(prefix) :] if completion.startswith(prefix) else completion
    return head, rest


def tokenize_rows(
    rows: Sequence[Mapping[str, Any]], tokenizer: R1Tokenizer, spec: DataSpec
) -> list[Document]:
    """Render and tokenize every row; one `Document` per row, in row order.

    Prompt and completion are encoded separately and concatenated: both renderings put a
    control token or a newline at the seam, where BPE never merges across, so the ids equal
    those of the whole text (a test holds this)."""
    heads, tails, chats = [], [], []
    for row in rows:
        chat = uses_chat(str(row.get("sample_id") or ""), spec.chat_share, spec.seed)
        head, tail = render_document(row, chat=chat)
        heads.append(head)
        tails.append(tail)
        chats.append(chat)
    encode = tokenizer.tokenizer.encode_batch
    head_ids = [e.ids for e in encode(heads, add_special_tokens=False)]
    tail_ids = [e.ids for e in encode(tails, add_special_tokens=False)]
    bos, eos = tokenizer.bos_id, tokenizer.eos_id
    docs = []
    for prompt_ids, completion_ids, chat in zip(head_ids, tail_ids, chats, strict=True):
        # The chat template writes BOS itself; text gets it here.
        first = prompt_ids if chat else [bos, *prompt_ids]
        last = [*completion_ids, eos]
        scored_prompt = spec.loss_on == "all"
        docs.append(Document([*first, *last], [scored_prompt] * len(first) + [True] * len(last)))
    return docs


class Documents(Protocol):
    """Documents by position, made when asked for (`TokenizedRows`) or already made (a list)."""

    def __len__(self) -> int: ...

    def get(self, indices: Sequence[int]) -> list[Document]: ...


class TokenizedRows:
    """The documents of a `RowTable`, rendered and tokenized only when asked for."""

    def __init__(self, table: RowTable, tokenizer: R1Tokenizer, spec: DataSpec) -> None:
        self.table = table
        self.tokenizer = tokenizer
        self.spec = spec

    def __len__(self) -> int:
        return len(self.table)

    def get(self, indices: Sequence[int]) -> list[Document]:
        return tokenize_rows(self.table.rows(indices), self.tokenizer, self.spec)


class _DocumentList:
    def __init__(self, documents: Sequence[Document]) -> None:
        self.documents = documents

    def __len__(self) -> int:
        return len(self.documents)

    def get(self, indices: Sequence[int]) -> list[Document]:
        return [self.documents[i] for i in indices]


# ----------------------------------------------------------------------------------------------
# Packing


@dataclass
class Batch:
    """Packed rows. targets[b, i] is the token after inputs[b, i] in its document, or
    IGNORE_INDEX (padding, a document's last token, an unscored token)."""

    inputs: Tensor  # (B, T) long
    targets: Tensor  # (B, T) long
    document_ids: Tensor  # (B, T) long; padding is a document of its own
    tokens: int  # positions holding a document token (not padding)

    @property
    def scored_tokens(self) -> int:
        return int((self.targets != IGNORE_INDEX).sum())

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.inputs.to(device),
            self.targets.to(device),
            self.document_ids.to(device),
            self.tokens,
        )


@dataclass(frozen=True)
class PackingStats:
    documents: int
    rows: int
    tokens: int  # input positions holding a document token
    scored: int  # of those, positions with a target
    padding: int
    truncated: int  # documents cut to seq_len + 1 tokens


@dataclass(frozen=True)
class DataState:
    """Where a stream stands: the next row of `epoch` to hand out, and the position in the
    epoch's document order where that row begins (None: unknown, found again by packing the
    epoch from its start; checkpoints written before streaming lack it)."""

    epoch: int = 0
    row: int = 0
    document: int | None = 0

    def to_dict(self) -> dict[str, int | None]:
        return {"epoch": self.epoch, "row": self.row, "document": self.document}

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> DataState:
        document = data.get("document")
        return DataState(
            int(data["epoch"]), int(data["row"]), None if document is None else int(document)
        )


_Pairs = tuple[Tensor, Tensor, bool]  # one document's (inputs, targets), each (n,); was it cut


class PackedDataset:
    """Documents packed into rows of `seq_len` positions, reshuffled every epoch from `seed`.

    `documents` is a list of `Document`s or a lazy source (`TokenizedRows`), read `prefetch`
    documents at a time in the epoch's order. `take(state, n)` packs the next n rows from a
    position; `rows(epoch)` packs a whole epoch at once (small data, tests)."""

    def __init__(
        self,
        documents: Sequence[Document] | Documents,
        seq_len: int,
        seed: int,
        pad_id: int,
        *,
        prefetch: int = 1024,
    ) -> None:
        if seq_len < 2:
            raise ValueError(f"seq_len must be >= 2, got {seq_len}")
        self.seq_len = seq_len
        self.seed = seed
        self.pad_id = pad_id
        self.prefetch = max(1, prefetch)
        if isinstance(documents, Sequence):
            # One-token documents teach nothing; a list can drop them before the order is
            # drawn. (Rendered rows never have one: BOS and EOS are always there.)
            documents = _DocumentList([d for d in documents if len(d.ids) >= 2])
        self.documents: Documents = documents
        if len(self.documents) == 0:
            raise DataError("no document has two tokens or more: nothing to train on")
        self._order: tuple[int, list[int]] | None = None
        self._buffer: dict[int, _Pairs] = {}  # position in the epoch's order -> pairs
        self._buffer_epoch = -1
        self._epoch_rows: tuple[int, list[list[_Pairs]]] | None = None
        # What `take` has handed out so far in this process (the run's summary reports it).
        self.produced = PackingStats(0, 0, 0, 0, 0, 0)

    def __len__(self) -> int:
        return len(self.documents)

    def order(self, epoch: int) -> list[int]:
        """The document order of an epoch: a permutation from (seed, epoch) alone."""
        if self._order is None or self._order[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._order = (epoch, torch.randperm(len(self.documents), generator=g).tolist())
        return self._order[1]

    def _pairs(self, epoch: int, position: int) -> _Pairs:
        """The (inputs, targets) of the document at `position` of the epoch's order, tokenizing
        the next `prefetch` documents when it is not at hand yet."""
        if self._buffer_epoch != epoch:
            self._buffer, self._buffer_epoch = {}, epoch
        if position not in self._buffer:
            order = self.order(epoch)
            # What is behind the position is never asked for again in this epoch.
            self._buffer = {p: v for p, v in self._buffer.items() if p > position}
            chunk = range(position, min(position + self.prefetch, len(order)))
            documents = self.documents.get([order[p] for p in chunk])
            for p, doc in zip(chunk, documents, strict=True):
                self._buffer[p] = _pairs(doc, self.seq_len)
        return self._buffer[position]

    def _next_row(self, epoch: int, position: int) -> tuple[list[_Pairs], int]:
        """The documents of the row that starts at `position`, and where the next one starts."""
        members: list[_Pairs] = []
        used, end = 0, len(self.documents)
        while position < end:
            pairs = self._pairs(epoch, position)
            n = pairs[0].numel()
            if members and used + n > self.seq_len:
                break
            members.append(pairs)
            used += n
            position += 1
        return members, position

    def _start(self, state: DataState) -> DataState:
        """A state with its document position, found by packing the epoch when not saved."""
        if state.document is not None:
            return state
        position = 0
        for _ in range(state.row):
            _, position = self._next_row(state.epoch, position)
        return DataState(state.epoch, state.row, position)

    def take(self, state: DataState, n: int) -> tuple[Tensor, Tensor, Tensor, DataState]:
        """The next n rows from `state` (crossing into the next epoch when one ends):
        inputs, targets, document ids, each (n, seq_len), and the state after them."""
        state = self._start(state)
        epoch, row, position = state.epoch, state.row, state.document
        assert position is not None
        rows: list[list[_Pairs]] = []
        while len(rows) < n:
            if position >= len(self.documents):
                epoch, row, position = epoch + 1, 0, 0
                continue
            members, position = self._next_row(epoch, position)
            rows.append(members)
            row += 1
        inputs, targets, docs = self._tensors(rows)
        self.produced = _add(self.produced, _count(rows, self.seq_len))
        return inputs, targets, docs, DataState(epoch, row, position)

    def _tensors(self, rows: list[list[_Pairs]]) -> tuple[Tensor, Tensor, Tensor]:
        T = self.seq_len
        inputs = torch.full((len(rows), T), self.pad_id, dtype=torch.long)
        targets = torch.full((len(rows), T), IGNORE_INDEX, dtype=torch.long)
        docs = torch.empty((len(rows), T), dtype=torch.long)
        for r, members in enumerate(rows):
            at = 0
            for k, (x, y, _) in enumerate(members):
                n = x.numel()
                inputs[r, at : at + n] = x
                targets[r, at : at + n] = y
                docs[r, at : at + n] = k
                at += n
            docs[r, at:] = len(members)  # padding: one more document, never scored
        return inputs, targets, docs

    def _epoch(self, epoch: int) -> list[list[_Pairs]]:
        if self._epoch_rows is None or self._epoch_rows[0] != epoch:
            rows: list[list[_Pairs]] = []
            position = 0
            while position < len(self.documents):
                members, position = self._next_row(epoch, position)
                rows.append(members)
            self._epoch_rows = (epoch, rows)
        return self._epoch_rows[1]

    def rows(self, epoch: int) -> tuple[Tensor, Tensor, Tensor]:
        """(inputs, targets, document_ids), each (rows, seq_len), of a whole epoch. Tokenizes
        every document and keeps the last epoch asked for: for small data and tests."""
        return self._tensors(self._epoch(epoch))

    def stats(self, epoch: int = 0) -> PackingStats:
        """Packing figures of a whole epoch (tokenizes every document: small data)."""
        return _count(self._epoch(epoch), self.seq_len)


def _count(rows: list[list[_Pairs]], seq_len: int) -> PackingStats:
    tokens = sum(x.numel() for members in rows for x, _, _ in members)
    return PackingStats(
        documents=sum(len(members) for members in rows),
        rows=len(rows),
        tokens=tokens,
        scored=sum(int((y != IGNORE_INDEX).sum()) for members in rows for _, y, _ in members),
        padding=len(rows) * seq_len - tokens,
        truncated=sum(cut for members in rows for _, _, cut in members),
    )


def _add(a: PackingStats, b: PackingStats) -> PackingStats:
    return PackingStats(*(x + y for x, y in zip(astuple(a), astuple(b), strict=True)))


def _pairs(doc: Document, seq_len: int) -> _Pairs:
    ids = torch.tensor(doc.ids[: seq_len + 1], dtype=torch.long)
    scored = torch.tensor(doc.scored[: seq_len + 1], dtype=torch.bool)
    targets = ids[1:].masked_fill(~scored[1:], IGNORE_INDEX)
    return ids[:-1], targets, len(doc.ids) > seq_len + 1


class BatchStream:
    """Batches of `rows_per_batch` packed rows, epoch after epoch, from a saved position.

    Data parallel: every rank builds the same stream; a call consumes rows_per_batch *
    world_size rows and returns rank's share (rows rank, rank + world_size, ...), so the
    position is the same on every rank and one saved state resumes them all.
    """

    def __init__(
        self,
        dataset: PackedDataset,
        rows_per_batch: int,
        *,
        state: DataState | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if rows_per_batch < 1:
            raise ValueError(f"rows_per_batch must be >= 1, got {rows_per_batch}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.dataset = dataset
        self.rows_per_batch = rows_per_batch
        self.rank = rank
        self.world_size = world_size
        self._state = state or DataState()

    def state(self) -> DataState:
        return self._state

    def next(self) -> Batch:
        inputs, targets, docs, self._state = self.dataset.take(
            self._state, self.rows_per_batch * self.world_size
        )
        mine = slice(self.rank, None, self.world_size)
        inputs, targets, docs = inputs[mine], targets[mine], docs[mine]
        return Batch(inputs, targets, docs, int((inputs != self.dataset.pad_id).sum()))

    def __iter__(self) -> Iterator[Batch]:
        while True:
            yield self.next()
