"""The toy universe's tokenizer: a byte-level BPE trained here, and the R1 chat format.

    from trainer.tokenizer import R1Tokenizer, save_tokenizer, train_tokenizer

    tok = train_tokenizer(corpus_texts, vocab_size=4096)  # a tokenizers.Tokenizer
    save_tokenizer(tok, "ckpt/", model_max_length=2048)   # tokenizer.json + tokenizer_config.json
    r1 = R1Tokenizer.from_dir("ckpt/")
    ids = r1.encode_chat([{"role": "user", "content": "Compute 12+4."}])
    text = r1.decode(ids_of_a_completion)                 # tags kept, BOS/EOS/PAD dropped

What is covered:

- Byte-level BPE (GPT-2's byte alphabet, all 256 bytes in the vocabulary), so
  any string encodes and decodes back exactly: no unknown token, no prefix
  space, no normalization.
- Digits are split one per token before BPE runs, so the vocabulary holds no
  multi-digit token and `1234` is always the four tokens of its digits; a
  model learning arithmetic sees every number written the same way.
- The R1 markup (`<think>`, `</think>`, `<answer>`, `</answer>`) and the chat
  role markers are single tokens with fixed ids. They are added tokens that are
  not special: `decode` keeps them, because the verifiers parse the tags out of
  decoded completions. Only BOS, EOS and PAD are special and are dropped by
  `decode(skip_special_tokens=True)`.
- Training is deterministic: the same texts give a byte-identical
  `tokenizer.json`, in any process.
- `save_tokenizer` writes a directory that `transformers.AutoTokenizer` loads
  offline; its chat template (`CHAT_TEMPLATE`, Jinja) and `render_chat` (pure
  Python, so the trainer never needs transformers) render the same string.

What is not covered:

- Control tokens typed inside message text are encoded as control tokens (a
  user writing `<think>` gets the tag token), as DeepSeek's tokenizer does.
  Callers that take untrusted text and care must escape it themselves.
- Tool calls and multi-modal content: messages carry a plain string only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

# Control tokens, named as DeepSeek-V3/R1 name them so a checkpoint reads like
# theirs. The bars are FULLWIDTH VERTICAL LINE and the blank is LOWER ONE
# EIGHTH BLOCK, written as escapes because they look like `|` and `_`; no toy
# text contains them, so no ordinary text collides with a control token.
_BAR, _BLANK = "\uff5c", "\u2581"
BOS = f"<{_BAR}begin{_BLANK}of{_BLANK}sentence{_BAR}>"
EOS = f"<{_BAR}end{_BLANK}of{_BLANK}sentence{_BAR}>"
# A pad distinct from EOS, so masking padding never masks the real end of a
# sequence that the model must learn to emit.
PAD = f"<{_BAR}{_BLANK}pad{_BLANK}{_BAR}>"
USER = f"<{_BAR}User{_BAR}>"
ASSISTANT = f"<{_BAR}Assistant{_BAR}>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"

# special=True: structural, dropped by decode(skip_special_tokens=True).
CONTROL_TOKENS = (BOS, EOS, PAD)
# special=False: part of the text a verifier or a reader must see. A
# completion that runs on into a new turn keeps the role marker in its decoded
# text instead of silently merging the turns.
MARKUP_TOKENS = (USER, ASSISTANT, THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)
# Ids are the positions in this tuple (BOS 0, EOS 1, PAD 2, as in DeepSeek-V3).
SPECIAL_TOKENS = CONTROL_TOKENS + MARKUP_TOKENS

BYTE_ALPHABET_SIZE = 256
MIN_VOCAB_SIZE = BYTE_ALPHABET_SIZE + len(SPECIAL_TOKENS)

# Our wording of the R1-Zero instruction, kept short: a toy model pays for
# every prompt token on every RL rollout. An empty system message drops it.
DEFAULT_SYSTEM_PROMPT = (
    "A chat between a User and an Assistant. The Assistant first reasons "
    "through the request, then answers it. The reasoning goes inside "
    "<think> </think> and the answer inside <answer> </answer>, as in "
    "<think>reasoning</think><answer>answer</answer>. Simple requests need "
    "no reasoning."
)

# The R1 chat format as a Hugging Face chat template. Every piece of output is
# an expression, so the whitespace control (`{%-`, `-%}`, and transformers'
# trim_blocks/lstrip_blocks) can never add or drop a character. `render_chat`
# is the same function in Python; the tests hold the two equal.
_TEMPLATE_SOURCE = """\
{#- r1-factory's R1 chat format; see docs/tokenizer.md. -#}
{%- if think is not defined -%}{%- set think = true -%}{%- endif -%}
{%- set ns = namespace(system=@SYSTEM@, start=0) -%}
{%- if messages and messages[0]['role'] == 'system' -%}
{%- set ns.system = messages[0]['content'] -%}
{%- set ns.start = 1 -%}
{%- endif -%}
{{- bos_token + ns.system -}}
{%- for message in messages[ns.start:] -%}
{%- if message['role'] == 'user' -%}
{{- '@USER@' + message['content'] -}}
{%- elif message['role'] == 'assistant' -%}
{{- '@ASSISTANT@' + message['content'] + eos_token -}}
{%- else -%}
{{- raise_exception('role must be user or assistant (system only first), got ' + message['role']) -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '@ASSISTANT@' + ('@THINK_OPEN@' if think else '@THINK_OPEN@@THINK_CLOSE@') -}}
{%- endif -%}
"""
CHAT_TEMPLATE = (
    _TEMPLATE_SOURCE.replace("@SYSTEM@", json.dumps(DEFAULT_SYSTEM_PROMPT))
    .replace("@USER@", USER)
    .replace("@ASSISTANT@", ASSISTANT)
    .replace("@THINK_OPEN@", THINK_OPEN)
    .replace("@THINK_CLOSE@", THINK_CLOSE)
)

_SPECIAL_SPLIT = re.compile("|".join(re.escape(token) for token in SPECIAL_TOKENS))


def generation_prefix(think: bool = True) -> str:
    """The text a generation prompt leaves open inside the assistant turn.

    With `think`, `<think>`: the model must reason first, as R1 forces it to.
    Without, `<think></think>`: an empty reasoning block, as R1 answers the
    non-reasoning track, so the model goes straight to `<answer>`. A completion
    sampled after the prompt lacks this prefix; `generation_prefix(think) +
    completion` is the full R1 text the format verifier checks.
    """
    return THINK_OPEN if think else THINK_OPEN + THINK_CLOSE


def render_chat(
    messages: Sequence[Mapping[str, str]],
    add_generation_prompt: bool = True,
    think: bool = True,
) -> str:
    """Render `messages` in the R1 chat format, exactly as `CHAT_TEMPLATE` does.

    `BOS`, then the system text (the first message's content if its role is
    `system`, else `DEFAULT_SYSTEM_PROMPT`; an empty system message renders
    none), then each turn: `USER + content`, `ASSISTANT + content + EOS`.
    With `add_generation_prompt`, an assistant turn is opened and
    `generation_prefix(think)` is written into it. Contents are written
    verbatim: no stripping, no separators.
    """
    if not messages:
        # transformers refuses an empty conversation before rendering; so do we.
        raise ValueError("messages: give at least one message")
    system, turns = DEFAULT_SYSTEM_PROMPT, list(messages)
    if turns and turns[0]["role"] == "system":
        system, turns = turns[0]["content"], turns[1:]
    if not isinstance(system, str):
        raise TypeError(f"messages: the system content must be a str, got {system!r}")
    parts = [BOS, system]
    for index, message in enumerate(turns):
        role, content = message["role"], message["content"]
        if not isinstance(content, str):
            raise TypeError(f"messages: content of turn {index} must be a str, got {content!r}")
        if role == "user":
            parts += [USER, content]
        elif role == "assistant":
            parts += [ASSISTANT, content, EOS]
        else:
            raise ValueError(
                f"role must be user or assistant (system only first), got {role!r} in turn {index}"
            )
    if add_generation_prompt:
        parts += [ASSISTANT, generation_prefix(think)]
    return "".join(parts)


def render_prompt(prompt: str, think: bool = True) -> str:
    """One user turn with the default system text and an open assistant turn."""
    return render_chat([{"role": "user", "content": prompt}], True, think)


def _split_special(texts: Iterable[str]) -> Iterator[str]:
    # Added tokens are cut out of the text before BPE ever sees it when
    # encoding, but the trainer does not cut them; feeding it the same pieces
    # keeps it from spending merges on `</`, `think` or `><`.
    for text in texts:
        yield from (piece for piece in _SPECIAL_SPLIT.split(text) if piece)


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = 4096, min_frequency: int = 2
) -> Tokenizer:
    """Train a byte-level BPE on `texts`, with `SPECIAL_TOKENS` at ids 0..8.

    `vocab_size` counts everything (special tokens, the 256 bytes, merges) and
    is an upper bound: a small corpus can run out of pairs seen
    `min_frequency` times first. Deterministic given the same texts.
    """
    if not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(
            f"vocab_size must be an int >= {MIN_VOCAB_SIZE} "
            f"({BYTE_ALPHABET_SIZE} bytes + {len(SPECIAL_TOKENS)} special tokens), got {vocab_size!r}"
        )
    if not isinstance(min_frequency, int) or min_frequency < 1:
        raise ValueError(f"min_frequency must be an int >= 1, got {min_frequency!r}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            # No prefix space: encode/decode must round-trip text exactly.
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[AddedToken(token, normalized=False) for token in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_split_special(texts), trainer=trainer)
    # The trainer registers all its tokens as special; the markup must not be,
    # or decode(skip_special_tokens=True) would erase the tags. The flag lives
    # only in the serialized form, so set it there.
    state = json.loads(tokenizer.to_str())
    for entry in state["added_tokens"]:
        entry["special"] = entry["content"] in CONTROL_TOKENS
    return Tokenizer.from_str(json.dumps(state, ensure_ascii=False))


def check_special_tokens(tokenizer: Tokenizer, where: str = "tokenizer") -> None:
    """Raise if `tokenizer` lacks the R1 tokens at their ids with their flags."""
    added = tokenizer.get_added_tokens_decoder()
    for expected_id, content in enumerate(SPECIAL_TOKENS):
        token = added.get(expected_id)
        special = content in CONTROL_TOKENS
        if token is None or token.content != content or token.special != special:
            raise ValueError(
                f"{where}: expected added token {content!r} (special={special}) at id "
                f"{expected_id}, found {token!r}; build the tokenizer with "
                "trainer.tokenizer.train_tokenizer"
            )


def save_tokenizer(tokenizer: Tokenizer, out_dir: str | Path, *, model_max_length: int) -> None:
    """Write `tokenizer.json` and `tokenizer_config.json` into `out_dir`.

    The directory loads with `transformers.AutoTokenizer.from_pretrained`
    offline, with BOS/EOS/PAD set and `CHAT_TEMPLATE` as its chat template.
    Encoding adds no token (no post-processor, `add_bos_token: false`): the
    chat template writes BOS itself, and pretraining code adds BOS/EOS around
    a document explicitly (`R1Tokenizer.encode(text, bos=True, eos=True)`).
    """
    check_special_tokens(tokenizer)
    if not isinstance(model_max_length, int) or model_max_length < 1:
        raise ValueError(f"model_max_length must be an int >= 1, got {model_max_length!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "add_bos_token": False,
        "add_eos_token": False,
        # Decoding must give back the text exactly; the cleanup would turn
        # "12 ." into "12.".
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
        "chat_template": CHAT_TEMPLATE,
    }
    (out / "tokenizer_config.json").write_text(
        json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load `tokenizer.json` from a directory (or the file itself) and check its R1 tokens."""
    file = Path(path)
    if file.is_dir():
        file = file / "tokenizer.json"
    if not file.is_file():
        raise FileNotFoundError(
            f"no tokenizer at {file}; save one with trainer.tokenizer.save_tokenizer"
        )
    tokenizer = Tokenizer.from_file(str(file))
    check_special_tokens(tokenizer, where=str(file))
    return tokenizer


def chars_per_token(tokenizer: Tokenizer, texts: Iterable[str]) -> float:
    """Characters per token over `texts`: the compression a corpus gets."""
    chars = tokens = 0
    for text in texts:
        chars += len(text)
        tokens += len(tokenizer.encode(text, add_special_tokens=False).ids)
    if tokens == 0:
        raise ValueError("texts hold no tokens; pass at least one non-empty text")
    return chars / tokens


class R1Tokenizer:
    """A trained tokenizer with the R1 chat format, for code that must not need transformers."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        check_special_tokens(tokenizer)
        self.tokenizer = tokenizer

    @classmethod
    def from_dir(cls, path: str | Path) -> R1Tokenizer:
        return cls(load_tokenizer(path))

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.get_vocab_size())

    @property
    def bos_id(self) -> int:
        return SPECIAL_TOKENS.index(BOS)

    @property
    def eos_id(self) -> int:
        return SPECIAL_TOKENS.index(EOS)

    @property
    def pad_id(self) -> int:
        return SPECIAL_TOKENS.index(PAD)

    def token_id(self, token: str) -> int:
        """The id of one vocabulary entry (a special token, or a byte-level piece)."""
        token_id = self.tokenizer.token_to_id(token)
        if token_id is None:
            raise KeyError(f"{token!r} is not one token of this vocabulary")
        return int(token_id)

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
        """Token ids of `text`, with BOS before and EOS after when asked."""
        ids: list[int] = self.tokenizer.encode(text, add_special_tokens=False).ids
        return [self.bos_id] * bos + ids + [self.eos_id] * eos

    def decode(self, ids: Iterable[int], *, skip_special_tokens: bool = True) -> str:
        """Text of `ids`; BOS/EOS/PAD are dropped unless asked, tags and role markers kept."""
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens))

    def render_chat(
        self,
        messages: Sequence[Mapping[str, str]],
        add_generation_prompt: bool = True,
        think: bool = True,
    ) -> str:
        return render_chat(messages, add_generation_prompt, think)

    def encode_chat(
        self,
        messages: Sequence[Mapping[str, str]],
        add_generation_prompt: bool = True,
        think: bool = True,
    ) -> list[int]:
        """`encode(render_chat(...))`: the rendered text already starts with BOS."""
        return self.encode(render_chat(messages, add_generation_prompt, think))

    def save(self, out_dir: str | Path, *, model_max_length: int) -> None:
        save_tokenizer(self.tokenizer, out_dir, model_max_length=model_max_length)
