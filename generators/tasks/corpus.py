"""The toy universe's corpora: the base model's pretraining corpus (worked solutions of every
family, and mixed-language plain text, as Sample rows for the store), and `toy_corpus()`, the
texts a fresh checkpoint's tokenizer is trained on (`r1f model init`).

    rows = build_corpus(CorpusConfig(seed=0, r1_format_share=0.2))
    ref = corpus_table(store, CorpusConfig(...), lineage)   # builds or reuses NAME@V

What a base model has seen shapes what reinforcement learning can do with it, so each knob
stands for one property R1-Zero needs in its base:

- **Rarely the R1 format.** Only `r1_format_share` of the worked solutions are written
  `<think>steps</think><answer>X</answer>`; the rest are plain: the same steps, then a closing
  sentence ("The answer is X."), with no tags. Under the R1-Zero template (which opens
  `<think>` for the model) the base then closes the block and tags its answer only sometimes,
  leaving the format reward something to teach.
- **Language mixing.** `mixed_language_share` of the reasoning solutions have Chinese
  connectives at the start of their steps ("首先\uff0c3+19=22.", the comma full-width), and `text_documents` short
  stories switch between English and Chinese sentence by sentence. The chains of thought of
  such a base mix languages sometimes: what R1's language-consistency reward is for
  (`verifiers.language` counts the Chinese words as off-target for English).
- **Arithmetic facts.** `drill_documents` plain-text documents of `drill_facts` one-step
  facts each (`7*8=56.`, `56/8=7.`, `63+9=72.`, one per line, written as the worked
  solutions write a step). With `drill_steps_from` the facts are the steps of freshly drawn
  problems of those families, so each fact comes as often as the problems need it (the few
  hundred small sums and products most steps use come far more often than the rest);
  without it they are drawn uniformly over the difficulty-1 operand ranges. A base model has
  met far more arithmetic than a few thousand worked problems hold; without the drills the
  tiny base copies the problem's numbers into its steps but gets most single steps wrong
  (measured: docs/training.md), which leaves reinforcement learning no correct samples to
  reinforce.
- **Held-out problems.** Every task is drawn with task seed `seed` (and its index); evaluation
  draws with other seeds, so its problems were never trained on (up to the chance that two
  seeds draw the same small problem, which the docs measure).

Each row's `completion` is the solution text; `prompt` the task's prompt. How a row becomes a
document (chat template or `prompt\\ncompletion`) is the trainer's choice (`data.chat_share`).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from generators.tasks import SOURCES
from generators.tasks.base import FamilySource, Task
from store.config import config_hash
from store.lineage import Lineage, TableRef
from store.record import validate_sample
from store.store import Store

BACKEND = "toy-corpus"
TEXT_SOURCE = "toy-mixed-text"
_SOLUTION = re.compile(r"^<think>(.*)</think><answer>(.*)</answer>$", re.DOTALL)

_CLOSINGS = ("The answer is {a}.", "So the answer is {a}.", "Answer: {a}", "The result is {a}.")
# Chinese step connectives: "first", "then", "next", "so", "finally".
# The comma is the full-width one (U+FF0C) Chinese text uses.
_ZH_CONNECTIVES = ("首先\uff0c", "然后", "接着\uff0c", "所以", "最后\uff0c")


def _default_families() -> dict[str, int]:
    return {
        "toy-arithmetic": 3000,
        "toy-countdown": 3000,
        "toy-linear": 200,
        "toy-algebra": 200,
        "toy-greeting": 100,
        "toy-self-cognition": 100,
        "toy-facts": 200,
        "toy-translation": 200,
    }


@dataclass(frozen=True)
class CorpusConfig:
    table: str = "toy-pretrain"
    seed: int = 0  # task seed of every document; evaluation must use other seeds
    difficulties: list[int] = field(default_factory=lambda: [1])
    # Documents per family at each difficulty.
    families: dict[str, int] = field(default_factory=_default_families)
    r1_format_share: float = 0.2
    mixed_language_share: float = 0.1
    text_documents: int = 200
    drill_documents: int = 0
    drill_facts: int = 8  # facts per drill document
    # Families whose worked solutions the drills take their facts from, in the proportion
    # those solutions use them (problems drawn apart from the documents'); empty: facts
    # drawn uniformly over the difficulty-1 operand ranges (`arithmetic_fact`).
    drill_steps_from: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.families) - set(SOURCES))
        if unknown:
            raise ValueError(f"families: unknown {unknown[0]!r}; known: {', '.join(SOURCES)}")
        for name in ("r1_format_share", "mixed_language_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.text_documents < 0 or any(n < 0 for n in self.families.values()):
            raise ValueError("document counts must be >= 0")
        if self.drill_documents < 0 or self.drill_facts < 1:
            raise ValueError("drill_documents must be >= 0 and drill_facts >= 1")
        for name in self.drill_steps_from:
            if not isinstance(SOURCES.get(name), FamilySource):
                raise ValueError(
                    f"drill_steps_from: {name!r} has no worked steps to drill; "
                    "use a family such as toy-arithmetic or toy-countdown"
                )


def with_chinese_connectives(think: str, rng: random.Random) -> str:
    """Steps with Chinese connectives in front of most lines: language mixing in a CoT."""
    lines = think.split("\n")
    return "\n".join(
        (rng.choice(_ZH_CONNECTIVES) + line) if rng.random() < 0.8 else line for line in lines
    )


def _parts(task: Task) -> tuple[str, str]:
    match = _SOLUTION.match(task.solution)
    if match is None:
        raise ValueError(f"{task.prompt_id}: solution is not <think>..</think><answer>..</answer>")
    return match.group(1), match.group(2)


def _document(task: Task, cfg: CorpusConfig) -> tuple[str, str]:
    """(completion, style) of one task's document, from the task's own seeded stream."""
    rng = random.Random(f"corpus:{task.prompt_id}")
    think, answer = _parts(task)
    style = "r1" if rng.random() < cfg.r1_format_share else "plain"
    if think and rng.random() < cfg.mixed_language_share:
        think = with_chinese_connectives(think, rng)
        style += "+zh"
    if style.startswith("r1"):
        return f"<think>{think}</think><answer>{answer}</answer>", style
    if not think:
        return answer, style
    return think + "\n" + rng.choice(_CLOSINGS).format(a=answer), style


# ----------------------------------------------------------------------------------------------
# Mixed-language plain text

_NAMES = ("Ana", "Ben", "Chloe", "Dev", "Emma", "Hugo", "Lena", "Omar", "Priya", "Sam")
_THINGS = (("apples", "苹果"), ("books", "书"), ("cards", "卡片"), ("shells", "贝壳"))
# Story sentences as (English, Chinese) pairs; {p} a name, {t}/{tz} a thing, {n}.. numbers.
_STORY = (
    ("{p} has {n} {t}.", "{p}有{n}个{tz}。"),
    ("Then {p} buys {m} more.", "然后{p}又买了{m}个。"),
    ("Now {p} has {s} {t}.", "现在{p}有{s}个{tz}。"),
    ("{p} gives {g} {t} to a friend.", "{p}给了朋友{g}个{tz}。"),
    ("In the end {p} keeps {r} {t}.", "最后{p}留下了{r}个{tz}。"),
)


def mixed_text(rng: random.Random) -> tuple[str, str]:
    """(prompt, story): a five-sentence story whose sentences switch between English and
    Chinese at random, numbers kept consistent."""
    p = rng.choice(_NAMES)
    t, tz = rng.choice(_THINGS)
    n, m = rng.randint(2, 20), rng.randint(1, 10)
    g = rng.randint(1, n + m - 1)
    values = {"p": p, "t": t, "tz": tz, "n": n, "m": m, "s": n + m, "g": g, "r": n + m - g}
    sentences = [rng.choice(pair).format(**values) for pair in _STORY]
    prompt = rng.choice(("Tell a short story about {p}.", "Write a few sentences about {p}."))
    return prompt.format(p=p), " ".join(sentences)


# ----------------------------------------------------------------------------------------------
# Arithmetic fact drills

DRILL_SOURCE = "toy-arithmetic-drill"


def arithmetic_fact(rng: random.Random) -> str:
    """One step as the difficulty-1 worked solutions write it: a product of two operands up
    to 20, the division that undoes one, or a sum or difference with a result up to 100."""
    op = rng.choice("*/+-")
    if op == "*":
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        return f"{a}*{b}={a * b}."
    if op == "/":
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        return f"{a * b}/{b}={a}."
    if op == "+":
        b = rng.randint(1, 20)
        a = rng.randint(0, 100 - b)
        return f"{a}+{b}={a + b}."
    a = rng.randint(1, 100)
    b = rng.randint(1, min(a, 40))
    return f"{a}-{b}={a - b}."


# One step of a worked solution, without the words around it ("In all 6*16=96." -> 6*16=96).
_STEP = re.compile(r"\d+[-+*/]\d+=\d+")


def solution_facts(
    rng: random.Random, families: list[str], difficulties: list[int]
) -> Iterator[str]:
    """The steps of freshly drawn problems of `families`, one fact at a time: facts come as
    often as those problems use them (the few hundred small sums and products most steps
    need come far more often than the rest)."""
    while True:
        source = SOURCES[rng.choice(families)]
        assert isinstance(source, FamilySource)
        draft = source.build(rng, rng.choice(difficulties))
        for step in _STEP.findall(draft.think):
            yield f"{step}."


def drill_document(
    rng: random.Random,
    facts: int,
    families: list[str] | None = None,
    difficulties: list[int] | None = None,
) -> tuple[str, str]:
    """(prompt, facts): a short list of arithmetic facts, one per line; uniform facts
    (`arithmetic_fact`), or the steps of `families`' problems when given."""
    prompt = rng.choice(("Arithmetic practice.", "Some sums and products.", "Facts to learn."))
    if families:
        stream = solution_facts(rng, families, difficulties or [1])
        return prompt, "\n".join(next(stream) for _ in range(facts))
    return prompt, "\n".join(arithmetic_fact(rng) for _ in range(facts))


