"""Pipeline schedule simulator: 1F1B, ZB1P, DualPipe and DualPipeV replayed as events.

Each schedule is written out as what every rank runs, in order: forward chunks (F), full
backward chunks (B), the input half of a backward (I, "backward for input") and its weight half
(W), and DualPipe's overlapped pair (one chunk's forward with another's full backward, F&B).
`simulate` then plays the lists against each other: an op starts when its rank is free and the
data it needs exists (the previous stage's forward of that micro-batch, the next stage's input
gradient), and ends its duration later. Communication is free and asynchronous, which is what
DualPipe arranges by hiding it under computation. Nothing is computed from the closed forms;
`formulas` holds them only so that the two can be compared.

Units follow the DeepSeek-V3 table. PP is the number of pipeline stages (chunks of the model);
F, B, W are the times of one chunk on one micro-batch. Parameters per device count chunks held
(1x = one stage), activations count (stage, micro-batch) pairs whose forward has started and
whose backward (W included) has not finished, at the worst moment on the worst device.

What the simulation shows about the table (`formula_conditions` says it for one case; the
tests sweep PP, micro-batch counts and op times):

- 1F1B: every rank idles exactly (PP-1)(F+B), for any F, B and any m >= 1 micro-batches;
  peak activations min(m, PP) on the first rank.
- ZB1P (ZB-H1: rank r postpones r weight halves, so it holds as many micro-batches as 1F1B's
  first rank): every rank idles exactly (PP-1)(F+B-2W) when m >= PP, W <= F and W <= B - W.
  With a weight half longer than the forward or than the input half, the postponed W no longer
  fit the holes and the bubble is larger.
- DualPipe (m even, m >= 2 PP, half the micro-batches in each direction) and DualPipeV
  (m >= PP on PP/2 devices): the two middle ranks of DualPipe, and the last device of
  DualPipeV (the bottom of the V), idle exactly (PP/2-1)(F&B+B-3W), and no rank idles more,
  when F = B - W (a forward as long as an input backward, as in the paper's figure),
  W <= F and B <= F&B <= F + B. Every rank idles exactly that much when F&B = F + B (the
  figure draws the pair as adjacent cells). Outside these conditions the formula is only an
  estimate (in either direction) and the simulated value is the right one. Peak activations
  are PP + 1 on every device.
"""

from __future__ import annotations

import argparse
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Kind = Literal["F", "B", "I", "W"]
SCHEDULES = ("1F1B", "ZB1P", "DualPipe", "DualPipeV")


@dataclass(frozen=True)
class OpTimes:
    """Durations of the ops for one chunk (stage) and one micro-batch."""

    F: float  # forward
    B: float  # full backward: input gradient and weight gradient
    W: float  # the weight-gradient part of B ("backward for weights")
    FB: float  # a forward and a full backward of two micro-batches, mutually overlapped (F&B)

    def __post_init__(self) -> None:
        for name in ("F", "B", "FB"):
            if not getattr(self, name) > 0:
                raise ValueError(f"OpTimes.{name}={getattr(self, name)!r}: must be positive")
        if not 0 <= self.W < self.B:
            raise ValueError(f"OpTimes.W={self.W!r}: must be in [0, B={self.B}) (I = B - W > 0)")

    @property
    def I(self) -> float:  # noqa: E743 (the paper's letter)
        """Input-gradient part of the backward ("backward for input")."""
        return self.B - self.W


@dataclass(frozen=True)
class Task:
    """One piece of work: `kind` of chunk `stage` on micro-batch `microbatch` of `pipe`
    (DualPipe runs two pipelines, one in each direction; every other schedule has pipe 0)."""

    kind: Kind
    stage: int
    microbatch: int
    pipe: int = 0

    def label(self) -> str:
        prime = "'" if self.pipe else ""
        return f"{self.kind}{self.microbatch}{prime}@{self.stage}"


