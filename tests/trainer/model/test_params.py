"""Published shapes built on the meta device report their published parameter counts."""

from __future__ import annotations

import pytest
import torch

from trainer.model import (
    ModelArgs,
    Transformer,
    count_parameters,
    tiny,
    v2_236b,
    v2_lite_16b,
    v3_671b,
)


def test_v3_671b_counts() -> None:
    total, activated = count_parameters(v3_671b())
    # The MTP module alone, from a shallow copy (its size does not depend on the depth).
    shallow = v3_671b(n_layers=3)
    mtp_module = count_parameters(shallow, mtp=True)[0] - count_parameters(shallow)[0]
    with_mtp = total + mtp_module
    print(
        f"v3_671b: total {total / 1e9:.2f}B, activated {activated / 1e9:.2f}B; "
        f"MTP module {mtp_module / 1e9:.2f}B, total with it {with_mtp / 1e9:.2f}B"
    )
    assert total == pytest.approx(671e9, rel=0.01)
    assert activated == pytest.approx(37e9, rel=0.02)
    # The hub's 685B adds the MTP module and its copies of embedding and head (2 x 0.93B).
    hub_copies = 2 * 129280 * 7168
    assert with_mtp + hub_copies == pytest.approx(685e9, rel=0.01)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("preset", "total", "activated"),
    [(v2_lite_16b, 15.7e9, 2.4e9), (v2_236b, 236e9, 21e9)],
    ids=["v2_lite_16b", "v2_236b"],
)
def test_v2_counts(preset: type[ModelArgs], total: float, activated: float) -> None:
    got_total, got_activated = count_parameters(preset())
    print(f"{preset.__name__}: total {got_total / 1e9:.2f}B, activated {got_activated / 1e9:.2f}B")
    assert got_total == pytest.approx(total, rel=0.01)
    assert got_activated == pytest.approx(activated, rel=0.03)


def test_meta_build_allocates_nothing() -> None:
    with torch.device("meta"):
        model = Transformer(v3_671b(n_layers=4))  # would need 60 GB in fp32 otherwise
    assert all(p.is_meta for p in model.parameters())


def test_tiny_is_tiny() -> None:
    total, activated = count_parameters(tiny())
    assert total < 2_000_000
    assert activated < total