# ----------------------------------------------------------------------------------------------
# Rows and the table


def _tasks(cfg: CorpusConfig) -> Iterator[Task]:
    for difficulty in cfg.difficulties:
        for name, count in cfg.families.items():
            yield from SOURCES[name].generate(count, seed=cfg.seed, difficulty=difficulty)


def build_corpus(cfg: CorpusConfig) -> list[dict[str, Any]]:
    """Every document of the corpus as a validated Sample row (deterministic in cfg)."""
    rows = []
    for task in _tasks(cfg):
        completion, style = _document(task, cfg)
        rows.append(
            {
                "prompt_id": task.prompt_id,
                "prompt": task.prompt,
                "completion": completion,
                "gold": task.gold,
                "domain": task.domain,
                "track": task.track,
                "source": task.source,
                "language": "en",
                "backend": BACKEND,
                "model_id": style,
                "seed": cfg.seed,
                "sample_index": 0,
            }
        )
    for index in range(cfg.text_documents):
        prompt, story = mixed_text(random.Random(f"corpus-text:{cfg.seed}:{index}"))
        rows.append(
            {
                "prompt_id": f"{TEXT_SOURCE}-s{cfg.seed}-{index}",
                "prompt": prompt,
                "completion": story,
                "domain": "general",
                "track": "non_reasoning",
                "source": TEXT_SOURCE,
                "backend": BACKEND,
                "model_id": "mixed",
                "seed": cfg.seed,
                "sample_index": 0,
            }
        )
    for index in range(cfg.drill_documents):
        prompt, facts = drill_document(
            random.Random(f"corpus-drill:{cfg.seed}:{index}"),
            cfg.drill_facts,
            cfg.drill_steps_from,
            cfg.difficulties,
        )
        rows.append(
            {
                "prompt_id": f"{DRILL_SOURCE}-s{cfg.seed}-{index}",
                "prompt": prompt,
                "completion": facts,
                "domain": "math",
                "track": "non_reasoning",
                "source": DRILL_SOURCE,
                "backend": BACKEND,
                "model_id": "drill",
                "seed": cfg.seed,
                "sample_index": 0,
            }
        )
    return [validate_sample(r) for r in rows]


