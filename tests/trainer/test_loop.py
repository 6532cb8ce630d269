"""The loop's pieces: schedule, exact accumulation, MTP and router updates, checkpoint round
trip, metrics truncation, lenient answers, and a transformers model trained by the same step."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from trainer.adapters import DeepSeekV3Model, HFCausalLM
from trainer.data import BatchStream, DataState, Document, PackedDataset
from trainer.evaluate import EvalProblem, evaluate, is_correct, lenient_answer
from trainer.metrics import MetricsLog, read_metrics
from trainer.model import Transformer, debug
from trainer.optim import build_optimizer, build_scheduler, lr_multiplier
from trainer.train import train_step
from trainer.train_state import (
    latest_checkpoint,
    load_training_state,
    remove_partials,
    save_training_checkpoint,
)


def _stream(vocab: int, rows: int, seed: int = 0) -> BatchStream:
    g = torch.Generator().manual_seed(seed)
    docs = []
    for _ in range(40):
        n = int(torch.randint(5, 30, (1,), generator=g))
        ids = torch.randint(3, vocab, (n,), generator=g).tolist()
        docs.append(Document(ids, [True] * n))
    return BatchStream(PackedDataset(docs, seq_len=48, seed=seed, pad_id=2), rows)


def test_schedule_warms_up_then_follows_a_cosine_to_the_floor() -> None:
    values = [lr_multiplier(s, 10, 110, 0.1) for s in range(120)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[10] == pytest.approx(1.0)
    assert values[60] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert values[110] == pytest.approx(0.1) and values[119] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(values[10:]))


def test_accumulation_equals_one_big_batch_and_router_bias_moves() -> None:
    torch.manual_seed(0)
    # No sequence balance loss: it is a per-row mean, so halves only approximate the whole.
    args = debug(init_std=0.08, seq_aux_alpha=0.0)
    a, b = Transformer(args), Transformer(args)
    b.load_state_dict(a.state_dict())
    big = _stream(args.vocab_size, rows=4).next()
    stream = _stream(args.vocab_size, rows=2)
    halves = [stream.next(), stream.next()]
    assert torch.equal(torch.cat([h.inputs for h in halves]), big.inputs)
    results = []
    for model, micro in ((a, [big]), (b, halves)):
        opt = build_optimizer(model, lr=1e-2, weight_decay=0.1)
        sched = build_scheduler(opt, warmup_steps=1, total_steps=10, min_lr_ratio=0.1)
        bias_before = model.layers[1].ffn.gate.bias.clone()
        results.append(train_step(DeepSeekV3Model(model), micro, opt, sched, step=0, grad_clip=0))
        assert not torch.equal(model.layers[1].ffn.gate.bias, bias_before)  # aux-loss-free update
    one, two = results
    assert one.loss == pytest.approx(two.loss, rel=1e-5)
    assert one.mtp_loss is not None and one.mtp_loss == pytest.approx(two.mtp_loss, rel=1e-5)
    assert one.grad_norm == pytest.approx(two.grad_norm, rel=1e-4)
    assert one.max_violation is not None and one.tokens == two.tokens > 0
    # The same gradient (Adam's first step divides it by its own size, so compare gradients,
    # not weights: a float-rounding difference in a near-zero gradient flips an update).
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert p.grad is not None and q.grad is not None
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-7)
    # Same routing decisions, same load, same bias update.
    assert torch.equal(a.layers[1].ffn.gate.bias, b.layers[1].ffn.gate.bias)


def test_checkpoint_round_trip_restores_optimizer_schedule_rng_and_data(tmp_path: Path) -> None:
    torch.manual_seed(1)
    args = debug()
    model = Transformer(args)
    adapter = DeepSeekV3Model(model)
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.1)
    sched = build_scheduler(opt, warmup_steps=2, total_steps=10, min_lr_ratio=0.1)
    stream = _stream(args.vocab_size, rows=2)
    for step in range(3):
        train_step(adapter, [stream.next()], opt, sched, step=step, grad_clip=1.0)
    (tmp_path / "checkpoints" / ".partial-step-00000001-99").mkdir(parents=True)
    path = save_training_checkpoint(
        tmp_path,
        3,
        save_model=lambda d: adapter.save(d, tokenizer_dir=None, extra_config={}),
        optimizer=opt,
        scheduler=sched,
        data=stream.state(),
        metadata={"r1f_stage": "pretrain"},
    )
    assert latest_checkpoint(tmp_path) == path and path.name == "step-00000003"
    assert [p.name for p in remove_partials(tmp_path)] == [".partial-step-00000001-99"]
    expected_rng = torch.rand(3)
    opt2 = build_optimizer(model, lr=1e-3, weight_decay=0.1)
    sched2 = build_scheduler(opt2, warmup_steps=2, total_steps=10, min_lr_ratio=0.1)
    torch.manual_seed(123)
    point = load_training_state(path, optimizer=opt2, scheduler=sched2)
    assert point.step == 3 and point.data == stream.state()
    assert point.metadata == {"r1f_stage": "pretrain"}
    assert sched2.last_epoch == sched.last_epoch and sched2.get_last_lr() == sched.get_last_lr()
    for key, value in opt.state_dict()["state"][0].items():
        assert torch.equal(opt2.state_dict()["state"][0][key], value)
    assert torch.equal(torch.rand(3), expected_rng)  # the generator continues where it was
    for step in (4, 5, 6):  # keep=2: only the newest two stay
        save_training_checkpoint(
            tmp_path,
            step,
            save_model=lambda d: adapter.save(d, tokenizer_dir=None, extra_config={}),
            optimizer=opt,
            scheduler=sched,
            data=DataState(),
            metadata={},
        )
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-00000005", "step-00000006"]


def test_metrics_resume_drops_what_the_killed_run_wrote_after_its_checkpoint(
    tmp_path: Path,
) -> None:
    log = MetricsLog(tmp_path, tensorboard=True)
    for step in range(1, 8):
        log.write({"kind": "train", "step": step, "loss": 1.0 / step})
    log.close()
    with (tmp_path / "metrics.jsonl").open("a") as fh:
        fh.write('{"kind": "train", "st')  # a line torn by the kill
    log = MetricsLog(tmp_path, tensorboard=False, resume_step=5)
    log.write({"kind": "train", "step": 6, "loss": 0.5})
    log.close()
    assert [r["step"] for r in read_metrics(tmp_path, "train")] == [1, 2, 3, 4, 5, 6]
    assert any((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.parametrize(
    ("completion", "gold", "answer", "correct"),
    [
        ("<think>3+4=7.</think><answer>7</answer>", "7", "7", True),
        ("<think>3+4=7.\nThe answer is 7.", "7", "7", True),
        ("<think>3+4=7.\nSo 8", "7", "8", False),
        ("<think>no numbers", "7", None, False),
        ("<think>5/2 each.", "5/2", "5/2", True),
        (
            "<think>10-8=2.\n2*5=10.\nThe answer is (10-8)*5.",
            '{"target": 10, "numbers": [8, 5, 10]}',
            "(10-8)*5",
            True,
        ),
        ("<think>10-8=2.\n2*5=10.", '{"target": 10, "numbers": [8, 5, 10]}', "2*5", False),
        (
            "<think>x</think><answer>10-8+8</answer>",
            '{"target": 10, "numbers": [8, 5, 10]}',
            "10-8+8",
            False,
        ),
    ],
)
def test_lenient_answers(completion: str, gold: str, answer: str | None, correct: bool) -> None:
    assert lenient_answer(completion, gold) == answer
    assert is_correct(completion, gold) is correct


def test_evaluate_scores_greedy_pass_at_k_and_format() -> None:
    problems = [EvalProblem("What is 1+1?", "2", "fam"), EvalProblem("What is 2+2?", "4", "fam")]

    def sample(prompts, temperature, n, max_tokens, seed):  # type: ignore[no-untyped-def]
        if temperature == 0:
            return [["1+1=2.</think><answer>2</answer>"], ["2+2=5. The answer is 5."]]
        return [
            ["The answer is 3."] * n,
            ["no", "2+2=4.</think><answer>4</answer>"] + ["x"] * (n - 2),
        ]

    report = evaluate(sample, problems, k=4)
    score = report.families["fam"]
    assert (score.greedy, score.pass_at_k, score.format_greedy) == (0.5, 0.5, 0.5)
    assert score.sample_accuracy == pytest.approx(1 / 8) and score.format_sampled == pytest.approx(
        1 / 8
    )
    assert json.loads(json.dumps(report.to_dict()))["families"]["fam"]["problems"] == 2


def test_a_transformers_causal_lm_trains_through_the_same_step() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).float()
    adapter = HFCausalLM(model)
    batch = _stream(64, rows=2).next()
    # Packed documents see only themselves: the packed loss equals each document's alone.
    counts = adapter.count_targets(batch)
    packed = adapter.losses(batch, counts, 1).sums["lm"]
    alone = 0.0
    for r in range(batch.inputs.shape[0]):
        for k in batch.document_ids[r].unique().tolist():
            where = batch.document_ids[r] == k
            x, y = batch.inputs[r, where][None], batch.targets[r, where][None]
            if (y == -100).all():
                continue
            logits = model(input_ids=x).logits
            loss = torch.nn.functional.cross_entropy(logits[0], y[0], reduction="sum")
            alone += float(loss.detach())
    assert packed == pytest.approx(alone, rel=1e-4)
    opt = build_optimizer(model, lr=1e-2, weight_decay=0.0)
    sched = build_scheduler(opt, warmup_steps=1, total_steps=20, min_lr_ratio=1.0)
    stream = _stream(64, rows=2)
    first = train_step(adapter, [stream.next()], opt, sched, step=0, grad_clip=1.0).loss
    for step in range(1, 15):
        last = train_step(adapter, [stream.next()], opt, sched, step=step, grad_clip=1.0).loss
    assert last < first
