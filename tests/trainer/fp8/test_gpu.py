"""The CUDA path (cuBLAS block-scaled FP8 through torch.nn.functional.scaled_mm, SM 9.0)
against the CPU emulation, on fresh inputs with outlier channels. Skipped without such a GPU."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from trainer.fp8 import (
    Float8Recipe,
    Fp8Linear,
    cuda_blockwise_available,
    expand_block_scale,
    quantize_blocks,
    quantize_tiles,
    scaled_matmul_cuda,
    scaled_matmul_emulated,
)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available() or not cuda_blockwise_available(torch.device("cuda")),
        reason="needs an SM 9.0 GPU and a torch with block-scaled F.scaled_mm",
    ),
]

CUDA = torch.device("cuda")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("mnk", [(256, 512, 1024), (300, 200, 520), (4096, 256, 384)])
@pytest.mark.parametrize("gemm", ["forward", "input_grad", "weight_grad"])
def test_cublas_equals_emulation(
    mnk: tuple[int, int, int], gemm: str, outliers: Callable[..., torch.Tensor]
) -> None:
    """Each GEMM form of the layer: (1x128, 128x128) for forward and input gradient,
    (1x128, 1x128) for the weight gradient. Quantised once on the CPU, so both sides
    multiply the very same E4M3 values and scales."""
    m, n, k = mnk
    a = outliers(m, k, seed=m + k)
    b = torch.randn(n, k, generator=torch.Generator().manual_seed(n)) * 0.02
    a_q, a_s = quantize_tiles(a)
    if gemm == "weight_grad":
        b = outliers(n, k, seed=n + 1)
        b_q, b_s = quantize_tiles(b)
        b_rows, blocks = b_s, False
    else:
        b_q, b_s = quantize_blocks(b)
        if gemm == "input_grad":  # W^T: the same blocks, transposed, as the layer does
            b_q, b_s = b_q.t().contiguous(), b_s.t().contiguous()
            a_q, a_s = quantize_tiles(outliers(m, n, seed=m + n))  # dY (M, N)
        b_rows, blocks = expand_block_scale(b_s, b_q.shape[0]), True
    emulated = scaled_matmul_emulated(a_q, a_s, b_q, b_rows)
    kernel = scaled_matmul_cuda(
        a_q.to(CUDA), a_s.to(CUDA), b_q.to(CUDA), b_s.to(CUDA), b_blocks=blocks
    )
    assert kernel.shape == emulated.shape and kernel.dtype == torch.float32
    # The Tensor Cores sum each 128-chunk in their own accumulator (14 bits or so on H800,
    # emulated at about 1e-4 relative); the promotion and scaling are the same.
    assert rel(kernel, emulated) < 1e-3


def test_fp8_linear_on_gpu_follows_cpu_emulation(outliers: Callable[..., torch.Tensor]) -> None:
    M, K, N = 512, 384, 256
    x = outliers(M, K, seed=11)
    dy = outliers(M, N, seed=12)
    w = torch.randn(N, K, generator=torch.Generator().manual_seed(13)) * 0.02
    results = []
    for device in ("cpu", "cuda"):
        linear = nn.Linear(K, N, bias=False, device=device)
        linear.weight = nn.Parameter(w.to(device))
        layer = Fp8Linear.from_linear(linear, Float8Recipe())
        xd = x.to(device).requires_grad_()
        y = layer(xd)
        y.backward(dy.to(device))
        assert xd.grad is not None and layer.weight.grad is not None
        results.append((y, xd.grad, layer.weight.grad))
    for got, want in zip(results[1], results[0], strict=True):
        assert rel(got, want) < 1e-3


def test_converted_model_trains_in_bf16_on_gpu() -> None:
    from trainer.fp8 import convert_to_fp8
    from trainer.model import Transformer, lm_loss, tiny

    torch.manual_seed(0)
    args = tiny(vocab_size=64, dim=128, q_lora_rank=128, kv_lora_rank=128, moe_inter_dim=128)
    model = convert_to_fp8(Transformer(args).to(CUDA, torch.bfloat16))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator(device=CUDA).manual_seed(0)
    successors = torch.randint(0, 64, (64,), device=CUDA, generator=gen)
    losses = []
    for _ in range(60):
        start = torch.randint(0, 64, (16, 1), device=CUDA, generator=gen)
        seq = [start]
        for _ in range(32):
            seq.append(successors[seq[-1]])
        tokens = torch.cat(seq, dim=1)  # a deterministic walk: learnable to near zero loss
        loss = lm_loss(model(tokens[:, :-1]).logits, tokens[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0]
