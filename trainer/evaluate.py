"""Score a model on held-out toy problems through the verifiers: accuracy per task family,
greedy and pass@k, and how often the R1 format is followed.

    problems = [EvalProblem(prompt, gold, family="toy-arithmetic"), ...]   # built by the caller
    report = evaluate(sampler_for(model, tokenizer), problems, k=8, max_tokens=96, seed=0)
    report.families["toy-arithmetic"].greedy, .pass_at_k, .format_sampled

Each problem is posed in the R1-Zero template (the chat template with the default system text,
the assistant turn opened with `<think>`; `<think></think>` for the non-reasoning track), then
answered once greedily and k times at `temperature`. pass@k is the share of problems with at
least one correct answer among the k samples.

The answer is read leniently, because a base model follows the format only sometimes:

- the last complete `<answer>...</answer>` block, if there is one;
- else, for a countdown problem (a gold `{"target": .., "numbers": [..]}`), the last run of
  digits, brackets, spaces and `+ - * /` that holds at least one operator: in
  "10-8=2. 2*5=10. The answer is (10-8)*5." that is `(10-8)*5`; a bare step such as `2*5`
  counts as the answer when nothing follows it, and is then checked like any answer (it
  must use the given numbers, each at most once, and reach the target);
- else the last number (an integer or a fraction `a/b`, with its sign).

The extracted answer goes to the math verifier (`verify_countdown` for countdown), which
decides. The format rate is that of `check_r1_format` over the full completion (the opened
`<think>` included), for the greedy answer and over the k samples. The mixed-language rate is
the share of the k samples whose chain of thought (`trainer.rl.rewards.chain_of_thought`) the
project's detector (`verifiers.language.detect_mixed_language`) calls mixed against the
problem's `language` (R1's language-consistency measure, on held-out problems rather than on
rollouts); `mixed_language_greedy` is the same for the greedy answer.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from trainer.tokenizer import generation_prefix, render_prompt

# (prompts, think flags, temperature, n, max_tokens, seed) -> completion texts per prompt.
Sampler = Callable[[Sequence[str], float, int, int, int], list[list[str]]]

_ANSWER_BLOCK = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_NUMBER = re.compile(r"-?\d+(?:\s*/\s*\d+)?")
_EXPRESSION = re.compile(r"[\d()+\-*/ ]+")


@dataclass(frozen=True)
class EvalProblem:
    prompt: str
    gold: str
    family: str
    track: str = "reasoning"
    language: str = "en"  # the language the chain of thought should be in

    @property
    def think(self) -> bool:
        return self.track != "non_reasoning"


@dataclass(frozen=True)
class FamilyScore:
    family: str
    problems: int
    greedy: float  # accuracy of the greedy answer
    pass_at_k: float  # share of problems solved by at least one of k samples
    sample_accuracy: float  # mean accuracy of single samples
    format_greedy: float
    format_sampled: float  # R1 format rate over the k samples of every problem
    mean_completion_chars: float
    # Share of the k samples (of the greedy answers) whose chain of thought mixes languages.
    mixed_language_sampled: float = 0.0
    mixed_language_greedy: float = 0.0


@dataclass(frozen=True)
class EvalReport:
    k: int
    temperature: float
    families: dict[str, FamilyScore]
    examples: dict[str, list[str]] = field(default_factory=dict)  # a few greedy completions

    def summary(self) -> dict[str, float]:
        """Flat metrics for the log: `<family>/greedy`, `<family>/pass@k`, ..."""
        flat: dict[str, float] = {}
        for name, s in self.families.items():
            flat[f"{name}/greedy"] = s.greedy
            flat[f"{name}/pass@{self.k}"] = s.pass_at_k
            flat[f"{name}/format_sampled"] = s.format_sampled
            flat[f"{name}/mixed_language_sampled"] = s.mixed_language_sampled
        return flat

    def to_dict(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "temperature": self.temperature,
            "families": {n: asdict(s) for n, s in self.families.items()},
        }


@dataclass(frozen=True)
class _Scored:
    """One problem's verdicts: correctness, format and mixed language, greedy and sampled."""

    greedy: bool
    sampled: list[bool]
    format_greedy: bool
    format_sampled: list[bool]
    chars: int
    mixed_greedy: bool
    mixed_sampled: list[bool]


def lenient_answer(completion: str, gold: str) -> str | None:
    """The answer a lenient reader takes from a full completion (module docstring)."""
    blocks = _ANSWER_BLOCK.findall(completion)
    if blocks:
        return str(blocks[-1]).strip()
    if _is_countdown(gold):
        for match in reversed(_EXPRESSION.findall(completion)):
            candidate = match.strip()
            if any(op in candidate for op in "+-*/") and any(c.isdigit() for c in candidate):
                return _balanced(candidate)
        return None
    numbers = _NUMBER.findall(completion)
    return numbers[-1].replace(" ", "") if numbers else None


def _balanced(expression: str) -> str:
    """Drop unmatched brackets at the ends, left by a sentence around the expression."""
    while expression.startswith(")") or (
        expression.startswith("(") and expression.count("(") > expression.count(")")
    ):
        expression = expression[1:].strip()
    while expression.endswith("(") or (
        expression.endswith(")") and expression.count(")") > expression.count("(")
    ):
        expression = expression[:-1].strip()
    return expression


def _is_countdown(gold: str) -> bool:
    return gold.lstrip().startswith("{") and '"target"' in gold


def is_correct(completion: str, gold: str) -> bool:
    """Whether the leniently read answer of `completion` checks against `gold`."""
    from verifiers.math import verify, verify_countdown

    answer = lenient_answer(completion, gold)
    if answer is None:
        return False
    wrapped = f"<answer>{answer}</answer>"
    verdict = verify_countdown(gold, wrapped) if _is_countdown(gold) else verify(gold, wrapped)
    return verdict.verdict == "correct"


