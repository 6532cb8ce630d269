"""The model on a CUDA device: bf16 follows fp32, the paths and the cache agree, training
learns, checkpoints round-trip and load in transformers. Skipped without a GPU."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import pytest
import torch

from trainer.checkpoint import load_checkpoint, save_checkpoint
from trainer.model import (
    KVCache,
    Transformer,
    debug,
    lm_loss,
    mtp_depth_losses,
    tiny,
    update_router_bias,
    vllm_tiny,
)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(autouse=True)
def exact_fp32() -> None:
    # TF32 would turn fp32 comparisons into 1e-3 ones.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def test_fp32_paths_and_cache_agree_on_gpu() -> None:
    torch.manual_seed(0)
    model = Transformer(debug(init_std=0.08)).cuda().eval()
    tokens = torch.randint(0, 256, (2, 80), device="cuda")
    with torch.no_grad():
        naive = model(tokens).logits
        absorbed = model(tokens, absorb=True).logits
        cache = KVCache.allocate(model.args, 2, 80, device="cuda")
        steps = [model(tokens[:, :40], cache=cache).logits]
        steps += [
            model(tokens[:, i : i + 1], start_pos=i, cache=cache).logits for i in range(40, 80)
        ]
    print("gpu fp32 absorbed-naive", (absorbed - naive).abs().max().item())
    assert (absorbed - naive).abs().max() < 1e-5
    assert (torch.cat(steps, 1) - naive).abs().max() < 1e-5


def test_bf16_on_gpu_follows_cpu_fp32() -> None:
    torch.manual_seed(1)
    reference = Transformer(debug(init_std=0.08)).eval()
    tokens = torch.randint(0, 256, (2, 64))
    with torch.no_grad():
        expected = reference(tokens, mtp=True)
        model = Transformer(reference.args).to("cuda", torch.bfloat16).eval()
        model.load_state_dict(reference.state_dict())
        got = model(tokens.cuda(), mtp=True)
        cache = KVCache.allocate(model.args, 2, 64, device="cuda", dtype=torch.bfloat16)
        model(tokens[:, :32].cuda(), cache=cache)
        step = model(tokens[:, 32:33].cuda(), start_pos=32, cache=cache).logits

    def error(a: torch.Tensor, b: torch.Tensor) -> float:
        return ((a.float().cpu() - b).abs().mean() / b.abs().mean()).item()

    errors = [
        error(got.logits, expected.logits),
        error(got.mtp_logits[1], expected.mtp_logits[1]),
        error(step, expected.logits[:, 32:33]),
    ]
    print("gpu bf16 vs cpu fp32 mean relative error (main, mtp depth 2, cached step):", errors)
    assert max(errors) < 0.05


def test_tiny_trains_in_bf16_on_gpu() -> None:
    torch.manual_seed(0)
    vocab, length = 64, 64
    gen = torch.Generator().manual_seed(0)
    successors = torch.stack([torch.randperm(vocab, generator=gen)[:2] for _ in range(vocab)])

    def sample(n: int) -> torch.Tensor:
        seq = torch.empty(n, length + 1, dtype=torch.long)
        seq[:, 0] = torch.randint(0, vocab, (n,), generator=gen)
        for t in range(length):
            seq[:, t + 1] = successors[seq[:, t], torch.randint(0, 2, (n,), generator=gen)]
        return seq.cuda()

    args = tiny(vocab_size=vocab, max_seq_len=length)
    model = Transformer(args).to("cuda", torch.bfloat16)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    began = time.perf_counter()
    for _ in range(200):
        seq = sample(32)
        out = model(seq[:, :-1], mtp=True)
        main = lm_loss(out.logits, seq[:, 1:])
        mtp = mtp_depth_losses(out.mtp_logits, seq[:, 1:])[0]
        assert out.aux_loss is not None
        opt.zero_grad(set_to_none=True)
        (main + args.mtp_lambda * mtp + out.aux_loss).backward()
        opt.step()
        update_router_bias(model, out.expert_load, args.bias_update_speed)
    torch.cuda.synchronize()
    print(
        f"gpu bf16 tiny: 200 steps in {time.perf_counter() - began:.1f}s, "
        f"main {main.item():.3f}, mtp {mtp.item():.3f}, unigram {math.log(vocab):.3f}"
    )
    assert main.item() < 0.4 * math.log(vocab)
    assert mtp.item() < 0.4 * math.log(vocab)


def test_checkpoint_round_trip_and_transformers_on_gpu(tmp_path: Path) -> None:
    torch.manual_seed(2)
    model = Transformer(vllm_tiny()).cuda().eval()
    save_checkpoint(model, model.args, tmp_path)
    loaded, _ = load_checkpoint(tmp_path, device="cuda", dtype=torch.float32)
    tokens = torch.randint(0, model.args.vocab_size, (2, 48), device="cuda")
    with torch.no_grad():
        ours = model(tokens).logits
        # Same weights, but GPU kernels need not reduce in the same order twice.
        assert (loaded.eval()(tokens).logits - ours).abs().max() < 1e-5
    os.environ["HF_HUB_OFFLINE"] = "1"
    transformers = pytest.importorskip("transformers")
    hf = transformers.DeepseekV3ForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    with torch.no_grad():
        theirs = hf.cuda().eval()(tokens).logits
    print(
        f"gpu parity vs transformers {transformers.__version__}:",
        (ours - theirs).abs().max().item(),
    )
    assert (ours - theirs).abs().max() < 1e-4
