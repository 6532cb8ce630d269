"""A store table version (or a release directory) becomes packed token batches.

    from trainer.data import DataSpec, load_rows, tokenize_rows, PackedDataset, BatchStream

    source, rows = load_rows("toy-mixture@3", store)          # or a release directory
    docs = tokenize_rows(rows, tokenizer, DataSpec(loss_on="completion", chat_share=1.0))
    dataset = PackedDataset(docs, seq_len=256, seed=0)
    stream = BatchStream(dataset, rows_per_batch=8)
    batch = stream.next()            # Batch(inputs, targets, document_ids), each (8, 256)
    stream.state()                   # {"epoch": 0, "row": 8}: saved with a checkpoint

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
targets being its own next tokens, so no pair ever predicts across documents. Documents are
shuffled with a seeded generator per epoch and laid greedily into rows of `seq_len`; a
document that does not fit the current row starts the next one, and the rest of the row is
padding (PAD inputs, no targets, a document id of its own). `Batch.document_ids` tells the
model where documents start (block-diagonal causal attention, RoPE positions from 0 in each).
A document longer than seq_len + 1 tokens is cut to that length (counted in `truncated`).

Resumption: the stream's position is (epoch, row); rows of an epoch depend only on (documents,
seq_len, seed, epoch), so a stream rebuilt from a saved position yields exactly the batches
the uninterrupted stream would have.

What is not covered: streaming tables larger than memory (rows are read and tokenized once, at
start), and documents split across rows (long ones are cut instead).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

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


def load_rows(
    spec: str,
    store: Store | None,
    *,
    only_kept: bool = True,
    columns: Sequence[str] = COLUMNS,
) -> tuple[DataSource, list[dict[str, Any]]]:
    """Rows of `NAME@V` (or `NAME`, the latest version) in `store`, or of a release directory
    (a path holding manifest.json, checked against its shard hashes first).

    only_kept: drop rows a filter rejected (`kept` false); undecided rows (null) are kept.
    columns: the Sample fields to read (`sample_id` and `kept` are always among them)."""
    wanted = list(dict.fromkeys([*columns, "sample_id", "kept"]))
    path = Path(spec)
    if (path / "manifest.json").is_file():
        source, rows = _release_rows(path, wanted)
    else:
        if store is None:
            raise DataError(f"{spec!r}: not a release directory, and no store to read it from")
        source, rows = _store_rows(spec, store, wanted)
    if only_kept:
        rows = [r for r in rows if r.get("kept") is not False]
    # Row order of a read depends on file layout; the dataset must depend on content only.
    rows.sort(key=lambda r: str(r.get("sample_id") or ""))
    if not rows:
        raise DataError(f"{source.ref}: no rows to train on (is every row rejected?)")
    return source, rows


def _store_rows(
    spec: str, store: Store, columns: list[str]
) -> tuple[DataSource, list[dict[str, Any]]]:
    try:
        ref = TableRef.parse(spec)
    except ValueError as err:
        raise DataError(str(err)) from None
    try:
        version = store.latest_version(ref.table) if ref.version is None else ref.version
        rows = store.read(ref.table, version, columns).to_dicts()
        content_hash = store.content_hash(ref.table, version)
    except StoreError as err:
        raise DataError(str(err)) from None
    source = DataSource(ref.table, version, content_hash, len(rows), store=store.root)
    return source, rows


def _release_rows(path: Path, columns: list[str]) -> tuple[DataSource, list[dict[str, Any]]]:
    import pyarrow.parquet as pq

    from store.release import verify_release

    problems = verify_release(path)
    if problems:
        raise DataError(f"{path}: release does not match its manifest: {problems[0]}")
    manifest = json.loads((path / "manifest.json").read_text())
    rows: list[dict[str, Any]] = []
    for shard in manifest["shards"]:
        rows += pq.read_table(path / shard["path"], columns=columns).to_pylist()
    source = DataSource(
        manifest["name"],
        int(manifest["version"]),
        manifest["content_hash"],
        len(rows),
        release=os.fspath(path.resolve()),
    )
    return source, rows


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


class PackedDataset:
    """Documents packed into rows of `seq_len` positions, reshuffled every epoch from `seed`."""

    def __init__(self, documents: Sequence[Document], seq_len: int, seed: int, pad_id: int) -> None:
        if seq_len < 2:
            raise ValueError(f"seq_len must be >= 2, got {seq_len}")
        self.seq_len = seq_len
        self.seed = seed
        self.pad_id = pad_id
        # Each document as its (inputs, targets) pairs, cut to one row at most.
        self.truncated = sum(len(d.ids) > seq_len + 1 for d in documents)
        self.pairs = [_pairs(d, seq_len) for d in documents]
        self.pairs = [
            p for p in self.pairs if p[0].numel() > 0
        ]  # one-token documents teach nothing
        if not self.pairs:
            raise DataError("no document has two tokens or more: nothing to train on")
        self._epoch: int | None = None
        self._rows: tuple[Tensor, Tensor, Tensor] | None = None

    def order(self, epoch: int) -> list[int]:
        """The document order of an epoch: a permutation from (seed, epoch) alone."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.pairs), generator=g).tolist()

    def rows(self, epoch: int) -> tuple[Tensor, Tensor, Tensor]:
        """(inputs, targets, document_ids), each (rows, seq_len), of one epoch (cached)."""
        if self._epoch != epoch or self._rows is None:
            self._rows = self._pack(self.order(epoch))
            self._epoch = epoch
        return self._rows

    def stats(self, epoch: int = 0) -> PackingStats:
        inputs, targets, _ = self.rows(epoch)
        tokens = sum(p[0].numel() for p in self.pairs)
        return PackingStats(
            documents=len(self.pairs),
            rows=inputs.shape[0],
            tokens=tokens,
            scored=int((targets != IGNORE_INDEX).sum()),
            padding=inputs.numel() - tokens,
            truncated=self.truncated,
        )

    def _pack(self, order: list[int]) -> tuple[Tensor, Tensor, Tensor]:
        T = self.seq_len
        rows: list[list[int]] = [[]]
        used = 0
        for index in order:
            n = self.pairs[index][0].numel()
            if used + n > T:
                rows.append([])
                used = 0
            rows[-1].append(index)
            used += n
        inputs = torch.full((len(rows), T), self.pad_id, dtype=torch.long)
        targets = torch.full((len(rows), T), IGNORE_INDEX, dtype=torch.long)
        docs = torch.empty((len(rows), T), dtype=torch.long)
        for r, members in enumerate(rows):
            at = 0
            for k, index in enumerate(members):
                x, y = self.pairs[index]
                n = x.numel()
                inputs[r, at : at + n] = x
                targets[r, at : at + n] = y
                docs[r, at : at + n] = k
                at += n
            docs[r, at:] = len(members)  # padding: one more document, never scored
        return inputs, targets, docs


