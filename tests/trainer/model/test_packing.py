"""Packed rows: several documents in one row compute exactly what each computes alone."""

from __future__ import annotations

import pytest
import torch

from trainer.model import Transformer, debug, document_positions, lm_loss, mtp_depth_losses


def _packed(lengths: list[int], vocab: int, seed: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    docs = [torch.randint(0, vocab, (n,), generator=g) for n in lengths]
    ids = torch.cat([torch.full((n,), i) for i, n in enumerate(lengths)])
    return docs, ids


def test_document_positions_restart_at_each_document() -> None:
    ids = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2, 2], [5, 5, 5, 5, 5, 5, 7, 7, 9]])
    assert document_positions(ids).tolist() == [
        [0, 1, 2, 0, 1, 0, 1, 2, 3],
        [0, 1, 2, 3, 4, 5, 0, 1, 0],
    ]


@pytest.mark.parametrize("mtp", [False, True])
def test_packed_row_equals_documents_alone(mtp: bool) -> None:
    torch.manual_seed(0)
    # debug: YaRN on (positions beyond 64 would differ), dense first layer, MoE, 2 MTP depths.
    args = debug(init_std=0.08)
    model = Transformer(args).eval()
    lengths = [7, 12, 4, 9]
    docs, ids = _packed(lengths, args.vocab_size, seed=1)
    tokens = torch.cat(docs)[None]  # (1, T)
    with torch.no_grad():
        packed = model(tokens, document_ids=ids[None], mtp=mtp)
        start = 0
        for doc in docs:
            alone = model(doc[None], mtp=mtp)
            n = doc.numel()
            diff = (packed.logits[0, start : start + n] - alone.logits[0]).abs().max()
            assert diff < 1e-5
            for d in range(1, len(alone.mtp_logits) + 1):
                # Depth d at position i mixes in token i + d: meaningful while it is in the doc.
                ours = packed.mtp_logits[d - 1][0, start : start + n - d]
                assert (ours - alone.mtp_logits[d - 1][0]).abs().max() < 1e-5
            start += n
        # Without document ids the same row is one long document: the later ones differ.
        plain = model(tokens)
    assert (plain.logits[0, lengths[0] :] - packed.logits[0, lengths[0] :]).abs().max() > 1e-3


def test_packed_losses_never_cross_a_boundary() -> None:
    torch.manual_seed(2)
    args = debug(init_std=0.08)
    model = Transformer(args).eval()
    docs, _ = _packed([10, 6, 11], args.vocab_size, seed=3)
    # Targets as data.py builds them: the next token inside the document, -100 at its end.
    inputs = torch.cat([d[:-1] for d in docs])[None]
    targets = torch.cat([d[1:] for d in docs])[None]
    doc_ids = torch.cat([torch.full((d.numel() - 1,), i) for i, d in enumerate(docs)])[None]
    with torch.no_grad():
        packed = model(inputs, document_ids=doc_ids, mtp=True)
        main = lm_loss(packed.logits, targets, reduction="sum")
        depth = mtp_depth_losses(packed.mtp_logits, targets, document_ids=doc_ids, reduction="sum")
        main_alone = torch.zeros(())
        depth_alone = [torch.zeros(()), torch.zeros(())]
        for doc in docs:
            out = model(doc[None, :-1], mtp=True)
            main_alone += lm_loss(out.logits, doc[None, 1:], reduction="sum")
            for d, loss in enumerate(
                mtp_depth_losses(out.mtp_logits, doc[None, 1:], reduction="sum")
            ):
                depth_alone[d] += loss
    assert torch.allclose(main, main_alone, rtol=1e-5)
    for ours, alone in zip(depth, depth_alone, strict=True):
        assert torch.allclose(ours, alone, rtol=1e-5)


def test_document_ids_refuse_a_cache_or_padding_mask() -> None:
    args = debug()
    model = Transformer(args)
    tokens = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="packed training rows"):
        model(
            tokens,
            document_ids=torch.zeros(1, 4),
            key_padding_mask=torch.ones(1, 4, dtype=torch.bool),
        )
