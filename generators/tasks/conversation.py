"""Non-reasoning prompts: greetings, self-cognition, simple facts and translation.

R1 answers these without a chain of thought, so every worked solution has an
empty think block: `<think></think><answer>reference</answer>`. Gold is the
reference answer as plain text (`Paris`, `8`, `chat`).

Only translation uses the difficulty knob: at difficulty d it asks for d words
at once, and its gold is their translations joined with `, ` in the order
asked. The other three accept a difficulty for a uniform interface; it changes
their random stream and prompt ids, not their shape.

Facts and words are bundled tables in `data/` (tab-separated, one header row),
read with importlib.resources so they travel with an installed package.
"""

from __future__ import annotations

import functools
import random
from importlib import resources

from generators.tasks.base import Draft, FamilySource

_IDENTITY = (
    "I am r1-factory's toy assistant, a small language model trained on synthetic data "
    "to solve simple problems step by step."
)

_GREETINGS = (
    ("Hello!", "Hello! How can I help you today?"),
    ("Hi there.", "Hi! What can I do for you?"),
    ("Good morning!", "Good morning! How can I help you today?"),
    ("Good evening.", "Good evening! What can I do for you?"),
    ("Hey, how are you?", "I am doing well, thank you! How can I help you?"),
    ("Nice to meet you.", "Nice to meet you too! How can I help you?"),
    ("Thanks for your help!", "You are welcome! I am happy to help."),
    ("Goodbye!", "Goodbye! Have a nice day."),
)

_SELF_COGNITION = (
    ("Who are you?", _IDENTITY),
    ("Hello, who are you?", f"Hello! {_IDENTITY}"),
    ("Introduce yourself.", _IDENTITY),
    ("What is your name?", "I am r1-factory's toy assistant."),
    (
        "Are you a human?",
        "No. I am r1-factory's toy assistant, a small language model, not a human.",
    ),
    (
        "Who made you?",
        "I was built with r1-factory, which trains small models with the DeepSeek-R1 recipe.",
    ),
    (
        "How were you trained?",
        "I was pretrained on synthetic worked solutions, then trained with reinforcement "
        "learning and supervised fine-tuning, following the DeepSeek-R1 recipe.",
    ),
    (
        "What can you do?",
        "I can solve simple arithmetic, countdown, equation and algebra problems step by step, "
        "answer simple factual questions and translate a few words.",
    ),
)

_FACT_WRAPPERS = ("{q}", "Quick question: {q}", "Please answer briefly. {q}")

_LANGUAGES = ("French", "Spanish", "German")  # columns 1..3 of words.tsv, in order

_TRANSLATE_ONE = (
    'Translate "{word}" into {language}.',
    'What is the {language} word for "{word}"?',
    'How do you say "{word}" in {language}?',
)


@functools.cache
def load_table(name: str) -> tuple[tuple[str, ...], ...]:
    """Rows of a bundled TSV table, header dropped; each row checked for its width."""
    text = resources.files("generators.tasks.data").joinpath(name).read_text(encoding="utf-8")
    rows = [line.split("\t") for line in text.splitlines() if line.strip()]
    width = len(rows[0])
    for lineno, row in enumerate(rows[1:], start=2):
        if len(row) != width or not all(field.strip() for field in row):
            raise ValueError(
                f"data/{name} line {lineno}: expected {width} non-empty tab-separated fields"
            )
    return tuple(tuple(field.strip() for field in row) for row in rows[1:])


def _reply(prompt: str, reference: str) -> Draft:
    return Draft(prompt=prompt, gold=reference, think="", answer=reference)


def build_greeting(rng: random.Random, difficulty: int) -> Draft:
    return _reply(*rng.choice(_GREETINGS))


def build_self_cognition(rng: random.Random, difficulty: int) -> Draft:
    return _reply(*rng.choice(_SELF_COGNITION))


def build_fact(rng: random.Random, difficulty: int) -> Draft:
    question, answer = rng.choice(load_table("facts.tsv"))
    return _reply(rng.choice(_FACT_WRAPPERS).format(q=question), answer)


def build_translation(rng: random.Random, difficulty: int) -> Draft:
    column = rng.randrange(len(_LANGUAGES))
    language = _LANGUAGES[column]
    rows = rng.sample(load_table("words.tsv"), difficulty)
    if difficulty == 1:
        prompt = rng.choice(_TRANSLATE_ONE).format(word=rows[0][0], language=language)
    else:
        words = ", ".join(row[0] for row in rows)
        prompt = f"Translate these words into {language}, in order: {words}."
    return _reply(prompt, ", ".join(row[column + 1] for row in rows))


GREETING = FamilySource(
    name="toy-greeting", domain="general", track="non_reasoning", build=build_greeting
)
SELF_COGNITION = FamilySource(
    name="toy-self-cognition", domain="general", track="non_reasoning", build=build_self_cognition
)
FACTS = FamilySource(name="toy-facts", domain="general", track="non_reasoning", build=build_fact)
TRANSLATION = FamilySource(
    name="toy-translation", domain="general", track="non_reasoning", build=build_translation
)
