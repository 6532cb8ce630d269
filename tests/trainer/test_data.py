"""trainer.data: rendering, loss masks, packing, seeded shuffling, resumable streams, sources."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from store.lineage import Lineage
from store.record import to_table, validate_sample
from store.release import export_release
from store.store import Store
from trainer.data import (
    IGNORE_INDEX,
    BatchStream,
    DataError,
    DataSpec,
    DataState,
    PackedDataset,
    TokenizedRows,
    load_rows,
    open_rows,
    render_document,
    tokenize_rows,
    uses_chat,
)
from trainer.tokenizer import (
    ASSISTANT,
    BOS,
    EOS,
    R1Tokenizer,
    render_chat,
    render_prompt,
    train_tokenizer,
)

ROWS = [
    {
        "prompt": f"Compute {a}+{b}.",
        "completion": f"<think>{a}+{b}={a + b}.</think><answer>{a + b}</answer>",
        "track": "reasoning",
    }
    for a, b in [(3, 4), (12, 9), (7, 15), (1, 1), (20, 13)]
] + [
    {
        "prompt": "Hello!",
        "completion": "<think></think><answer>Hi!</answer>",
        "track": "non_reasoning",
    },
    {"prompt": "Tell a story.", "completion": "Ana has 3 apples.", "track": "non_reasoning"},
]


def _rows() -> list[dict[str, Any]]:
    return [
        validate_sample({**r, "domain": "math", "source": "toy", "sample_index": i})
        for i, r in enumerate(ROWS)
    ]


@pytest.fixture(scope="module")
def tok() -> R1Tokenizer:
    texts = [render_prompt(r["prompt"]) + r["completion"] for r in ROWS] * 3
    return R1Tokenizer(train_tokenizer(texts, vocab_size=400))


def test_chat_rendering_is_the_sampling_prompt_then_the_completion(tok: R1Tokenizer) -> None:
    reasoning, greeting, story = ROWS[0], ROWS[5], ROWS[6]
    head, tail = render_document(reasoning, chat=True)
    assert head == render_prompt(reasoning["prompt"], think=True)  # ends with <think>
    assert tail == reasoning["completion"][len("<think>") :]
    head, tail = render_document(greeting, chat=True)
    assert head.endswith(ASSISTANT + "<think></think>") and tail == "<answer>Hi!</answer>"
    # A completion without the prefix is written after it as it is.
    assert render_document(story, chat=True)[1] == "Ana has 3 apples."
    # The whole chat document is the template's conversation.
    full = "".join(render_document(reasoning, chat=True)) + EOS
    assert full == render_chat(
        [
            {"role": "user", "content": reasoning["prompt"]},
            {"role": "assistant", "content": reasoning["completion"]},
        ],
        add_generation_prompt=False,
    )
    assert render_document(reasoning, chat=False) == (
        reasoning["prompt"] + "\n",
        reasoning["completion"],
    )


@pytest.mark.parametrize("chat", [True, False])
def test_ids_equal_the_whole_text_encoded_and_masks_follow_loss_on(
    tok: R1Tokenizer, chat: bool
) -> None:
    rows = _rows()
    share = 1.0 if chat else 0.0
    sft = tokenize_rows(rows, tok, DataSpec(loss_on="completion", chat_share=share))
    pre = tokenize_rows(rows, tok, DataSpec(loss_on="all", chat_share=share))
    for row, s, p in zip(rows, sft, pre, strict=True):
        head, tail = render_document(row, chat=chat)
        whole = tok.encode(("" if chat else BOS) + head + tail + EOS)
        assert s.ids == whole == p.ids
        n_head = len(tok.encode(("" if chat else BOS) + head))
        assert s.scored == [False] * n_head + [True] * (len(whole) - n_head)
        assert all(p.scored)
        assert s.ids[-1] == tok.eos_id and s.ids[0] == tok.bos_id


def test_chat_share_is_a_stable_seeded_split() -> None:
    ids = [f"id{i}" for i in range(4000)]
    chosen = [uses_chat(i, 0.3, seed=5) for i in ids]
    assert 0.27 < sum(chosen) / len(ids) < 0.33
    assert chosen == [uses_chat(i, 0.3, seed=5) for i in ids]
    assert chosen != [uses_chat(i, 0.3, seed=6) for i in ids]


def test_packing_keeps_documents_whole_and_targets_inside_them(tok: R1Tokenizer) -> None:
    docs = tokenize_rows(_rows() * 6, tok, DataSpec(loss_on="completion"))
    data = PackedDataset(docs, seq_len=128, seed=0, pad_id=tok.pad_id)
    inputs, targets, doc_ids = data.rows(0)
    stats = data.stats(0)
    assert stats.documents == len(docs) and stats.truncated == 0
    assert stats.tokens == sum(len(d.ids) - 1 for d in docs)
    assert stats.scored == sum(sum(d.scored[1:]) for d in docs)
    for r in range(inputs.shape[0]):
        row_docs = doc_ids[r]
        for k in row_docs.unique().tolist():
            where = (row_docs == k).nonzero().flatten()
            assert (where.diff() == 1).all()  # contiguous
            x, y = inputs[r, where], targets[r, where]
            if (x == tok.pad_id).all():
                assert (y == IGNORE_INDEX).all()  # padding: never scored
                continue
            # Each target is the next input of the same document (or the unshifted last one).
            shifted = y[:-1]
            ok = (shifted == IGNORE_INDEX) | (shifted == x[1:])
            assert ok.all()
    # Another epoch, another order; the same seed and epoch, the same rows.
    assert not torch.equal(data.rows(1)[0], inputs)
    again = PackedDataset(docs, seq_len=128, seed=0, pad_id=tok.pad_id)
    assert torch.equal(again.rows(0)[0], inputs)


def test_long_documents_are_cut_and_counted(tok: R1Tokenizer) -> None:
    docs = tokenize_rows(_rows(), tok, DataSpec(loss_on="all", chat_share=1.0))
    data = PackedDataset(docs, seq_len=16, seed=0, pad_id=tok.pad_id)
    assert data.stats().truncated == sum(len(d.ids) > 17 for d in docs) > 0
    assert data.rows(0)[0].shape[1] == 16


def test_a_stream_resumed_from_its_state_continues_exactly(tok: R1Tokenizer) -> None:
    docs = tokenize_rows(_rows() * 5, tok, DataSpec(loss_on="completion"))
    data = PackedDataset(docs, seq_len=64, seed=1, pad_id=tok.pad_id)
    straight = BatchStream(data, rows_per_batch=3)
    batches = [straight.next() for _ in range(12)]  # crosses epochs
    assert straight.state().epoch >= 1
    stopped = BatchStream(data, rows_per_batch=3)
    for _ in range(5):
        stopped.next()
    state = DataState.from_dict(stopped.state().to_dict())
    resumed = BatchStream(data, rows_per_batch=3, state=state)
    for expected in batches[5:]:
        got = resumed.next()
        assert torch.equal(got.inputs, expected.inputs)
        assert torch.equal(got.targets, expected.targets)
        assert torch.equal(got.document_ids, expected.document_ids)
    # Two data-parallel ranks split each global batch and together see what one rank sees.
    ranks = [BatchStream(data, rows_per_batch=3, rank=r, world_size=2) for r in (0, 1)]
    one = BatchStream(data, rows_per_batch=6)
    for _ in range(4):
        a, b, whole = ranks[0].next(), ranks[1].next(), one.next()
        assert torch.equal(torch.stack([a.inputs, b.inputs], 1).flatten(0, 1), whole.inputs)


def test_sources_store_version_release_and_errors(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    lineage = Lineage(writer="tests")
    rows = _rows()
    store.commit("toy", to_table(rows[:4]), lineage=lineage)
    rejected = validate_sample({**ROWS[4], "domain": "math", "source": "toy", "kept": False})
    store.commit("toy", to_table([*rows[4:], rejected]), lineage=lineage)
    source, got = load_rows("toy@0", store)
    assert (source.table, source.version, source.rows) == ("toy", 0, 4)
    assert source.content_hash == store.content_hash("toy", 0)
    source, got = load_rows("toy", store)
    assert source.version == 1 and len(got) == len(rows)  # the rejected row is dropped
    assert len(load_rows("toy@1", store, only_kept=False)[1]) == len(rows) + 1
    release = export_release(store, "toy", 1, tmp_path / "release")
    source, from_release = load_rows(str(tmp_path / "release"), None)
    assert source.content_hash == release.manifest["content_hash"] and source.release
    assert [r["sample_id"] for r in from_release] == [r["sample_id"] for r in got]
    with pytest.raises(DataError, match="no such version"):
        load_rows("toy@7", store)
    with pytest.raises(DataError, match="no table"):
        load_rows("nope@0", store)
    shard = next((tmp_path / "release" / "data").glob("*.parquet"))
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(DataError, match="does not match its manifest"):
        load_rows(str(tmp_path / "release"), None)


def _many_rows(n: int) -> list[dict[str, Any]]:
    return [
        validate_sample(
            {
                "prompt": f"Compute {i}+{i % 7}." + " Think." * (i % 5),
                "completion": f"<think>{i}+{i % 7}={i + i % 7}.</think><answer>{i + i % 7}</answer>",
                "track": "reasoning" if i % 3 else "non_reasoning",
                "domain": "math",
                "source": "toy",
                "sample_index": i,
            }
        )
        for i in range(n)
    ]


def test_streamed_rows_equal_the_rows_read_whole_and_resume_from_the_saved_document(
    tmp_path: Path, tok: R1Tokenizer
) -> None:
    store = Store(tmp_path / "store")
    rows = _many_rows(60)
    store.commit("toy", to_table(rows), lineage=Lineage(writer="tests"))
    cache = tmp_path / "cache"
    source, table = open_rows("toy@0", store, cache_dir=cache)
    (written,) = cache.glob("rows-toy@0-*.arrow")
    stamp = written.stat().st_mtime_ns
    assert open_rows("toy@0", store, cache_dir=cache)[1].rows([5]) == table.rows([5])
    assert written.stat().st_mtime_ns == stamp  # a resumed run reuses the copy
    _, whole = load_rows("toy@0", store)
    assert table.rows(range(len(table))) == whole and len(whole) == source.rows == 60

    spec = DataSpec(loss_on="completion", chat_share=0.5)
    lazy = PackedDataset(TokenizedRows(table, tok, spec), seq_len=48, seed=3, pad_id=tok.pad_id)
    lazy.prefetch = 7  # chunks end mid-row and mid-epoch
    eager = PackedDataset(tokenize_rows(whole, tok, spec), 48, seed=3, pad_id=tok.pad_id)
    straight = BatchStream(lazy, rows_per_batch=4)
    batches = [straight.next() for _ in range(40)]  # crosses epochs
    assert straight.state().epoch >= 1
    first_epoch = torch.cat([b.inputs for b in batches])[: eager.rows(0)[0].shape[0]]
    assert torch.equal(first_epoch, eager.rows(0)[0])
    # Resumed in a fresh dataset from a saved state, with and without its document position
    # (checkpoints written before streaming have none), the stream continues exactly.
    stopped = BatchStream(lazy, rows_per_batch=4)
    for _ in range(13):
        stopped.next()
    saved = stopped.state().to_dict()
    assert saved["document"] is not None
    for state in (saved, {"epoch": saved["epoch"], "row": saved["row"]}):
        fresh = PackedDataset(TokenizedRows(table, tok, spec), 48, seed=3, pad_id=tok.pad_id)
        resumed = BatchStream(fresh, rows_per_batch=4, state=DataState.from_dict(state))
        for expected in batches[13:]:
            got = resumed.next()
            assert torch.equal(got.inputs, expected.inputs)
            assert torch.equal(got.targets, expected.targets)
            assert torch.equal(got.document_ids, expected.document_ids)