@dataclass(frozen=True)
class Op:
    """What a rank runs at once: one task, or (F, B) overlapped (DualPipe's F&B)."""

    tasks: tuple[Task, ...]

    def __post_init__(self) -> None:
        kinds = tuple(t.kind for t in self.tasks)
        if kinds not in (("F",), ("B",), ("I",), ("W",), ("F", "B")):
            raise ValueError(f"an op is one task or an overlapped (F, B) pair, got {kinds}")

    @property
    def overlapped(self) -> bool:
        return len(self.tasks) == 2

    def duration(self, times: OpTimes) -> float:
        if self.overlapped:
            return times.FB
        kind = self.tasks[0].kind
        return {"F": times.F, "B": times.B, "I": times.I, "W": times.W}[kind]


@dataclass(frozen=True)
class Schedule:
    """A schedule written out: which rank holds each chunk and what each rank runs, in order."""

    name: str
    n_stages: int  # stages per pipeline: PP in the DeepSeek-V3 table
    n_microbatches: int  # per step, all pipelines together
    placement: dict[tuple[int, int], int]  # (pipe, stage) -> rank
    ops: tuple[tuple[Op, ...], ...]  # ops[rank]: in the order the rank runs them

    @property
    def n_ranks(self) -> int:
        return len(self.ops)

    def chunks_on(self, rank: int) -> int:
        """Model chunks (stages) a rank holds: its parameter memory in units of one stage."""
        return sum(1 for r in self.placement.values() if r == rank)

    def validate(self) -> None:
        """Every (pipe, stage, micro-batch) gets one F and one B (or one I and one W), on the
        rank that holds the stage."""
        seen: dict[tuple[int, int, int], list[str]] = {}
        for rank, ops in enumerate(self.ops):
            for op in ops:
                for t in op.tasks:
                    if self.placement[(t.pipe, t.stage)] != rank:
                        raise ValueError(f"{self.name}: {t.label()} runs on rank {rank}")
                    seen.setdefault((t.pipe, t.stage, t.microbatch), []).append(t.kind)
        for key, kinds in seen.items():
            if sorted(kinds) not in (["B", "F"], ["F", "I", "W"]):
                raise ValueError(f"{self.name}: pipe/stage/micro-batch {key} runs {kinds}")
        n_pipes = len({pipe for pipe, _ in self.placement})
        expected = len(self.placement) * (self.n_microbatches // n_pipes)
        if len(seen) != expected:
            raise ValueError(f"{self.name}: {len(seen)} chunk-micro-batches, expected {expected}")


# ----------------------------------------------------------------------------------------------
# The schedules


def one_f_one_b(n_stages: int, n_microbatches: int) -> Schedule:
    """1F1B: rank r = stage r runs PP-1-r warm-up forwards, then alternates F and B."""
    _need(n_stages >= 1 and n_microbatches >= 1, "1F1B needs PP >= 1 and m >= 1")
    ops = []
    for rank in range(n_stages):
        chunk = _Chunk(pipe=0, stage=rank, postponed=deque())
        rank_ops: list[Op] = []
        for _ in range(min(n_stages - 1 - rank, n_microbatches)):
            rank_ops.append(chunk.forward())
        while chunk.n_forward < n_microbatches:
            rank_ops += [chunk.forward(), chunk.backward()]
        while chunk.n_backward < n_microbatches:
            rank_ops.append(chunk.backward())
        ops.append(tuple(rank_ops))
    placement = {(0, s): s for s in range(n_stages)}
    return Schedule("1F1B", n_stages, n_microbatches, placement, tuple(ops))


def zb1p(n_stages: int, n_microbatches: int) -> Schedule:
    """ZB1P (ZB-H1 of Qi et al., "Zero Bubble Pipeline Parallelism"): 1F1B with each backward
    split into I and W; rank r keeps r weight halves postponed and runs them once nothing
    downstream waits for its input gradients, so the critical path carries I, not B, and rank
    r holds PP - r + r = PP micro-batches at most, as many as 1F1B's first rank."""
    _need(n_stages >= 1 and n_microbatches >= 1, "ZB1P needs PP >= 1 and m >= 1")
    ops = []
    for rank in range(n_stages):
        chunk = _Chunk(pipe=0, stage=rank, postponed=deque())
        rank_ops: list[Op] = []

        def backward(
            rank_ops: list[Op] = rank_ops, chunk: _Chunk = chunk, keep: int = rank
        ) -> None:
            rank_ops.append(chunk.backward(split=True))
            if len(chunk.postponed) > keep:
                rank_ops.append(_weight(chunk.postponed))

        for _ in range(min(n_stages - 1 - rank, n_microbatches)):
            rank_ops.append(chunk.forward())
        while chunk.n_forward < n_microbatches:
            rank_ops.append(chunk.forward())
            backward()
        while chunk.n_backward < n_microbatches:
            backward()
        while chunk.postponed:
            rank_ops.append(_weight(chunk.postponed))
        ops.append(tuple(rank_ops))
    placement = {(0, s): s for s in range(n_stages)}
    return Schedule("ZB1P", n_stages, n_microbatches, placement, tuple(ops))


def dualpipe(n_stages: int, n_microbatches: int) -> Schedule:
    """DualPipe (DeepSeek-V3): PP ranks, two pipelines in opposite directions, each over the
    whole model (rank r holds stage r of the downward pipe and stage PP-1-r of the upward one,
    2x parameters); half of the micro-batches enter at each end."""
    _need(n_stages >= 2 and n_stages % 2 == 0, f"DualPipe needs an even PP >= 2, got {n_stages}")
    _need(
        n_microbatches % 2 == 0 and n_microbatches >= 2 * n_stages,
        f"DualPipe needs an even number of micro-batches >= 2 PP = {2 * n_stages}, "
        f"got {n_microbatches}",
    )
    half = n_stages // 2
    ops = []
    for rank in range(n_stages):
        # A rank in the second half meets the upward pipe first: it is the mirror image of
        # rank PP-1-r with the two pipes swapped.
        depth = min(rank, n_stages - 1 - rank)
        early_pipe = 0 if rank < half else 1
        postponed: deque[tuple[_Chunk, int]] = deque()
        early = _Chunk(pipe=early_pipe, stage=depth, postponed=postponed)
        late = _Chunk(pipe=1 - early_pipe, stage=n_stages - 1 - depth, postponed=postponed)
        ops.append(_dual_body(early, late, half, depth, n_microbatches // 2))
    placement = {(0, s): s for s in range(n_stages)} | {
        (1, s): n_stages - 1 - s for s in range(n_stages)
    }
    return Schedule("DualPipe", n_stages, n_microbatches, placement, tuple(ops))


def dualpipev(n_stages: int, n_microbatches: int) -> Schedule:
    """DualPipeV ("cut-in-half" DualPipe): PP/2 devices, one pipeline folded into a V; device d
    holds stages d and PP-1-d, so the first and last stages (embedding, head, MTP) share
    device 0. The op order is that of DeepSeek's dualpipev.py and torch's ScheduleDualPipeV."""
    _need(n_stages >= 2 and n_stages % 2 == 0, f"DualPipeV needs an even PP >= 2, got {n_stages}")
    _need(
        n_microbatches >= n_stages,
        f"DualPipeV needs at least PP = {n_stages} micro-batches, got {n_microbatches}",
    )
    n_ranks = n_stages // 2
    ops = []
    for rank in range(n_ranks):
        postponed: deque[tuple[_Chunk, int]] = deque()
        early = _Chunk(pipe=0, stage=rank, postponed=postponed)
        late = _Chunk(pipe=0, stage=n_stages - 1 - rank, postponed=postponed)
        ops.append(_dual_body(early, late, n_ranks, rank, n_microbatches))
    placement = {(0, s): min(s, n_stages - 1 - s) for s in range(n_stages)}
    return Schedule("DualPipeV", n_stages, n_microbatches, placement, tuple(ops))


def _dual_body(
    early: _Chunk, late: _Chunk, n_ranks: int, depth: int, n_micro: int
) -> tuple[Op, ...]:
    """The eight steps of DualPipe for one rank (DualPipeV is DualPipe's first half).

    `early` is the chunk this rank meets on the way down (stage `depth`), `late` the one it
    meets on the way back (stage 2 n_ranks - 1 - depth); n_micro micro-batches go through each.
    The rank at the bottom (depth n_ranks - 1) runs its first forward/backward pair one after
    the other rather than overlapped: that backward needs the forward of the chunk just before.
    """
    ops: list[Op] = []
    ahead = n_ranks - depth - 1  # ranks between this one and the bottom
    postponed = early.postponed
    for _ in range(2 * ahead):  # 1: forwards of the early chunk fill the pipe
        ops.append(early.forward())
    for _ in range(depth + 1):  # 2: both chunks forward
        ops += [early.forward(), late.forward()]
    for _ in range(ahead):  # 3: zero bubble: input backward, weight backward, forward
        ops += [late.backward(split=True), _weight(postponed), late.forward()]
    for i in range(n_micro - 2 * n_ranks + depth + 1):  # 4: steady state, overlapped pairs
        if i == 0 and ahead == 0:
            ops += [early.forward(), late.backward()]
        else:
            ops.append(_overlap(early.forward(), late.backward()))
        ops.append(_overlap(late.forward(), early.backward()))
    for _ in range(ahead):  # 5: the late chunk's remaining backwards
        ops += [late.backward(), _overlap(late.forward(), early.backward())]
    split = False
    for i in range(depth + 1):  # 6: backwards of both; from halfway on, W is postponed
        if i == (depth + 1) // 2 and depth % 2 == 1:
            split = True
        ops.append(late.backward(split=split))
        if i == (depth + 1) // 2 and depth % 2 == 0:
            split = True
        ops.append(early.backward(split=split))
    for _ in range(ahead):  # 7: postponed weights between the early chunk's input backwards
        ops += [_weight(postponed), early.backward(split=True)]
    while postponed:  # 8: the remaining weights
        ops.append(_weight(postponed))
    return tuple(ops)


def _overlap(forward: Op, backward: Op) -> Op:
    return Op(forward.tasks + backward.tasks)


@dataclass
class _Chunk:
    """Hands out one chunk's tasks in micro-batch order. `postponed` is the rank's queue of
    weight halves still to run (shared by the rank's chunks; first in, first out, as
    DualPipe's WeightGradStore)."""

    pipe: int
    stage: int
    postponed: deque[tuple[_Chunk, int]]
    n_forward: int = 0
    n_backward: int = 0

    def forward(self) -> Op:
        self.n_forward += 1
        return Op((Task("F", self.stage, self.n_forward - 1, self.pipe),))

    def backward(self, split: bool = False) -> Op:
        mb = self.n_backward
        self.n_backward += 1
        if split:
            self.postponed.append((self, mb))
        return Op((Task("I" if split else "B", self.stage, mb, self.pipe),))


def _weight(postponed: deque[tuple[_Chunk, int]]) -> Op:
    chunk, mb = postponed.popleft()
    return Op((Task("W", chunk.stage, mb, chunk.pipe),))


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


BUILDERS: dict[str, Callable[[int, int], Schedule]] = {
    "1F1B": one_f_one_b,
    "ZB1P": zb1p,
    "DualPipe": dualpipe,
    "DualPipeV": dualpipev,
}
# ----------------------------------------------------------------------------------------------
# The event simulation


@dataclass(frozen=True)
class Slot:
    """An op placed in time on its rank."""

    start: float
    end: float
    op: Op


@dataclass(frozen=True)
class Result:
    schedule: Schedule
    times: OpTimes
    slots: tuple[tuple[Slot, ...], ...]  # per rank, in time order
    makespan: float
    busy: tuple[float, ...]  # per rank: time spent computing
    peak_activations: tuple[int, ...]  # per rank, in (stage, micro-batch) units

    @property
    def idle(self) -> tuple[float, ...]:
        """Per rank: time within the step spent waiting (the rank's bubble)."""
        return tuple(self.makespan - b for b in self.busy)

    @property
    def bubble(self) -> float:
        """The largest idle time of any rank (all ranks are equal in 1F1B and ZB1P)."""
        return max(self.idle)

    @property
    def parameters(self) -> int:
        """Chunks held by the most loaded rank (1x = one stage's parameters)."""
        return max(self.schedule.chunks_on(r) for r in range(self.schedule.n_ranks))

    @property
    def activations(self) -> int:
        return max(self.peak_activations)


def simulate(schedule: Schedule, times: OpTimes) -> Result:
    """Replay `schedule`: each rank runs its ops in order; an op starts when its rank is free
    and its inputs exist, and its outputs exist when it ends (free, asynchronous transfers).
    Raises if the schedule deadlocks (an op waits for something nobody will produce first)."""
    schedule.validate()
    last_stage = schedule.n_stages - 1
    ready: dict[tuple[str, int, int, int], float] = {}  # (event, pipe, stage, mb) -> time

    def needs(t: Task) -> list[tuple[str, int, int, int]]:
        if t.kind == "F":
            return [("F", t.pipe, t.stage - 1, t.microbatch)] if t.stage > 0 else []
        if t.kind in ("B", "I"):
            deps = [("F", t.pipe, t.stage, t.microbatch)]
            if t.stage < last_stage:
                deps.append(("dX", t.pipe, t.stage + 1, t.microbatch))
            return deps
        return [("dX", t.pipe, t.stage, t.microbatch)]  # W after its I

    def makes(t: Task) -> list[str]:
        return {"F": ["F"], "B": ["dX", "dW"], "I": ["dX"], "W": ["dW"]}[t.kind]

    n_ranks = schedule.n_ranks
    position = [0] * n_ranks
    free_at = [0.0] * n_ranks
    slots: list[list[Slot]] = [[] for _ in range(n_ranks)]
    waiting: dict[tuple[str, int, int, int], list[int]] = {}  # event -> ranks blocked on it
    runnable = deque(range(n_ranks))
    while runnable:
        rank = runnable.popleft()
        ops = schedule.ops[rank]
        while position[rank] < len(ops):
            op = ops[position[rank]]
            deps = [d for t in op.tasks for d in needs(t)]
            missing = next((d for d in deps if d not in ready), None)
            if missing is not None:
                waiting.setdefault(missing, []).append(rank)
                break
            start = max([free_at[rank], *(ready[d] for d in deps)])
            end = start + op.duration(times)
            for t in op.tasks:
                for event in makes(t):
                    key = (event, t.pipe, t.stage, t.microbatch)
                    ready[key] = end
                    runnable.extend(waiting.pop(key, []))
            slots[rank].append(Slot(start, end, op))
            free_at[rank] = end
            position[rank] += 1
    stuck = [
        f"rank {r} at {schedule.ops[r][position[r]].tasks[0].label()}"
        for r in range(n_ranks)
        if position[r] < len(schedule.ops[r])
    ]
    if stuck:
        raise RuntimeError(f"{schedule.name} deadlocks: {', '.join(stuck)}")
    busy = tuple(sum(s.end - s.start for s in rank_slots) for rank_slots in slots)
    return Result(
        schedule=schedule,
        times=times,
        slots=tuple(tuple(s) for s in slots),
        makespan=max(free_at),
        busy=busy,
        peak_activations=tuple(_peak_activations(rank_slots) for rank_slots in slots),
    )


def _peak_activations(slots: Sequence[Slot]) -> int:
    """Most (stage, micro-batch) activations held at once: one is taken when its forward
    starts and given back when its backward ends (the W half, when the backward is split)."""
    held = peak = 0
    for slot in slots:  # a rank's ops never overlap in time, so program order is time order
        for t in slot.op.tasks:
            if t.kind == "F":
                held += 1
                peak = max(peak, held)
        for t in slot.op.tasks:
            if t.kind in ("B", "W"):
                held -= 1
    return peak


# ----------------------------------------------------------------------------------------------
# The DeepSeek-V3 table and when it is exact


@dataclass(frozen=True)
class TableRow:
    bubble: float
    parameters: int  # x one stage
    activations: int  # x one stage's activations for one micro-batch
    devices: int


def formulas(name: str, n_stages: int, times: OpTimes) -> TableRow:
    """The row of the DeepSeek-V3 table (section 3.2.1, and DeepSeek's DualPipe README)."""
    pp, F, B, W, FB = n_stages, times.F, times.B, times.W, times.FB
    if name == "1F1B":
        return TableRow((pp - 1) * (F + B), 1, pp, pp)
    if name == "ZB1P":
        return TableRow((pp - 1) * (F + B - 2 * W), 1, pp, pp)
    if name == "DualPipe":
        return TableRow((pp / 2 - 1) * (FB + B - 3 * W), 2, pp + 1, pp)
    if name == "DualPipeV":
        return TableRow((pp / 2 - 1) * (FB + B - 3 * W), 2, pp + 1, pp // 2)
    raise ValueError(f"unknown schedule {name!r}; known: {', '.join(SCHEDULES)}")


def formula_conditions(name: str, n_stages: int, n_microbatches: int, times: OpTimes) -> list[str]:
    """The conditions under which the table's bubble is exactly the simulated one, each with
    whether it holds; the formula is exact when all hold (see the module docstring)."""
    F, B, W, FB, back_input = times.F, times.B, times.W, times.FB, times.I
    pp, m = n_stages, n_microbatches
    close = math.isclose
    if name == "1F1B":
        checks = [("m >= 1", m >= 1)]
    elif name == "ZB1P":
        checks = [("m >= PP", m >= pp), ("W <= F", W <= F), ("W <= B - W", back_input >= W)]
    elif name in ("DualPipe", "DualPipeV"):
        checks = [
            ("F = B - W", close(F, back_input)),
            ("W <= F", W <= F),
            ("B <= F&B <= F + B", B <= FB <= F + B or close(FB, F + B) or close(FB, B)),
        ]
        if name == "DualPipe":
            checks.insert(0, ("m even and m >= 2 PP", m % 2 == 0 and m >= 2 * pp))
        else:
            checks.insert(0, ("m >= PP", m >= pp))
    else:
        raise ValueError(f"unknown schedule {name!r}; known: {', '.join(SCHEDULES)}")
    return [f"{text}: {'yes' if ok else 'NO'}" for text, ok in checks]


def formula_exact(name: str, n_stages: int, n_microbatches: int, times: OpTimes) -> bool:
    return all(c.endswith("yes") for c in formula_conditions(name, n_stages, n_microbatches, times))


# ----------------------------------------------------------------------------------------------
# Timeline


COLOURS = {"F": "#f4a340", "B": "#7ccf5a", "I": "#b5e6a0", "W": "#6fb3f0"}


def draw_timeline(results: Sequence[Result], path: str | Path) -> Path:
    """One panel per schedule, one row per rank: forwards orange, full backwards green, input
    backwards light green, weight backwards blue; an overlapped F&B is a forward and a backward
    cell inside one black frame. Cells show the micro-batch (a prime for DualPipe's upward
    pipe). Written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    path = Path(path)
    heights = [r.schedule.n_ranks + 1.6 for r in results]
    width = max(r.makespan for r in results)
    fig, axes = plt.subplots(
        len(results),
        1,
        figsize=(max(8.0, min(0.25 * width, 24.0)), 0.42 * sum(heights) + 0.6),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    for ax, result in zip(axes[:, 0], results, strict=True):
        for rank, rank_slots in enumerate(result.slots):
            for slot in rank_slots:
                _draw_slot(ax, slot, rank, result.times, Rectangle)
        sched = result.schedule
        ax.set_xlim(0, width)
        ax.set_ylim(sched.n_ranks, 0)
        ax.set_yticks([r + 0.5 for r in range(sched.n_ranks)])
        ax.set_yticklabels([f"rank {r}" for r in range(sched.n_ranks)], fontsize=7)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(
            f"{sched.name}: PP={sched.n_stages}, {sched.n_microbatches} micro-batches, "
            f"{sched.n_ranks} devices; step {result.makespan:g}, bubble {result.bubble:g}, "
            f"activations {result.activations}",
            fontsize=8,
            loc="left",
        )
    t = results[0].times
    legend = [
        Patch(color=COLOURS["F"], label=f"F = {t.F:g}"),
        Patch(color=COLOURS["B"], label=f"B = {t.B:g}"),
        Patch(color=COLOURS["I"], label=f"B for input = {t.I:g}"),
        Patch(color=COLOURS["W"], label=f"W = {t.W:g}"),
        Patch(facecolor="white", edgecolor="black", label=f"F&B = {t.FB:g}"),
    ]
    axes[-1, 0].legend(
        handles=legend, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=5, fontsize=7
    )
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    tmp.replace(path)
    return path


def _draw_slot(ax: object, slot: Slot, rank: int, times: OpTimes, rectangle: type) -> None:
    from matplotlib.axes import Axes

    assert isinstance(ax, Axes)
    if slot.op.overlapped:
        # Split the frame in proportion to the two halves' own durations.
        f_task, b_task = slot.op.tasks
        share = times.F / (times.F + times.B)
        mid = slot.start + share * (slot.end - slot.start)
        parts = [(slot.start, mid, f_task), (mid, slot.end, b_task)]
    else:
        parts = [(slot.start, slot.end, slot.op.tasks[0])]
    for start, end, task in parts:
        ax.add_patch(
            rectangle((start, rank + 0.05), end - start, 0.9, color=COLOURS[task.kind], lw=0)
        )
        ax.text(
            (start + end) / 2,
            rank + 0.5,
            f"{task.microbatch}" + ("'" if task.pipe else ""),
            ha="center",
            va="center",
            fontsize=5,
        )
    ax.add_patch(
        rectangle(
            (slot.start, rank + 0.05), slot.end - slot.start, 0.9, fill=False, lw=0.4, ec="black"
        )
    )


# ----------------------------------------------------------------------------------------------
# Command line


@dataclass(frozen=True)
class TableEntry:
    """One schedule simulated beside its row of the table."""

    result: Result
    formula: TableRow
    exact: bool  # the formula's conditions hold, so the two must agree


def table(n_stages: int, n_microbatches: dict[str, int], times: OpTimes) -> list[TableEntry]:
    """Every schedule simulated at PP = n_stages, beside the table's formulas."""
    return [
        TableEntry(
            simulate(BUILDERS[name](n_stages, n_microbatches[name]), times),
            formulas(name, n_stages, times),
            formula_exact(name, n_stages, n_microbatches[name], times),
        )
        for name in SCHEDULES
    ]


def default_microbatches(n_stages: int) -> dict[str, int]:
    """The smallest counts every schedule accepts with the paper's figure in mind: 2 PP + 4
    (DualPipe's figure: PP = 8, 20 micro-batches; DualPipeV's: PP = 8, 10)."""
    return {
        "1F1B": 2 * n_stages + 4,
        "ZB1P": 2 * n_stages + 4,
        "DualPipe": 2 * n_stages + 4,
        "DualPipeV": n_stages + 2,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.parallel.simulate",
        description="Simulate 1F1B, ZB1P, DualPipe and DualPipeV; print the DeepSeek-V3 table "
        "beside the simulation and draw the timelines.",
    )
    parser.add_argument("--pp", type=int, default=8, help="pipeline stages (even)")
    parser.add_argument("--F", type=float, default=1.0)
    parser.add_argument("--B", type=float, default=2.0)
    parser.add_argument("--W", type=float, default=1.0)
    parser.add_argument("--FB", type=float, default=3.0, help="overlapped forward & backward")
    parser.add_argument("--png", type=Path, default=None, help="write the timelines here")
    args = parser.parse_args(argv)
    try:
        times = OpTimes(F=args.F, B=args.B, W=args.W, FB=args.FB)
        rows = table(args.pp, default_microbatches(args.pp), times)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"PP={args.pp} F={times.F:g} B={times.B:g} W={times.W:g} F&B={times.FB:g}")
    print("schedule     m   bubble  formula  params  act  dev  conditions hold")
    for e in rows:
        r, f = e.result, e.formula
        print(
            f"{r.schedule.name:<10} {r.schedule.n_microbatches:>3} {r.bubble:>8.3g} "
            f"{f.bubble:>8.3g} {r.parameters:>6}x {r.activations:>4} {r.schedule.n_ranks:>4}  "
            f"{e.exact}"
        )
    if args.png is not None:
        draw_timeline([e.result for e in rows], args.png)
        print(f"timeline: {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
