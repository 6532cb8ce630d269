"""trainer.generate: the decode engine against the model, and the sampling contract.

References are computed the slow, obvious way: a full forward over the whole sequence (no
cache) for every new token, one prompt at a time, no padding.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import pytest
import torch

import trainer.generate as generate_module
from trainer.generate import (
    DecodeEngine,
    GenerationStats,
    LatentCache,
    SamplingParams,
    generate,
    request_seed,
    sampling_probs,
)
from trainer.model import Gate, KVCache, ModelArgs, Transformer, debug, tiny
from trainer.tokenizer import R1Tokenizer, train_tokenizer

WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "and",
    "then",
    "ran",
    "far",
    "away",
    "from",
    "home",
    "to",
    "see",
    "what",
    "was",
    "there",
]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    # Two OpenMP threads on two shared cores mostly wait on each other (see the model tests).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tok() -> R1Tokenizer:
    texts = [" ".join(WORDS[i:] + WORDS[:i]) + f" {i}+{i}={2 * i}." for i in range(len(WORDS))]
    return R1Tokenizer(train_tokenizer(texts * 4, vocab_size=320))


@pytest.fixture(scope="module")
def model(tok: R1Tokenizer) -> Transformer:
    # A larger init spreads the logits, so rounding never decides an argmax.
    torch.manual_seed(0)
    return Transformer(tiny(vocab_size=tok.vocab_size, init_std=0.08, max_seq_len=256)).eval()


@pytest.fixture(scope="module")
def prompts(tok: R1Tokenizer) -> list[list[int]]:
    ids = tok.encode(" ".join(WORDS * 3))
    return [ids[:1], ids[3:8], ids[10:31], ids[5:17]]  # ragged: left padding matters


def full_recompute(
    model: Transformer, prompt: list[int], steps: int
) -> tuple[list[int], list[float]]:
    """Greedy tokens and their raw log-probs, one full forward per token."""
    seq = list(prompt)
    logprobs = []
    with torch.no_grad():
        for _ in range(steps):
            logits = model(torch.tensor([seq])).logits[0, -1]
            token = int(logits.argmax())
            logprobs.append(float(logits.log_softmax(-1)[token]))
            seq.append(token)
    return seq[len(prompt) :], logprobs


# ----------------------------------------------------------------------------------------------
# The engine is the model


@pytest.mark.parametrize(
    "args",
    [tiny(init_std=0.08), debug(init_std=0.08), debug(q_lora_rank=0, init_std=0.08)],
    ids=["tiny", "debug-yarn", "debug-full-rank-q"],
)
def test_engine_equals_model_forward_with_cache(args: ModelArgs) -> None:
    torch.manual_seed(1)
    model = Transformer(args).eval()
    B, P = 3, 9
    tokens = torch.randint(9, args.vocab_size, (B, P + 4))
    mask = torch.ones(B, P + 4, dtype=torch.bool)
    mask[0, :4] = False  # left padding
    mask[2, :2] = False
    with torch.no_grad():
        ref_cache = KVCache.allocate(args, B, 32, mtp=True)
        model(tokens[:, :P], cache=ref_cache, key_padding_mask=mask[:, :P])
        cache = LatentCache.allocate(
            args, B, 32, mtp=True, dtype=torch.float32, device=torch.device("cpu")
        )
        cache.bias[:, : P + 4] = torch.where(mask, 0.0, float("-inf"))
        model(tokens[:, :P], cache=cache.kv_cache(), key_padding_mask=mask[:, :P])
        engine = DecodeEngine(model)
        # One token, then two at once (the speculative verification shape), the second time
        # with a start per row (the ragged path speculative decoding uses).
        for start, T in ((P, 1), (P + 1, 2)):
            chunk = tokens[:, start : start + T]
            ref = model(
                chunk, start_pos=start, cache=ref_cache, key_padding_mask=mask[:, : start + T]
            )
            per_row = torch.full((B,), start) if T > 1 else start
            logits, hidden = engine.forward(cache, chunk, per_row)
            assert (logits - ref.logits).abs().max() < 2e-5
            assert (hidden - ref.hidden).abs().max() < 2e-5
        nxt = tokens[:, P + 2 : P + 4]
        _, ref_mtp, _, _ = model.forward_mtp(
            ref.hidden,
            nxt,
            depth=1,
            start_pos=P + 1,
            cache=ref_cache,
            key_padding_mask=mask[:, : P + 3],
        )
        mtp_logits, _ = engine.forward_mtp(cache, hidden, nxt, P + 1)
        assert (mtp_logits - ref_mtp).abs().max() < 2e-5
    # The cache holds what the model's KVCache holds: 576-style [latent | rope key] per layer.
    r = args.kv_lora_rank
    assert (cache.buf[..., :r] - ref_cache.kv).abs().max() < 2e-5
    assert (cache.buf[..., r:] - ref_cache.pe).abs().max() < 2e-5
    assert cache.bytes_per_token() == ref_cache.bytes_per_token()


def test_stale_engine_is_refused(
    model: Transformer, tok: R1Tokenizer, prompts: list[list[int]]
) -> None:
    engine = DecodeEngine(model)
    generate(model, tok, prompts[:1], SamplingParams(temperature=0, max_tokens=2), engine=engine)
    with torch.no_grad():
        model.head.weight.mul_(1.0)  # an in-place update, as an optimizer step makes
    assert not engine.is_current()
    with pytest.raises(ValueError, match="older weights"):
        generate(model, tok, prompts[:1], SamplingParams(max_tokens=2), engine=engine)


# ----------------------------------------------------------------------------------------------
# Sampling contract


def test_greedy_batch_equals_full_recompute_with_logprobs(
    model: Transformer, tok: R1Tokenizer, prompts: list[list[int]]
) -> None:
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, logprobs=True)
    stats = GenerationStats()
    outs = generate(model, tok, prompts, params, stats=stats)
    for prompt, (out,) in zip(prompts, outs, strict=True):
        tokens, logprobs = full_recompute(model, prompt, 12)
        assert out.token_ids == tokens
        assert out.logprobs is not None and len(out.logprobs) == 12
        assert max(abs(a - b) for a, b in zip(out.logprobs, logprobs, strict=True)) < 1e-4
        assert (out.finish_reason, out.stop_reason) == ("length", None)
        assert (out.prompt_tokens, out.completion_tokens) == (len(prompt), 12)
        assert out.text == tok.decode(tokens)
    assert stats.samples == len(prompts) and stats.completion_tokens == 12 * len(prompts)
    assert stats.tokens_per_forward == pytest.approx(1.0)
    assert (
        generate(model, tok, prompts[:1], dataclasses.replace(params, logprobs=False))[0][
            0
        ].logprobs
        is None
    )


def test_chunked_prefill_changes_nothing(
    model: Transformer,
    tok: R1Tokenizer,
    prompts: list[list[int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True, logprobs=True)
    whole = [generate(model, tok, prompts, params, mtp=mtp) for mtp in (False, True)]
    monkeypatch.setattr(generate_module, "PREFILL_SCORES", 1)  # 16-token chunks
    chunked = [generate(model, tok, prompts, params, mtp=mtp) for mtp in (False, True)]
    for a, b in zip(whole, chunked, strict=True):
        assert [s[0].token_ids for s in a] == [s[0].token_ids for s in b]


def test_a_request_samples_the_same_alone_or_in_any_batch(
    model: Transformer, tok: R1Tokenizer, prompts: list[list[int]]
) -> None:
    params = [
        SamplingParams(temperature=1.0, top_p=0.9, top_k=40, max_tokens=10, seed=100 + i, n=2)
        for i in range(len(prompts))
    ]
    together = generate(model, tok, prompts, params)
    alone = generate(model, tok, prompts[2:3], params[2:3])
    reordered = generate(model, tok, prompts[::-1], params[::-1], max_batch_rows=3)
    for j in range(2):
        assert alone[0][j].token_ids == together[2][j].token_ids
        assert reordered[1][j].token_ids == together[2][j].token_ids
    # One params object for all prompts: prompt i is seeded request_seed(seed, i).
    shared = SamplingParams(temperature=1.0, max_tokens=10, seed=7)
    all_at_once = generate(model, tok, prompts, shared)
    one = generate(model, tok, prompts[3:], [dataclasses.replace(shared, seed=request_seed(7, 3))])
    assert one[0][0].token_ids == all_at_once[3][0].token_ids
    assert all_at_once[3][0].seed == request_seed(7, 3)


def test_n_samples_differ_when_sampling_and_agree_when_greedy(
    model: Transformer, tok: R1Tokenizer, prompts: list[list[int]]
) -> None:
    sampled = generate(model, tok, prompts[1:2], SamplingParams(temperature=1.0, n=4, seed=3))[0]
    assert len({tuple(c.token_ids) for c in sampled}) == 4
    assert [c.index for c in sampled] == [0, 1, 2, 3]
    greedy = generate(model, tok, prompts[1:2], SamplingParams(temperature=0, n=3, max_tokens=8))
    assert len({tuple(c.token_ids) for c in greedy[0]}) == 1
    # top_k=1 is greedy through the sampling path.
    top1 = generate(model, tok, prompts[1:2], SamplingParams(top_k=1, max_tokens=8, seed=0))
    assert top1[0][0].token_ids == greedy[0][0].token_ids


def test_stop_strings_cut_the_text_and_keep_the_tokens(
    model: Transformer, tok: R1Tokenizer, prompts: list[list[int]]
) -> None:
    base = generate(model, tok, prompts[2:3], SamplingParams(temperature=0, max_tokens=16))[0][0]
    # A stop string that first appears mid-completion: the decoded text of tokens 4..5.
    stop = tok.decode(base.token_ids[4:6])
    first = base.text.find(stop)
    assert stop and first >= 0
    out = generate(model, tok, prompts[2:3], SamplingParams(temperature=0, stop=[stop]))[0][0]
    assert (out.finish_reason, out.stop_reason) == ("stop", stop)
    assert out.text == base.text[:first]
    # Tokens run up to the one that completed the stop string, as vLLM keeps them.
    assert out.token_ids == base.token_ids[: len(out.token_ids)]
    assert stop in tok.decode(out.token_ids) and stop not in tok.decode(out.token_ids[:-1])


def test_eos_stops_unless_ignored(
    model: Transformer, tok: R1Tokenizer, prompts: list[list[int]]
) -> None:
    base = generate(model, tok, prompts[:1], SamplingParams(temperature=0, max_tokens=8))[0][0]
    # Make EOS the model's favourite where greedy picked token 3's id.
    favourite = base.token_ids[3]
    changed = Transformer(model.args).eval()
    changed.load_state_dict(model.state_dict())
    with torch.no_grad():
        changed.head.weight[tok.eos_id] = 3 * changed.head.weight[favourite]
    out = generate(changed, tok, prompts[:1], SamplingParams(temperature=0, max_tokens=8))[0][0]
    assert (out.finish_reason, out.stop_reason) == ("stop", tok.eos_id)
    assert out.token_ids[-1] == tok.eos_id and len(out.token_ids) <= 4
    assert out.text == tok.decode(out.token_ids[:-1])  # EOS is not text
    ignored = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    assert generate(changed, tok, prompts[:1], ignored)[0][0].completion_tokens == 8


def test_length_limits(model: Transformer, tok: R1Tokenizer, prompts: list[list[int]]) -> None:
    out = generate(model, tok, prompts[1:2], SamplingParams(temperature=0.7, max_tokens=5))[0][0]
    assert (out.finish_reason, out.completion_tokens) == ("length", 5)
    # The model's context bounds it too.
    near_end = [prompts[2][0]] * (model.args.max_seq_len - 3)
    out = generate(model, tok, [near_end], SamplingParams(max_tokens=50, ignore_eos=True))[0][0]
    assert (out.finish_reason, out.completion_tokens) == ("length", 3)


def test_sampling_probs_temperature_top_k_top_p() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]] * 4))
    temperature = torch.tensor([1.0, 1.0, 1.0, 0.0])
    top_k = torch.tensor([0, 2, 0, 0])
    top_p = torch.tensor([1.0, 1.0, 0.8, 0.5])
    probs = sampling_probs(logits, temperature, top_k, top_p)
    expected = [
        [0.5, 0.2, 0.15, 0.1, 0.05],
        [0.5 / 0.7, 0.2 / 0.7, 0, 0, 0],
        # Smallest prefix reaching 0.8: 0.5 + 0.2 + 0.15 = 0.85 (0.7 falls short).
        [0.5 / 0.85, 0.2 / 0.85, 0.15 / 0.85, 0, 0],
        [1, 0, 0, 0, 0],  # temperature 0 is argmax, whatever top_p says
    ]
    assert torch.allclose(probs, torch.tensor(expected), atol=1e-6)
    # Temperature sharpens: p ~ p0^(1/T).
    hot = sampling_probs(logits[:1], torch.tensor([0.5]), torch.tensor([0]), torch.tensor([1.0]))
    p2 = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05]) ** 2
    assert torch.allclose(hot[0], p2 / p2.sum(), atol=1e-6)


def test_sampled_frequencies_follow_the_distribution(
    model: Transformer, tok: R1Tokenizer, prompts: list[list[int]]
) -> None:
    """The first sampled token's frequencies over many seeds match softmax(logits / T)."""
    T, n = 0.5, 400
    with torch.no_grad():
        logits = model(torch.tensor([prompts[1]])).logits[0, -1]
    p = (logits / T).softmax(-1)
    outs = generate(
        model, tok, [prompts[1]], SamplingParams(temperature=T, max_tokens=1, n=n, seed=0)
    )
    counts = torch.bincount(torch.tensor([c.token_ids[0] for c in outs[0]]), minlength=p.numel())
    top = p.argsort(descending=True)[:3]
    for t in top.tolist():
        sd = math.sqrt(n * p[t] * (1 - p[t]))
        assert abs(counts[t] - n * p[t]) < 4 * sd + 1


