"""CoT routing: toy families route to their own track, tricky prompts route by rule, the judge
decides only what the rules leave open, and the non-reasoning track loses its chain of thought."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from filters.routing import (
    RouteDecision,
    route,
    route_batch,
    route_with_judge,
    strip_reasoning,
)
from generators.tasks import MAX_DIFFICULTY, SOURCES
from generators.tasks.conversation import load_table
from store.record import to_table, validate_sample

TASKS_PER_LEVEL = 40
# sympy builds each algebra task (about 5 ms): fewer of them keep the test fast.
PER_LEVEL = {"toy-algebra": 10}
SEEDS = (0, 1)


def test_toy_families_route_to_their_track() -> None:
    """Every toy family, every difficulty: the rules must be right on all of them, by a rule."""
    lines = [f"{'source':<20} {'track':<14} {'prompts':>7} {'accuracy':>9}  rules"]
    wrong: list[tuple[str, str, RouteDecision]] = []
    total = correct = 0
    for name, source in sorted(SOURCES.items()):
        rules: Counter[str] = Counter()
        hits = n = 0
        track = ""
        for seed in SEEDS:
            for difficulty in range(1, MAX_DIFFICULTY + 1):
                count = PER_LEVEL.get(name, TASKS_PER_LEVEL)
                for task in source.generate(count, seed, difficulty):
                    decision = route(task.prompt)
                    track = task.track
                    rules[decision.rule] += 1
                    n += 1
                    if decision.track == task.track and decision.rule != "default":
                        hits += 1
                    else:
                        wrong.append((name, task.prompt, decision))
        total, correct = total + n, correct + hits
        lines.append(f"{name:<20} {track:<14} {n:>7} {hits / n:>9.1%}  {dict(rules)}")
    lines.append(f"{'all':<20} {'':<14} {total:>7} {correct / total:>9.1%}")
    print("\n" + "\n".join(lines))
    assert not wrong, f"misrouted ({len(wrong)}): {wrong[:5]}"
    assert total == sum(
        PER_LEVEL.get(name, TASKS_PER_LEVEL) * len(SEEDS) * MAX_DIFFICULTY for name in SOURCES
    )


def test_every_bundled_fact_routes_factual() -> None:
    questions = [question for question, _ in load_table("facts.tsv")]
    assert len(questions) >= 75
    assert {route(q) for q in questions} == {RouteDecision("non_reasoning", "factual")}


@pytest.mark.parametrize(
    ("prompt", "rule"),
    [
        ("What is 2+3?", "trivial_arithmetic"),
        ("2+3", "trivial_arithmetic"),
        ("Hello! What is 2+3?", "trivial_arithmetic"),
        ("What is 7 x 8?", "trivial_arithmetic"),
        ("144/12", "trivial_arithmetic"),
        # the quoted word is data, not a request for a plan
        ('Translate "plan" into French.', "translation"),
        ("Translate this sentence into German: I need a step-by-step plan.", "translation"),
        ('How do you say "three" in Spanish?', "translation"),
        ("Hello, who are you?", "self_cognition"),
        ("Who made you?", "self_cognition"),
        ("What is your name?", "self_cognition"),
        ("Thanks!", "greeting"),
        ("Good morning!", "greeting"),
        ("Write a poem about autumn.", "writing"),
        ("Tell me a joke.", "writing"),
        ("Summarize the plot of Hamlet.", "writing"),
        ("Who wrote Romeo and Juliet?", "factual"),
        ("Quick question: What is the capital of Peru?", "factual"),
        ("What is the smallest prime number?", "factual"),
        ("How many legs does a spider have?", "factual"),
    ],
)
def test_tricky_prompts_without_a_chain_of_thought(prompt: str, rule: str) -> None:
    assert route(prompt) == RouteDecision("non_reasoning", rule)


@pytest.mark.parametrize(
    ("prompt", "rule"),
    [
        ("What is 12+7-5?", "arithmetic_chain"),
        # one operation, but not a small one
        ("What is 13*14?", "word_problem"),
        ("What is 250+380?", "word_problem"),
        ("What is 7/2?", "word_problem"),
        # a greeting does not make a problem conversational
        ("Hi! Solve 3x + 5 = 11.", "math"),
        ("Solve for y: 2y - 4 = 10", "math"),
        ("What is the derivative of x^2?", "math"),
        ("Expand (x+1)**2", "math"),
        ("Who are you, and can you prove that there are infinitely many primes?", "math"),
        ("Write a Python function that reverses a string.", "code"),
        # translating code is programming, not translation
        ("Translate this Python function to Rust: def f(x): return x", "code"),
        ("Implement a binary search algorithm.", "code"),
        ("```\nprint(1)\n```\nWhat does this print?", "code"),
        ("What does this snippet print?", "code"),
        ("If a train travels 60 km in 1.5 hours, what is its speed?", "word_problem"),
        (
            "Grace has five shells. Her collection triples twice. How many does she have?",
            "word_problem",
        ),
        ("Plan a 3-day trip to Rome.", "planning"),
        ("Good morning, can you help me plan my week?", "planning"),
        ("Why is the sky blue?", "planning"),
        ("Compare bubble sort and merge sort.", "planning"),
        # no rule is sure: think by default (and ask the judge when there is one)
        ("Is 91 prime?", "default"),
        ("Hello, can you tell me how many legs a spider has?", "default"),
    ],
)
def test_tricky_prompts_that_need_reasoning(prompt: str, rule: str) -> None:
    assert route(prompt) == RouteDecision("reasoning", rule)


class FakeJudge:
    """A judge that answers non_reasoning for questions about legs, and records its calls."""

    def __init__(self, answer: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.answer = answer

    def __call__(self, prompts: list[str]) -> list[str]:
        self.calls.append(list(prompts))
        if self.answer is not None:
            return [self.answer] * len(prompts)
        return ["non_reasoning" if "legs" in p else "reasoning" for p in prompts]


def test_the_judge_decides_only_what_the_rules_leave_open() -> None:
    prompts = [
        "Hello, can you tell me how many legs a spider has?",
        "What is 2+3?",
        "Is 91 prime?",
        "Solve 3x + 5 = 11.",
    ]
    judge = FakeJudge()
    decisions = route_with_judge(prompts, judge)
    assert judge.calls == [[prompts[0], prompts[2]]]  # one call, unsure prompts only
    assert decisions == [
        RouteDecision("non_reasoning", "judge"),
        RouteDecision("non_reasoning", "trivial_arithmetic"),
        RouteDecision("reasoning", "judge"),
        RouteDecision("reasoning", "math"),
    ]
    assert route_with_judge(prompts) == [route(p) for p in prompts]
    sure = FakeJudge()
    route_with_judge(["Hi!", "What is 2+3?"], sure)
    assert sure.calls == []


def test_a_bad_judge_answer_is_an_error_naming_the_prompt() -> None:
    with pytest.raises(ValueError, match=r"judge answered 'maybe' for prompt 0"):
        route_with_judge(["Is 91 prime?"], FakeJudge("maybe"))
    with pytest.raises(ValueError, match="2 answers for 1 prompts"):
        route_with_judge(["Is 91 prime?"], lambda ps: ["reasoning", "reasoning"])
    assert route_with_judge(["Is 91 prime?"], FakeJudge(" Non_Reasoning\n"))[0].track == (
        "non_reasoning"
    )


@pytest.mark.parametrize(
    ("completion", "stripped"),
    [
        ("<think>The user greets me.</think><answer>Hello!</answer>", "<think></think><answer>Hello!</answer>"),
        ("<think></think><answer>Paris</answer>", "<think></think><answer>Paris</answer>"),
        # the released R1 form: the plain answer after </think>
        ("<think>Capital of France.</think>\nParis", "<think></think><answer>Paris</answer>"),
    ],
)  # fmt: skip
def test_strip_reasoning(completion: str, stripped: str) -> None:
    assert strip_reasoning(completion) == stripped


@pytest.mark.parametrize(
    "completion", ["Paris", "<think>unclosed", "<think>only thinking</think>", "<think>x</think><answer> </answer>"]
)  # fmt: skip
def test_strip_reasoning_needs_an_answer(completion: str) -> None:
    with pytest.raises(ValueError, match="no answer"):
        strip_reasoning(completion)


def row(prompt: str, completion: str, **overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "prompt": prompt,
        "completion": completion,
        "reasoning": None,
        "domain": "general",
        "track": "reasoning",
        "source": "rl-checkpoint",
    }
    raw.update(overrides)
    return validate_sample(raw)


def test_route_batch_sets_tracks_and_strips_the_non_reasoning_cot() -> None:
    rows = [
        row("Who are you?", "<think>They ask who I am.</think><answer>A toy model.</answer>"),
        row("What is 12+7-5?", "<think>12+7=19.\n19-5=14.</think><answer>14</answer>"),
        row("Hello!", "<think>A greeting, no answer follows</think>", sample_index=1),
        row("Thanks!", "<think>x</think><answer>y</answer>", kept=False, filter_reason="a:b"),
        row("Is 91 prime?", "<think>91 = 7*13.</think><answer>No</answer>"),
    ]
    out, stats = route_batch(to_table(rows), FakeJudge("reasoning"))
    assert out.num_rows == 5
    assert out.column("track").to_pylist() == [
        "non_reasoning",
        "reasoning",
        "non_reasoning",
        "non_reasoning",
        "reasoning",
    ]
    assert out.column("completion").to_pylist()[:2] == [
        "<think></think><answer>A toy model.</answer>",
        rows[1]["completion"],
    ]
    assert out.column("reasoning").to_pylist()[0] == ""
    assert out.column("answer").to_pylist()[0] == "A toy model."
    assert out.column("filter_reason").to_pylist() == [None, None, "routing:no_answer", "a:b", None]
    assert out.column("completion").to_pylist()[3] == rows[3]["completion"]  # dropped: untouched
    assert stats.dropped == Counter({"routing:no_answer": 1})
    assert (stats.rows_in, stats.skipped, stats.kept) == (5, 1, 3)
    assert stats.tallies == Counter(
        {
            "track:non_reasoning": 3,
            "track:reasoning": 2,
            "rule:self_cognition": 1,
            "rule:arithmetic_chain": 1,
            "rule:greeting": 2,
            "rule:judge": 1,
        }
    )
