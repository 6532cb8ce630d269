"""CoT routing: does a prompt need a chain of thought?

R1 answers math, code, complex decisions and multi-step planning with a
chain of thought, and greetings, self-cognition, translation, factual
questions, trivial sums and plain writing without one (an empty `<think>`).
`route(prompt)` decides with transparent, ordered rules; the first rule that
matches wins, and its name is returned so every decision can be audited.

| order | rule | track | matches |
|---|---|---|---|
| 1 | `code` | reasoning | a code fence, a programming language, write/implement/debug/fix + function/program/script/code/..., "this code/snippet/...", or a line that reads as code |
| 2 | `translation` | non_reasoning | "translate", "how do you say X in L", "what is the L word for X" |
| 3 | `trivial_arithmetic` | non_reasoning | the whole prompt (after a greeting) is one `a op b`, optionally "what is"/"compute": + or - with operands up to 100, * or / inside the 12x12 table |
| 4 | `arithmetic_chain` | reasoning | two or more operators chained between numbers (`12+7-5`) |
| 5 | `math` | reasoning | a relation sign with a one-letter variable (`3x + 5 = 11`), solve/simplify/expand/prove/polynomial/derivative/..., or notation (`**`, `^`, `\\frac`) |
| 6 | `word_problem` | reasoning | two or more quantities (digit runs or number words: two, dozen, twice, triples, ...) |
| 7 | `planning` | reasoning | step by step, plan, schedule, strategy, compare, trade-offs, explain why, optimise, ... |
| 8 | `self_cognition` | non_reasoning | who are you, what is your name, introduce yourself, who made you, are you human, ... |
| 9 | `greeting` | non_reasoning | a short prompt opening with hello, hi, hey, good morning, thanks, goodbye, ... |
| 10 | `writing` | non_reasoning | write/compose/draft/tell a poem, story, letter, email, essay, joke, ...; summarize, paraphrase, rewrite, proofread |
| 11 | `factual` | non_reasoning | a short prompt (at most 20 words, no digits) whose last sentence asks what/which/who/where/when/how many/how much |
| 12 | `default` | reasoning | anything else: when unsure, think (a needless CoT costs tokens, a missing one costs answers) |

Why this order: code and translation come first because their subject matter
can look like anything (a program full of numbers, a sentence to translate
that asks for a plan); trivial arithmetic precedes the numeric rules it would
otherwise trip; reasoning signals precede the conversational ones, so
"Hi! Solve 3x + 5 = 11." is math. Short quoted text (up to 60 characters in
double, curly or angle quotes) is ignored by every rule after translation: `Translate "plan" into French` is
not planning.

`route_with_judge(prompts, judge)` asks a model (any callable from prompts to
track names, e.g. one backed by a generator backend) only about prompts the
rules leave at `default`. `strip_reasoning` and `route_batch` produce the
non-reasoning track's answers: the same answer with an empty think block.

What is not covered: languages other than English (every rule is an English
keyword or shape; other languages fall to `default`, hence to the judge),
trick questions phrased as facts ("how many r's are in strawberry" routes
`factual`), coding requests in prose with none of the code words, and stories
about programmers ("write a story about a program manager" is taken for code).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa

from filters.base import StepStats, as_sample_batch
from store.record import SAMPLE_SCHEMA
from verifiers.format import check_r1_format

Track = Literal["reasoning", "non_reasoning"]
TRACKS: tuple[Track, ...] = ("reasoning", "non_reasoning")
Judge = Callable[[list[str]], list[str]]


@dataclass(frozen=True)
class RouteDecision:
    track: Track
    rule: str  # the rule that decided; "default" when no rule was confident, "judge" after one


_I = re.IGNORECASE
_LANGUAGES = (
    r"english|french|spanish|german|italian|portuguese|dutch|chinese|mandarin|japanese|"
    r"korean|russian|arabic|greek|hindi|turkish|polish|swedish"
)
_CODE = (
    re.compile(r"```|~~~"),
    # Names that mean code whatever surrounds them; "rust", "java" and "go" only after in/using.
    re.compile(
        r"\b(?:python|javascript|typescript|c\+\+|c#|golang|sql|html|css|regex|"
        r"bash script|shell script)\b|\b(?:in|using|with) (?:rust|java|go)\b",
        _I,
    ),
    # A coding verb with a code noun a few words later: "implement a binary search algorithm".
    re.compile(
        r"\b(?:write|implement|debug|fix|refactor|optimi[sz]e|review|complete)\b(?:\W+\w+){0,4}?"
        r"\W+(?:function|program|script|class|method|code|algorithm|query|snippet|bug)s?\b",
        _I,
    ),
    # A question about code at hand: "what does this snippet print?"
    re.compile(r"\b(?:this|the following|my) (?:code|snippet|function|program|script|query)\b", _I),
    # A line that reads as code.
    re.compile(
        r"^\s*(?:def \w+\(|class \w+[(:]|import \w+|from [\w.]+ import|#include|"
        r"console\.log\(|print\(|for \w+ in .+:$|return\b.*;$)",
        re.MULTILINE,
    ),
)
_TRANSLATION = (
    re.compile(r"\btranslat(?:e|ion|ing)\b", _I),
    re.compile(rf"\bhow (?:do|would) (?:you|i) say\b.+\bin (?:{_LANGUAGES})\b", _I),
    re.compile(rf"\bwhat(?: is|'s) the (?:{_LANGUAGES}) (?:word|term|phrase) for\b", _I),
    re.compile(rf"\bin (?:{_LANGUAGES}),? (?:please|how do you say)\b", _I),
)
_NUMBER = r"\d+(?:\.\d+)?"
_TRIVIAL = re.compile(
    rf"^\s*(?:(?:what(?: is|'s)|how much is|compute|calculate|evaluate|work out)\s*:?\s*)?"
    rf"(?P<a>{_NUMBER})\s*(?P<op>[-+*/x\u00d7\u00f7])\s*(?P<b>{_NUMBER})\s*(?:=\s*)?\??[\s?.!]*$",
    _I,
)
_CHAIN = re.compile(
    rf"{_NUMBER}\s*[-+*/\u00d7\u00f7^]\s*{_NUMBER}\s*[-+*/\u00d7\u00f7^]\s*\(?\s*{_NUMBER}"
)
# A relation sign next to a one-letter variable ("3x + 5 = 11", "y > 2"); "a" and "I"
# are English words, so they count only beside a digit ("2a = 6").
_RELATION = re.compile(r"[=<>≤≥≠]")
_VARIABLE = re.compile(r"(?<![A-Za-z])(?:\d+[a-z]|[b-hj-z]|[B-HJ-Z])(?![A-Za-z'\u2019])")
_MATH_WORDS = re.compile(
    r"\b(?:solve|simplify|expand|factori[sz]e|factor|prove|derive|differentiate|integrate|"
    r"equations?|polynomial|derivative|integral|probability|theorem|inequality|"
    r"matrix|matrices|eigen\w*|logarithm|quadratic|fractions?|percentage|"
    r"greatest common|least common|prime factors?|remainder)\b",
    _I,
)
_MATH_NOTATION = re.compile(r"\*\*|\^|\\frac|\\sqrt|√|∑|∫")
# Quantities of a word problem: digit runs and the number words toy and real problems use.
_QUANTITY = re.compile(
    r"\d+(?:[.,]\d+)?|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|"
    r"twenty|hundred|thousand|million|dozen|half|halves|twice|thrice|"
    r"(?:double|triple|quadruple)[sd]?)\b",
    _I,
)
_PLANNING = re.compile(
    r"\b(?:step by step|step-by-step|plan|planning|schedule|itinerary|strategy|strategies|"
    r"roadmap|trade-?offs?|pros and cons|compare|comparison|decide|decision|"
    r"explain why|why does|why do|why is|optimi[sz]e|design|analy[sz]e|puzzle|riddle|"
    r"how (?:can|should|would|do) (?:i|we))\b",
    _I,
)
_SELF = re.compile(
    r"\b(?:who are you|what are you|what(?: is|'s) your name|introduce yourself|"
    r"tell me about yourself|who (?:made|created|built|trained|developed) you|"
    r"are you (?:a |an )?(?:human|person|robot|bot|ai|machine|real|chatgpt|model)|"
    r"how were you (?:trained|made|built|created)|what can you do|what model are you|"
    r"your (?:name|creator|purpose|capabilities))\b",
    _I,
)
_GREETING_WORDS = (
    r"hello|hi|hey|hiya|howdy|greetings|good (?:morning|afternoon|evening|night|day)|"
    r"thanks|thank you|goodbye|bye|see you|nice to meet you|how are you|what's up|yo"
)
_GREETING = re.compile(rf"^\s*(?:{_GREETING_WORDS})\b", _I)
# "Hello! What is 2+3?" is still a trivial sum: the greeting is taken off first.
_GREETING_PREFIX = re.compile(rf"^\s*(?:{_GREETING_WORDS})(?:\s+there)?\s*[!,.]+\s*", _I)
_GREETING_MAX_WORDS = 8
_WRITING = re.compile(
    r"^\s*(?:please\s+)?(?:(?:write|compose|draft|create|tell)\s+(?:me\s+)?(?:a|an|some|the)?\s*"
    r"(?:\w+\s+){0,2}(?:poem|story|haiku|letter|email|e-mail|essay|limerick|song|lyrics|joke|"
    r"slogan|toast|speech|tweet|post|caption|description|summary|note|message|birthday card)s?"
    r"|summari[sz]e|paraphrase|rephrase|rewrite|proofread)\b",
    _I,
)
_FACTUAL_LAST = re.compile(
    r"^(?:at |on |in |for )?(?:what|which|who|whom|whose|where|when|how many|how much)\b", _I
)
_FACTUAL_MAX_WORDS = 20
_SENTENCE = re.compile(r"(?<=[.!?:])\s+")
# Double, curly and angle quotes; single quotes only when they cannot be apostrophes.
_QUOTED = re.compile(
    r"\"[^\"\n]{1,60}\"|\u201c[^\u201d\n]{1,60}\u201d|«[^»\n]{1,60}»"
    r"|\u2018[^\u2019\n]{1,60}\u2019|(?<!\w)'[^'\n]{1,60}'(?!\w)"
)


def _unquoted(prompt: str) -> str:
    """`prompt` with short quoted spans blanked: their words are data, not the request."""
    return _QUOTED.sub(" ", prompt)


def _trivial_arithmetic(prompt: str) -> bool:
    match = _TRIVIAL.match(_GREETING_PREFIX.sub("", prompt))
    if match is None:
        return False
    a, b, op = float(match["a"]), float(match["b"]), match["op"].lower()
    if op in "+-":
        return a <= 100 and b <= 100
    if op in "*x\u00d7":
        return a <= 12 and b <= 12
    # Division is trivial when it undoes a times-table product.
    return b != 0 and b <= 12 and a <= 144 and (a / b).is_integer() and a / b <= 12


def _math(text: str) -> bool:
    if _MATH_WORDS.search(text) or _MATH_NOTATION.search(text):
        return True
    return bool(_RELATION.search(text) and _VARIABLE.search(text))


def _factual(text: str) -> bool:
    words = text.split()
    if not words or len(words) > _FACTUAL_MAX_WORDS or any(ch.isdigit() for ch in text):
        return False
    last = _SENTENCE.split(text.strip())[-1]
    return bool(_FACTUAL_LAST.match(last)) and last.rstrip().endswith("?")


def route(prompt: str) -> RouteDecision:
    """The track for `prompt` and the rule that chose it; see the table in the module docstring."""
    if any(p.search(prompt) for p in _CODE):
        return RouteDecision("reasoning", "code")
    if any(p.search(prompt) for p in _TRANSLATION):
        return RouteDecision("non_reasoning", "translation")
    text = _unquoted(prompt)
    if _trivial_arithmetic(text):
        return RouteDecision("non_reasoning", "trivial_arithmetic")
    if _CHAIN.search(text):
        return RouteDecision("reasoning", "arithmetic_chain")
    if _math(text):
        return RouteDecision("reasoning", "math")
    if len(_QUANTITY.findall(text)) >= 2:
        return RouteDecision("reasoning", "word_problem")
    if _PLANNING.search(text):
        return RouteDecision("reasoning", "planning")
    if _SELF.search(text):
        return RouteDecision("non_reasoning", "self_cognition")
    if _GREETING.match(text) and len(text.split()) <= _GREETING_MAX_WORDS:
        return RouteDecision("non_reasoning", "greeting")
    if _WRITING.match(text):
        return RouteDecision("non_reasoning", "writing")
    if _factual(text):
        return RouteDecision("non_reasoning", "factual")
    return RouteDecision("reasoning", "default")


def route_with_judge(prompts: Sequence[str], judge: Judge | None = None) -> list[RouteDecision]:
    """Rules first; the judge decides only the prompts the rules leave at `default`.

    The judge is called once, with all unsure prompts in order, and must
    return one track name per prompt. Without a judge, `default` stands.
    """
    decisions = [route(p) for p in prompts]
    unsure = [i for i, d in enumerate(decisions) if d.rule == "default"]
    if judge is None or not unsure:
        return decisions
    answers = judge([prompts[i] for i in unsure])
    if len(answers) != len(unsure):
        raise ValueError(f"judge returned {len(answers)} answers for {len(unsure)} prompts")
    for i, answer in zip(unsure, answers, strict=True):
        track = answer.strip().lower() if isinstance(answer, str) else answer
        if track not in TRACKS:
            raise ValueError(
                f"judge answered {answer!r} for prompt {i} ({prompts[i][:60]!r}); "
                f"expected one of {TRACKS}"
            )
        decisions[i] = RouteDecision(track, "judge")
    return decisions


def strip_reasoning(completion: str) -> str:
    """The same answer without a chain of thought: `<think></think><answer>...</answer>`.

    Accepts the R1 template and the released R1 form (plain answer after
    `</think>`). Raises ValueError naming the format problem when there is no
    answer to keep.
    """
    result = check_r1_format(completion, require_answer=False)
    if not result.ok or not result.answer:
        reason = result.reason if not result.ok else "empty_answer"
        raise ValueError(f"cannot strip the reasoning: the completion has no answer ({reason})")
    return f"<think></think><answer>{result.answer}</answer>"


def route_batch(
    data: pa.RecordBatch | pa.Table, judge: Judge | None = None, *, step: str = "routing"
) -> tuple[pa.RecordBatch, StepStats]:
    """Set each row's `track` by routing its prompt; strip the CoT from non-reasoning rows.

    Non-reasoning rows get `strip_reasoning`'s completion, `reasoning = ""` and
    the answer; the full chain of thought stays in the table's earlier
    versions. A non-reasoning row whose completion has no answer is dropped
    with `routing:no_answer`. Rows dropped earlier only get their track set.
    Tallies count `track:...` and `rule:...` per row.
    """
    start = time.perf_counter()
    batch = as_sample_batch(data)
    stats = StepStats(step=step, rows_in=batch.num_rows)
    prompts = batch.column("prompt").to_pylist()
    # Samples of one prompt share a decision; route (and judge) each prompt once.
    unique = list(dict.fromkeys(prompts))
    decided = dict(zip(unique, route_with_judge(unique, judge), strict=True))
    columns = {
        name: batch.column(name).to_pylist()
        for name in ("track", "completion", "reasoning", "answer", "kept", "filter_reason")
    }
    for i, prompt in enumerate(prompts):
        decision = decided[prompt]
        stats.tallies[f"track:{decision.track}"] += 1
        stats.tallies[f"rule:{decision.rule}"] += 1
        columns["track"][i] = decision.track
        if columns["kept"][i] is False:
            stats.skipped += 1
            continue
        if decision.track != "non_reasoning":
            continue
        try:
            stripped = strip_reasoning(columns["completion"][i])
        except ValueError:
            columns["kept"][i] = False
            columns["filter_reason"][i] = f"{step}:no_answer"
            stats.dropped[f"{step}:no_answer"] += 1
            continue
        columns["completion"][i] = stripped
        columns["reasoning"][i] = ""
        columns["answer"][i] = check_r1_format(stripped).answer
    for name, values in columns.items():
        index = batch.schema.get_field_index(name)
        field = SAMPLE_SCHEMA.field(name)
        batch = batch.set_column(index, field, pa.array(values, field.type))
    stats.seconds = time.perf_counter() - start
    return batch, stats