def _pairs(doc: Document, seq_len: int) -> tuple[Tensor, Tensor]:
    ids = torch.tensor(doc.ids[: seq_len + 1], dtype=torch.long)
    scored = torch.tensor(doc.scored[: seq_len + 1], dtype=torch.bool)
    targets = ids[1:].masked_fill(~scored[1:], IGNORE_INDEX)
    return ids[:-1], targets


@dataclass(frozen=True)
class DataState:
    """Where a stream stands: the next row of `epoch` to hand out."""

    epoch: int = 0
    row: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "row": self.row}

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> DataState:
        return DataState(int(data["epoch"]), int(data["row"]))


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
        wanted = self.rows_per_batch * self.world_size
        parts: list[tuple[Tensor, Tensor, Tensor]] = []
        epoch, row = self._state.epoch, self._state.row
        while wanted > 0:
            inputs, targets, docs = self.dataset.rows(epoch)
            if row >= inputs.shape[0]:
                epoch, row = epoch + 1, 0
                continue
            take = min(wanted, inputs.shape[0] - row)
            parts.append(
                (inputs[row : row + take], targets[row : row + take], docs[row : row + take])
            )
            row += take
            wanted -= take
        self._state = DataState(epoch, row)
        inputs, targets, docs = (
            torch.cat(t)[self.rank :: self.world_size] for t in zip(*parts, strict=True)
        )
        return Batch(inputs, targets, docs, int((inputs != self.dataset.pad_id).sum()))

    def __iter__(self) -> Iterator[Batch]:
        while True:
            yield self.next()
