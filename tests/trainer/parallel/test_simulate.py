"""The schedule simulator against the DeepSeek-V3 table, and DualPipeV against torch's own."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import pytest

from trainer.parallel.simulate import (
    BUILDERS,
    SCHEDULES,
    Kind,
    Op,
    OpTimes,
    Schedule,
    Task,
    draw_timeline,
    dualpipe,
    dualpipev,
    formula_exact,
    formulas,
    one_f_one_b,
    simulate,
    table,
    zb1p,
)


def op_times_grid() -> list[OpTimes]:
    """A spread of F, B, W, F&B, with and without the DualPipe conditions."""
    grid = []
    for F, back_input, W in itertools.product((0.5, 1.0, 2.0), (1.0, 2.0), (0.5, 1.0, 2.0)):
        B = back_input + W
        for FB in sorted({max(F, B), F + B}):
            grid.append(OpTimes(F=F, B=B, W=W, FB=FB))
    return grid


GRID = op_times_grid()


def microbatch_counts(name: str, pp: int) -> list[int]:
    if name == "DualPipe":
        return [2 * pp, 2 * pp + 2, 4 * pp]
    if name == "DualPipeV":
        return [pp, pp + 1, 3 * pp]
    return [1, pp - 1, pp, pp + 3, 3 * pp]


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("pp", [2, 4, 6, 8])
def test_simulation_reproduces_the_table_where_its_conditions_hold(name: str, pp: int) -> None:
    exact = inexact = 0
    schedules = {m: BUILDERS[name](pp, m) for m in microbatch_counts(name, pp) if m >= 1}
    for (m, schedule), times in itertools.product(schedules.items(), GRID):
        result = simulate(schedule, times)
        row = formulas(name, pp, times)
        assert result.parameters == row.parameters
        assert result.schedule.n_ranks == row.devices
        # The table's activations assume enough micro-batches to fill the pipe.
        assert result.activations == (min(m, pp) if name in ("1F1B", "ZB1P") else row.activations)
        if formula_exact(name, pp, m, times):
            exact += 1
            assert math.isclose(result.bubble, row.bubble, abs_tol=1e-9), (m, times)
            if name in ("1F1B", "ZB1P"):  # every rank idles the same
                assert all(math.isclose(i, row.bubble, abs_tol=1e-9) for i in result.idle)
        elif not math.isclose(result.bubble, row.bubble, abs_tol=1e-9):
            inexact += 1
    assert exact > 0
    # Outside its conditions the formula is off for most points (PP = 2 has no bubble to miss).
    if pp > 2 and name != "1F1B":
        assert inexact > 0


def test_1f1b_formula_holds_for_any_times_and_microbatches() -> None:
    for pp, m, times in itertools.product((1, 3, 5), (1, 2, 7), GRID[::7]):
        result = simulate(one_f_one_b(pp, m), times)
        assert all(math.isclose(i, (pp - 1) * (times.F + times.B)) for i in result.idle)
        assert math.isclose(result.makespan, (m + pp - 1) * (times.F + times.B))


def test_conditions_are_needed() -> None:
    # ZB1P with W longer than F: the postponed weight halves no longer fit the holes.
    times = OpTimes(F=1.0, B=3.0, W=1.5, FB=3.0)
    assert not formula_exact("ZB1P", 8, 16, times)
    assert simulate(zb1p(8, 16), times).bubble > formulas("ZB1P", 8, times).bubble
    # DualPipe with F != B - W: the formula overestimates here...
    times = OpTimes(F=1.0, B=2.0, W=0.5, FB=2.5)
    assert simulate(dualpipe(8, 24), times).bubble == pytest.approx(8.0)
    assert formulas("DualPipe", 8, times).bubble == pytest.approx(9.0)
    # ...and underestimates when F&B is faster than the backward alone (not physical).
    times = OpTimes(F=1.0, B=2.0, W=1.0, FB=1.5)
    assert simulate(dualpipev(8, 12), times).bubble > formulas("DualPipeV", 8, times).bubble


def test_dualpipe_bubble_sits_on_the_middle_ranks() -> None:
    times = OpTimes(F=1.0, B=2.0, W=1.0, FB=2.5)  # conditions hold, F&B < F + B
    result = simulate(dualpipe(8, 20), times)
    bubble = formulas("DualPipe", 8, times).bubble
    assert result.idle[3] == result.idle[4] == pytest.approx(bubble)
    assert result.bubble == pytest.approx(bubble)
    assert result.idle[0] == result.idle[7] < bubble - 0.5
    v = simulate(dualpipev(8, 10), times)
    assert v.idle[-1] == pytest.approx(bubble) and v.idle[0] < bubble


def test_dualpipev_is_the_schedule_torch_runs() -> None:
    """Our DualPipeV op lists equal torch 2.13's ScheduleDualPipeV pipeline order."""
    from torch.distributed.pipelining.schedules import (
        BACKWARD_INPUT,
        BACKWARD_WEIGHT,
        FORWARD,
        FULL_BACKWARD,
        OVERLAP_F_B,
        ScheduleDualPipeV,
    )

    kinds: dict[object, Kind] = {
        FORWARD: "F",
        FULL_BACKWARD: "B",
        BACKWARD_INPUT: "I",
        BACKWARD_WEIGHT: "W",
    }

    def ours(action: object) -> Op:
        sub = getattr(action, "sub_actions", None)
        if getattr(action, "computation_type", None) == OVERLAP_F_B:
            assert sub is not None
            return Op(tuple(ours(a).tasks[0] for a in sub))
        a = action
        return Op((Task(kinds[a.computation_type], a.stage_index, a.microbatch_index),))  # type: ignore[attr-defined]

    for n_ranks, m in [(1, 2), (2, 4), (2, 7), (3, 6), (4, 10), (4, 17)]:
        fake = SimpleNamespace(pp_group_size=n_ranks, _n_microbatches=m)
        schedule = dualpipev(2 * n_ranks, m)
        for rank in range(n_ranks):
            theirs = ScheduleDualPipeV._calculate_single_rank_operations(fake, rank)  # type: ignore[arg-type]
            assert tuple(ours(a) for a in theirs if a is not None) == schedule.ops[rank]


def test_schedules_refuse_what_they_cannot_run() -> None:
    with pytest.raises(ValueError, match="even PP"):
        dualpipe(5, 20)
    with pytest.raises(ValueError, match="micro-batches >= 2 PP"):
        dualpipe(4, 6)
    with pytest.raises(ValueError, match="at least PP"):
        dualpipev(8, 7)
    with pytest.raises(ValueError, match="W="):
        OpTimes(F=1, B=1, W=1, FB=2)


def test_a_schedule_that_waits_on_itself_deadlocks() -> None:
    # Stage 1's backward comes before its forward: nothing can ever start it.
    ops = (
        (Op((Task("F", 0, 0),)), Op((Task("B", 0, 0),))),
        (Op((Task("B", 1, 0),)), Op((Task("F", 1, 0),))),
    )
    bad = Schedule("bad", 2, 1, {(0, 0): 0, (0, 1): 1}, ops)
    with pytest.raises(RuntimeError, match="deadlocks"):
        simulate(bad, OpTimes(F=1, B=2, W=1, FB=3))


def test_timeline_png(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    rows = table(4, {"1F1B": 8, "ZB1P": 8, "DualPipe": 8, "DualPipeV": 4}, OpTimes(1, 2, 1, 3))
    out = draw_timeline([e.result for e in rows], tmp_path / "t.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert [p.name for p in tmp_path.iterdir()] == ["t.png"]  # no temp file left behind
