"""Our GRPO loss against TRL 1.16's own loss code path (`GRPOTrainer._compute_loss`) on one
fixed batch, for every loss type both have, with and without the KL term (bench/grpo.py
prints the same comparison)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("trl")

from bench.grpo import LOSS_TOL, LOSS_TYPES, fixed_batch, loss_parity, tiny_checkpoint, trl_trainer


def test_our_loss_equals_trls(tmp_path: Path) -> None:
    batch = fixed_batch(seed=3)
    trainer = trl_trainer(tiny_checkpoint(tmp_path / "ckpt"), tmp_path, batch.group_size, 12)
    rows = loss_parity(trainer, batch)
    assert {r["trl"] for r in rows} == set(LOSS_TYPES)
    for row in rows:
        assert row["loss_abs_err"] <= LOSS_TOL, row
        assert row["grad_max_abs_err"] <= LOSS_TOL, row
        assert row["adv_max_abs_err"] <= LOSS_TOL, row
    # The comparison is not vacuous: the KL term and its ratio weighting change the loss.
    by_setting = {(r["trl"], r["beta"], r["kl_ratio_weighted"]): r["loss_ours"] for r in rows}
    assert by_setting[("grpo", 0.0, False)] != by_setting[("grpo", 0.04, False)]
    assert by_setting[("grpo", 0.04, False)] != by_setting[("grpo", 0.04, True)]
