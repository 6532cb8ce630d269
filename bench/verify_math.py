"""Benchmark: our math verifier against math-verify, same corpus, one core each.

    python bench/verify_math.py           # ~2,400 pairs
    python bench/verify_math.py --quick   # ~300 pairs, under a minute

The corpus: toy tasks from `generators.tasks` (arithmetic, linear, algebra),
each answered four ways in the R1 format (the worked solution; the answer
boxed in LaTeX; a wrong answer; and one of a phrase form, a decimal form, a
unit, a hedge or no answer at all), plus the hand-written pairs of
tests/verifiers/math/labelled_pairs.jsonl (countdown rows aside). Countdown
tasks are timed for our verifier alone: math-verify has no countdown mode.

How each side runs, on the same single CPU (the process pins itself, and its
children inherit the pin):

- ours: `MathVerifier(workers=1, cache_size=0)`, the batch API, the default
  5 s deadline; the fast path in this process, sympy in one worker;
- math-verify: `parse` and `verify` in a child process's main thread, with
  its own signal-based timeouts (5 s each). It does not read the R1 tags, so
  it is given the R1 answer region (the `<answer>` block, else the text after
  `</think>`), and the gold as `$gold$`, as its documentation writes golds.
  A watchdog kills the
  child if one pair takes over 30 s (a hang: signals cannot interrupt C
  code), counts it and restarts after that pair.

Throughput counts only checking time: imports and worker start-up are
excluded on both sides. Agreement compares "correct" against "not correct".
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import emit_json, print_table, rounded  # noqa: E402

LABELLED = ROOT / "tests" / "verifiers" / "math" / "labelled_pairs.jsonl"
DEADLINE_S = 5.0
WATCHDOG_S = 30.0
# A check back later than its deadline by more than this counts as a hang.
HANG_GRACE_S = 1.0

Pair = dict[str, Any]


# --- corpus --------------------------------------------------------------------


def _latex_number(text: str) -> str:
    value = Fraction(text)
    if value.denominator == 1:
        return str(value.numerator)
    sign = "-" if value < 0 else ""
    return f"{sign}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"


def _latex(gold: str, family: str) -> str:
    if family == "toy-algebra":
        return gold.replace("**", "^").replace("*", "")
    if family == "toy-linear" and "=" in gold:
        values = gold.split("=")[1].strip()[1:-1]
        parts = [_latex_number(v.strip()) for v in values.split(",")]
        return "\\left(" + ", ".join(parts) + "\\right)"
    return _latex_number(gold)


def _wrong(gold: str, family: str, rng: random.Random) -> str:
    if family == "toy-algebra":
        head, _, last = gold.rpartition(" ")
        if last.isdigit():
            return f"{head} {int(last) + rng.randint(1, 9)}"
        return gold + " + 1"
    if family == "toy-linear" and "=" in gold:
        names, values = gold.split("=")
        items = [v.strip() for v in values.strip()[1:-1].split(",")]
        k = rng.randrange(len(items))
        items[k] = str(Fraction(items[k]) + 1)
        return f"{names.strip()} = ({', '.join(items)})"
    return str(Fraction(gold) + rng.choice((-1, 1)) * Fraction(rng.randint(1, 3)))


def _decimal(gold: str) -> str | None:
    try:
        value = Fraction(gold)
    except ValueError:
        return None
    return f"{float(value):.4f}".rstrip("0").rstrip(".")


def _variants(task: Any, index: int, rng: random.Random) -> list[Pair]:
    family, gold = task.source, task.gold
    think = task.solution.split("</think>")[0] + "</think>"
    latex = _latex(gold, family)
    out = [
        {"kind": "worked solution", "completion": task.solution},
        {"kind": "boxed LaTeX", "completion": f"{think}\nSo the answer is $\\boxed{{{latex}}}$."},
        {
            "kind": "wrong answer",
            "completion": f"{think}<answer>{_wrong(gold, family, rng)}</answer>",
        },
    ]
    extra = index % 5
    if extra == 0:
        out.append({"kind": "phrase", "completion": f"{think}\nThe final answer is **${latex}$**."})
    elif extra == 1 and _decimal(gold) is not None:
        out.append({"kind": "decimal", "completion": f"{think}<answer>{_decimal(gold)}</answer>"})
    elif extra == 2 and family == "toy-arithmetic":
        out.append({"kind": "unit", "completion": f"{think}<answer>{gold} units</answer>"})
    elif extra == 3:
        other = _wrong(gold, family, rng)
        out.append(
            {
                "kind": "hedge",
                "completion": f"{think}<answer>{latex} \\text{{ or }} {other}</answer>",
            }
        )
    else:
        out.append({"kind": "no answer", "completion": think})
    for pair in out:
        pair.update(gold=gold, family=family)
    return out


def build_corpus(quick: bool) -> tuple[list[Pair], list[Pair]]:
    """(shared corpus, countdown pairs): deterministic for a given size."""
    from generators.tasks import SOURCES

    per_level = {"toy-arithmetic": 60, "toy-linear": 35, "toy-algebra": 35, "toy-countdown": 40}
    levels = (1, 2, 3, 4)
    if quick:
        per_level = {name: max(3, n // 8) for name, n in per_level.items()}
    rng = random.Random("bench-verify-math")
    shared: list[Pair] = []
    countdown: list[Pair] = []
    for family, count in per_level.items():
        for difficulty in levels:
            for index, task in enumerate(SOURCES[family].generate(count, 0, difficulty)):
                if family == "toy-countdown":
                    countdown.append({"gold": task.gold, "completion": task.solution})
                    wrong = task.solution.replace("</answer>", "+1</answer>")
                    countdown.append({"gold": task.gold, "completion": wrong})
                    continue
                shared.extend(_variants(task, index, rng))
    hand_written = 0
    for line in LABELLED.read_text().splitlines():
        row = json.loads(line)
        if '"target"' in row["gold"]:
            continue
        if quick and hand_written == 60:
            break
        hand_written += 1
        shared.append(
            {
                "gold": row["gold"],
                "completion": row["completion"],
                "kind": "hand-written",
                "family": "labelled",
                "note": row["note"],
            }
        )
    return shared, countdown


# --- our verifier -----------------------------------------------------------------


def run_ours(pairs: list[Pair], countdown: list[Pair]) -> dict[str, Any]:
    from verifiers.math import MathVerifier

    with MathVerifier(workers=1, timeout=DEADLINE_S, cache_size=0) as verifier:
        # Start the worker before the clock (a pair only sympy decides):
        # start-up is not checking time.
        verifier.verify("\\sqrt{2}", "\\boxed{\\frac{2}{\\sqrt{2}}}")
        before = dataclasses.replace(verifier.stats)
        started = time.perf_counter()
        verdicts = verifier.verify_many([(p["gold"], p["completion"]) for p in pairs])
        seconds = time.perf_counter() - started
        after = dataclasses.replace(verifier.stats)
        started = time.perf_counter()
        countdown_verdicts = verifier.verify_many([(p["gold"], p["completion"]) for p in countdown])
        countdown_seconds = time.perf_counter() - started
        slowest = max(verifier.stats.max_fast_s, verifier.stats.max_remote_s)
    return {
        "verdicts": verdicts,
        "seconds": seconds,
        "fast": after.fast - before.fast,
        "remote": after.remote - before.remote,
        "timeouts": after.timeouts - before.timeouts,
        "restarts": after.restarts - before.restarts,
        "max_check_s": slowest,
        "hangs": int(slowest > DEADLINE_S + HANG_GRACE_S),
        "countdown_seconds": countdown_seconds,
        "countdown_correct": sum(v.correct for v in countdown_verdicts),
    }


# --- math-verify, in a child with a watchdog ------------------------------------------------


def _anchor_input(pair: Pair) -> tuple[str, str]:
    """What math-verify is given: `$gold$`, and the R1 answer region of the completion.

    math-verify knows no R1 tags, so it gets what an R1 pipeline would hand
    it: the last `<answer>` block's content, else the text after `</think>`,
    else the whole completion. It then finds the answer in that text itself.
    """
    completion = pair["completion"]
    blocks = re.findall(r"<answer>(.*?)</answer>", completion, re.DOTALL)
    if blocks:
        region = blocks[-1]
    elif "</think>" in completion:
        region = completion.rsplit("</think>", 1)[1]
    else:
        region = completion
    return f"${pair['gold']}$", region


def anchor_child(corpus_path: str, start: int, out_path: str) -> None:
    """Child mode: check pairs from `start`, appending `index correct seconds` lines."""
    from math_verify import parse, verify

    pairs = json.loads(Path(corpus_path).read_text())
    with open(out_path, "a") as out:
        for index in range(start, len(pairs)):
            gold, completion = pairs[index]
            began = time.perf_counter()
            try:
                ok = bool(verify(parse(gold), parse(completion)))
            except Exception:
                ok = False
            seconds = time.perf_counter() - began
            out.write(f"{index} {int(ok)} {seconds:.6f}\n")
            out.flush()


def run_anchor(pairs: list[Pair]) -> dict[str, Any]:
    results: dict[int, bool] = {}
    hung: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        corpus_path = Path(tmp) / "corpus.json"
        corpus_path.write_text(json.dumps([_anchor_input(p) for p in pairs]))
        out_path = Path(tmp) / "out.txt"
        out_path.touch()
        start = 0
        while start < len(pairs):
            command = [sys.executable, __file__, "--anchor-child"]
            child = subprocess.Popen([*command, str(corpus_path), str(start), str(out_path)])
            count, last_progress = len(results), time.monotonic()
            while child.poll() is None:
                time.sleep(0.05)
                now_count = _read_anchor(out_path, results)
                if now_count != count:
                    count, last_progress = now_count, time.monotonic()
                elif time.monotonic() - last_progress > WATCHDOG_S:
                    child.kill()
                    child.wait()
            _read_anchor(out_path, results)
            done = start
            while done in results:
                done += 1
            if done == len(pairs):
                break
            # The child stopped short: killed by the watchdog, or crashed, on pair `done`.
            hung.append(done)
            results[done] = False
            start = done + 1
        seconds = _anchor_seconds(out_path)
    return {
        "correct": [results[i] for i in range(len(pairs))],
        "seconds": seconds,
        "hangs": len(hung),
        "hung": hung,
    }


def _read_anchor(path: Path, results: dict[int, bool]) -> int:
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            results[int(parts[0])] = parts[1] == "1"
    return len(results)


def _anchor_seconds(path: Path) -> float:
    return sum(float(line.split()[2]) for line in path.read_text().splitlines() if line.strip())


# --- report ------------------------------------------------------------------------


def _excerpt(text: str, width: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else "..." + flat[-(width - 3) :]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small corpus, under a minute")
    parser.add_argument(
        "--anchor-child", nargs=3, metavar=("CORPUS", "START", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.anchor_child:
        corpus, start, out = args.anchor_child
        anchor_child(corpus, int(start), out)
        return 0
    # One core for everything, children included: the comparison is per core.
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})

    pairs, countdown = build_corpus(args.quick)
    ours = run_ours(pairs, countdown)
    anchor = run_anchor(pairs)

    ours_ok = [v.correct for v in ours["verdicts"]]
    agree = sum(a == b for a, b in zip(ours_ok, anchor["correct"], strict=True))
    n = len(pairs)
    ours_per_s = n / ours["seconds"]
    anchor_per_s = (n - anchor["hangs"]) / anchor["seconds"] if anchor["seconds"] else 0.0
    ratio = ours_per_s / anchor_per_s if anchor_per_s else float("inf")

    families = Counter(p["family"] for p in pairs)
    shares = ", ".join(f"{name} {count}" for name, count in families.most_common())
    print(f"corpus: {n} pairs ({shares}), one CPU (#{cpu})")
    print_table(
        ["verifier", "pairs", "seconds", "pairs/s", "correct", "hangs", "max check s"],
        [
            [
                "ours (1 worker)",
                n,
                rounded(ours["seconds"]),
                round(ours_per_s, 1),
                sum(ours_ok),
                ours["hangs"],
                rounded(ours["max_check_s"]),
            ],
            [
                "math-verify 0.9",
                n,
                rounded(anchor["seconds"]),
                round(anchor_per_s, 1),
                sum(anchor["correct"]),
                anchor["hangs"],
                None,
            ],
            [
                "ours, countdown",
                len(countdown),
                rounded(ours["countdown_seconds"]),
                round(len(countdown) / ours["countdown_seconds"], 1),
                ours["countdown_correct"],
                0,
                None,
            ],
        ],
    )
    print(
        f"\nratio {ratio:.1f}x; agreement {agree}/{n} = {agree / n:.4f}; "
        f"ours: {ours['fast']} fast path, {ours['remote']} in the worker, "
        f"{ours['timeouts']} timeouts; math-verify hangs at {anchor['hung']}"
    )

    classes: Counter[tuple[str, str, str, str]] = Counter()
    disagreements = []
    for pair, verdict, theirs in zip(pairs, ours["verdicts"], anchor["correct"], strict=True):
        if verdict.correct != theirs:
            ours_text = f"{verdict.verdict}/{verdict.reason}"
            theirs_text = "correct" if theirs else "not correct"
            classes[pair["family"], pair["kind"], ours_text, theirs_text] += 1
            disagreements.append((pair, ours_text, theirs_text))
    print(f"\ndisagreements by class ({len(disagreements)}):")
    print_table(
        ["family", "completion kind", "ours", "math-verify", "pairs"],
        [[*key, count] for key, count in classes.most_common()],
    )
    print("\ndisagreements (gold | completion, end | ours | math-verify):")
    for pair, ours_text, theirs_text in disagreements:
        note = f"  [{pair['note']}]" if pair.get("note") else ""
        print(
            f"  {_excerpt(pair['gold'], 30)} | {_excerpt(pair['completion'])} | "
            f"{ours_text} | {theirs_text}{note}"
        )
    emit_json(
        {
            "bench": "verify_math",
            "quick": args.quick,
            "pairs": n,
            "ours_per_s": round(ours_per_s, 1),
            "anchor_per_s": round(anchor_per_s, 1),
            "ratio": round(ratio, 2),
            "agreement": round(agree / n, 4),
            "disagreements": len(disagreements),
            "hangs": ours["hangs"],
            "anchor_hangs": anchor["hangs"],
            "timeouts": ours["timeouts"],
            "max_check_s": rounded(ours["max_check_s"]),
            "deadline_s": DEADLINE_S,
            "fast_path_share": round(ours["fast"] / n, 4),
            "countdown_pairs": len(countdown),
            "countdown_per_s": round(len(countdown) / ours["countdown_seconds"], 1),
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