def follows_format(completion: str) -> bool:
    from verifiers.format import check_r1_format

    return bool(check_r1_format(completion).ok)


def mixes_languages(completion: str, language: str) -> bool:
    """Whether the chain of thought of a full completion mixes languages (the project's
    detector); a language the detector does not know counts as not mixed, as in GRPO's
    rollout metric."""
    from trainer.rl.rewards import chain_of_thought
    from verifiers.language import detect_mixed_language

    try:
        return detect_mixed_language(chain_of_thought(completion), language) is not None
    except ValueError:
        return False


def evaluate(
    sample: Callable[[list[str], float, int, int, int], list[list[str]]],
    problems: Sequence[EvalProblem],
    *,
    k: int = 8,
    temperature: float = 1.0,
    max_tokens: int = 96,
    seed: int = 0,
    examples: int = 3,
) -> EvalReport:
    """Greedy and k sampled answers for every problem, scored per family.

    sample(prompts, temperature, n, max_tokens, seed) -> for each rendered prompt, n completion
    texts (what follows the prompt); `sampler_for` makes one for our Transformer."""
    prompts = [render_prompt(p.prompt, think=p.think) for p in problems]
    greedy = sample(prompts, 0.0, 1, max_tokens, seed)
    sampled = sample(prompts, temperature, k, max_tokens, seed) if k > 0 else [[] for _ in prompts]
    by_family: dict[str, list[_Scored]] = defaultdict(list)
    shown: dict[str, list[str]] = defaultdict(list)
    for problem, g, s in zip(problems, greedy, sampled, strict=True):
        prefix = generation_prefix(problem.think)
        g_full = prefix + g[0]
        s_full = [prefix + text for text in s]
        by_family[problem.family].append(
            _Scored(
                greedy=is_correct(g_full, problem.gold),
                sampled=[is_correct(t, problem.gold) for t in s_full],
                format_greedy=follows_format(g_full),
                format_sampled=[follows_format(t) for t in s_full],
                chars=len(g[0]),
                mixed_greedy=mixes_languages(g_full, problem.language),
                mixed_sampled=[mixes_languages(t, problem.language) for t in s_full],
            )
        )
        if len(shown[problem.family]) < examples:
            shown[problem.family].append(g_full)
    families = {}
    for name, rows in sorted(by_family.items()):
        n = len(rows)
        samples = [ok for r in rows for ok in r.sampled]
        formats = [ok for r in rows for ok in r.format_sampled]
        mixed = [m for r in rows for m in r.mixed_sampled]
        families[name] = FamilyScore(
            family=name,
            problems=n,
            greedy=sum(r.greedy for r in rows) / n,
            pass_at_k=sum(any(r.sampled) for r in rows) / n,
            sample_accuracy=sum(samples) / max(len(samples), 1),
            format_greedy=sum(r.format_greedy for r in rows) / n,
            format_sampled=sum(formats) / max(len(formats), 1),
            mean_completion_chars=sum(r.chars for r in rows) / n,
            mixed_language_sampled=sum(mixed) / max(len(mixed), 1),
            mixed_language_greedy=sum(r.mixed_greedy for r in rows) / n,
        )
    return EvalReport(k=k, temperature=temperature, families=families, examples=dict(shown))


def sampler_for(model: Any, tokenizer: Any, *, max_batch_rows: int = 64) -> Sampler:
    """A sampler over our Transformer with the KV-cached engine (`trainer.generate`). The
    engine copies the weights when built, so build the sampler after training changes them."""
    from trainer.generate import DecodeEngine, SamplingParams, generate

    engine = DecodeEngine(model)

    def sample(
        prompts: Sequence[str], temperature: float, n: int, max_tokens: int, seed: int
    ) -> list[list[str]]:
        params = SamplingParams(temperature=temperature, n=n, max_tokens=max_tokens, seed=seed)
        outs = generate(
            model, tokenizer, list(prompts), params, engine=engine, max_batch_rows=max_batch_rows
        )
        return [[c.text for c in per_prompt] for per_prompt in outs]

    return sample


def hf_sampler_for(model: Any, tokenizer: Any, *, batch_size: int = 16) -> Sampler:
    """A sampler over a transformers causal LM (`generate`, left-padded batches). Seeded per
    call with `torch.manual_seed(seed)`: reproducible, though not independent of batching as
    `sampler_for`'s per-request generators are."""
    import torch

    def sample(
        prompts: Sequence[str], temperature: float, n: int, max_tokens: int, seed: int
    ) -> list[list[str]]:
        torch.manual_seed(seed)
        results: list[list[str]] = []
        for start in range(0, len(prompts), batch_size):
            ids = [tokenizer.encode(p) for p in prompts[start : start + batch_size]]
            width = max(len(x) for x in ids)
            tokens = torch.tensor([[tokenizer.pad_id] * (width - len(x)) + x for x in ids])
            mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
            sampling: dict[str, Any] = (
                {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
                if temperature > 0
                else {"do_sample": False}
            )
            with torch.no_grad():
                out = model.generate(
                    input_ids=tokens,
                    attention_mask=mask,
                    max_new_tokens=max_tokens,
                    num_return_sequences=n,
                    eos_token_id=tokenizer.eos_id,
                    pad_token_id=tokenizer.pad_id,
                    **sampling,
                )
            texts = [tokenizer.decode(row[width:].tolist()) for row in out]
            results += [texts[i * n : (i + 1) * n] for i in range(len(ids))]
        return results

    return sample