def test_user_errors_name_the_problem(
    model: Transformer, tok: R1Tokenizer, prompts: list[list[int]]
) -> None:
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)
    with pytest.raises(ValueError, match="max_tokens"):
        SamplingParams(max_tokens=0)
    with pytest.raises(ValueError, match="empty"):
        generate(model, tok, [[]], SamplingParams())
    with pytest.raises(ValueError, match="max_seq_len"):
        generate(model, tok, [[5] * model.args.max_seq_len], SamplingParams())
    with pytest.raises(ValueError, match="vocabulary"):
        generate(model, tok, [[model.args.vocab_size]], SamplingParams())
    with pytest.raises(ValueError, match="2 SamplingParams for 1 prompts"):
        generate(model, tok, prompts[:1], [SamplingParams(), SamplingParams()])
    no_mtp = Transformer(tiny(vocab_size=tok.vocab_size, n_mtp_depth=0))
    with pytest.raises(ValueError, match="MTP"):
        generate(no_mtp, tok, prompts[:1], SamplingParams(), mtp=True)


def test_text_prompts_and_the_model_is_left_alone(model: Transformer, tok: R1Tokenizer) -> None:
    """Generating mid-training (RL rollouts) changes nothing: mode, router biases."""
    model.train()
    biases = [g.bias.clone() for g in model.modules() if isinstance(g, Gate) and g.bias is not None]
    try:
        outs = generate(model, tok, ["the cat sat"], SamplingParams(temperature=0, max_tokens=3))
        assert model.training
        after = [g.bias for g in model.modules() if isinstance(g, Gate) and g.bias is not None]
        assert biases and all(torch.equal(a, b) for a, b in zip(biases, after, strict=True))
        ids = tok.encode("the cat sat")
        assert outs[0][0].token_ids == full_recompute(model.eval(), ids, 3)[0]
    finally:
        model.eval()