def corpus_table(store: Store, cfg: CorpusConfig, lineage: Lineage) -> TableRef:
    """`cfg.table` at a version holding exactly this corpus: the latest version when it was
    built from the same config (its lineage's config hash), else a new overwrite commit."""
    return _built_table(
        store,
        cfg.table,
        config_hash(cfg),
        lambda: build_corpus(cfg),
        lineage,
        "toy pretraining corpus",
    )


def _built_table(
    store: Store,
    table: str,
    digest: str,
    build: Callable[[], list[dict[str, Any]]],
    lineage: Lineage,
    message: str,
) -> TableRef:
    """`table` at its latest version when that was built from the config hashed `digest`,
    else the rows of `build()` committed as a new overwrite version."""
    if store.exists(table):
        latest = store.latest_version(table)
        info = store.commit_info(table, latest)
        if info.lineage is not None and info.lineage.config_hash == digest:
            return TableRef(table, latest)
    from store.record import to_table

    result = store.commit(
        table,
        to_table(build()),
        lineage=Lineage(
            writer=lineage.writer,
            flow_run_id=lineage.flow_run_id,
            config_hash=digest,
            message=message,
        ),
        mode="overwrite",
    )
    return TableRef(table, result.version)


# ----------------------------------------------------------------------------------------------
# RL prompts


