"""Prompt templates: how a task's prompt becomes the text a backend completes.

    from generators.templates import render

    rendered = render("chat", "Compute 12+4.", track="reasoning", chat_template=backend.chat_template)
    rendered.text     # the full prompt, ending inside the assistant turn
    rendered.prefix   # what the prompt left open there (`<think>`), prepended to the completion

Three templates, all rendered by `trainer.tokenizer` (the R1 chat format) or, for a checkpoint
that brings another chat template, by sandboxed Jinja as transformers renders it:

| name | what the model sees | used for |
|---|---|---|
| `chat` | the checkpoint's chat template; reasoning-track prompts open `<think>`, non-reasoning ones get an empty think block | rejection sampling, SFT data: R1 answers simple requests without reasoning |
| `r1-zero` | the R1-Zero instruction (think inside `<think>`, answer inside `<answer>`) and an open `<think>` for every prompt | R1-Zero rollouts from a base model |
| `no-reasoning` | an empty think block for every prompt: the model goes straight to its answer | non-reasoning data, the "answer without a chain of thought" track |

The stored completion is `prefix + generated text`, so it always holds the full R1 text that
the format verifier checks, whichever template opened it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, get_args

from trainer.tokenizer import BOS, CHAT_TEMPLATE, EOS, generation_prefix, render_prompt

TemplateName = Literal["chat", "r1-zero", "no-reasoning"]
TEMPLATES: tuple[str, ...] = get_args(TemplateName)


@dataclass(frozen=True)
class Rendered:
    text: str
    prefix: str  # the part of the assistant turn the prompt already wrote


def render(
    template: str, prompt: str, *, track: str = "reasoning", chat_template: str | None = None
) -> Rendered:
    """The prompt text for one task under `template` (see the module's table)."""
    if template == "r1-zero":
        think = True
    elif template == "no-reasoning":
        think = False
    elif template == "chat":
        think = track == "reasoning"
    else:
        raise ValueError(f"unknown template {template!r}; known: {', '.join(TEMPLATES)}")
    if template != "chat" or chat_template is None or chat_template == CHAT_TEMPLATE:
        return Rendered(render_prompt(prompt, think=think), generation_prefix(think))
    text = render_jinja(chat_template, prompt, think)
    # Another template may or may not pre-fill the think tag; keep whatever it left open.
    prefix = generation_prefix(think)
    return Rendered(text, prefix if text.endswith(prefix) else "")


def chat_template_of(model_dir: str | Path) -> str | None:
    """The chat template in a checkpoint's `tokenizer_config.json`, if it has one."""
    config = Path(model_dir) / "tokenizer_config.json"
    if not config.is_file():
        return None
    template = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
    return template if isinstance(template, str) else None


def render_jinja(template: str, prompt: str, think: bool) -> str:
    """One user turn and an open assistant turn through a Jinja chat template, rendered the way
    transformers renders it (sandboxed, trim_blocks and lstrip_blocks, `raise_exception`)."""
    return _compiled(template).render(
        messages=[{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        bos_token=BOS,
        eos_token=EOS,
        think=think,
    )


@lru_cache(maxsize=8)
def _compiled(template: str) -> Any:
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template)