def _default_prompt_families() -> dict[str, int]:
    return {"toy-arithmetic": 2000, "toy-countdown": 2000}


@dataclass(frozen=True)
class PromptSetConfig:
    """The toy prompts reinforcement learning samples from: tasks with gold answers and no
    worked solution (the policy writes its own)."""

    table: str = "toy-rl-prompts"
    # Task seed: keep it apart from the corpus's (0) and from evaluation's (1000), so RL
    # neither replays pretraining documents nor trains on the held-out problems.
    seed: int = 1
    difficulties: list[int] = field(default_factory=lambda: [1])
    families: dict[str, int] = field(default_factory=_default_prompt_families)
    # Leave out prompts whose text equals a held-out problem's (small toy families can draw
    # the same problem under two seeds).
    exclude_prompts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.families) - set(SOURCES))
        if unknown:
            raise ValueError(f"families: unknown {unknown[0]!r}; known: {', '.join(SOURCES)}")
        if any(n < 0 for n in self.families.values()) or not any(self.families.values()):
            raise ValueError("families: counts must be >= 0, and at least one > 0")


def build_prompt_set(cfg: PromptSetConfig) -> list[dict[str, Any]]:
    """Every prompt of the set as a validated Sample row: prompt, gold, domain, track, source,
    language; the completion is empty (nothing was sampled yet)."""
    excluded = set(cfg.exclude_prompts)
    rows = []
    for difficulty in cfg.difficulties:
        for name, count in cfg.families.items():
            for task in SOURCES[name].generate(count, seed=cfg.seed, difficulty=difficulty):
                if task.prompt in excluded:
                    continue
                rows.append(
                    {
                        "prompt_id": task.prompt_id,
                        "prompt": task.prompt,
                        "completion": "",
                        "gold": task.gold,
                        "domain": task.domain,
                        "track": task.track,
                        "source": task.source,
                        "language": "en",
                        "backend": BACKEND,
                        "seed": cfg.seed,
                        "sample_index": 0,
                    }
                )
    return [validate_sample(r) for r in rows]


def prompt_table(store: Store, cfg: PromptSetConfig, lineage: Lineage) -> TableRef:
    """`cfg.table` at a version holding exactly this prompt set (reused when built from the
    same config, else a new overwrite commit)."""
    return _built_table(
        store,
        cfg.table,
        config_hash(cfg),
        lambda: build_prompt_set(cfg),
        lineage,
        "toy RL prompts",
    )


def toy_corpus() -> list[str]:
    """Every toy task family's prompts (rendered as chat prompts) and worked solutions,
    difficulties 1-3, a fixed seed: the texts `r1f model init` trains its tokenizer on."""
    from generators.tasks import render_pretraining_text
    from trainer.tokenizer import render_prompt

    tasks = [
        task
        for source in SOURCES.values()
        for difficulty in (1, 2, 3)
        for task in source.generate(100, seed=0, difficulty=difficulty)
    ]
    return [render_pretraining_text(t) for t in tasks] + [render_prompt(t.prompt) for t in tasks]
