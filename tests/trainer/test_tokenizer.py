# ruff: noqa: RUF001 -- full-width and look-alike characters are the point of these cases
"""The toy tokenizer: byte-level round trips, single-token tags and digits,
determinism, offline loading by transformers, and the chat template's Python twin."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer, models

from generators.tasks import SOURCES, Task, render_pretraining_text
from trainer.tokenizer import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    ASSISTANT,
    BOS,
    CHAT_TEMPLATE,
    CONTROL_TOKENS,
    DEFAULT_SYSTEM_PROMPT,
    EOS,
    MARKUP_TOKENS,
    MIN_VOCAB_SIZE,
    PAD,
    SPECIAL_TOKENS,
    THINK_CLOSE,
    THINK_OPEN,
    USER,
    R1Tokenizer,
    chars_per_token,
    generation_prefix,
    load_tokenizer,
    render_chat,
    render_prompt,
    save_tokenizer,
    train_tokenizer,
)

REPO = Path(__file__).resolve().parents[2]
VOCAB_SIZE = 2048
DIFFICULTIES = (1, 2, 3)

UNICODE_TEXTS = [
    "",
    " ",
    "   leading and trailing spaces   ",
    "tabs\tand\r\nwindows newlines\n\n",
    "emoji: 😀 👍🏽 👨‍👩‍👧‍👦 🇫🇷",
    "中文：一加一等于二。日本語のテキスト、한국어 문장",
    r"LaTeX: $\frac{a}{b} + \sqrt{x^2} = \int_0^1 e^{-t}\,dt$ \\ \alpha\beta",
    "Ünïcödé ß ﬁ Ω ≠ ≤ ∑ ∞ — «quotes» “curly”",
    "عربي עברית ελληνικά русский",
    "combining: e\u0301 a\u0308, zero width: a\u200bb, bom \ufeff, nul \x00 end",
    "numbers 0 1 12 123 -4/7 3.14159 1e10 0x1F 1,000,000",
    f"tags inline {THINK_OPEN}x{THINK_CLOSE} {ANSWER_OPEN}42{ANSWER_CLOSE} <thinking> </ think>",
]


def toy_tasks(seed: int, per_family: int) -> list[Task]:
    return [
        task
        for source in SOURCES.values()
        for difficulty in DIFFICULTIES
        for task in source.generate(per_family, seed=seed, difficulty=difficulty)
    ]


def corpus(tasks: list[Task]) -> list[str]:
    """What the toy world trains on: worked solutions, and prompts as the chat renders them."""
    texts = [render_pretraining_text(task) for task in tasks]
    texts += [render_prompt(task.prompt, think=task.track == "reasoning") for task in tasks]
    return texts


@pytest.fixture(scope="module")
def train_tasks() -> list[Task]:
    return toy_tasks(seed=0, per_family=100)


@pytest.fixture(scope="module")
def texts(train_tasks: list[Task]) -> list[str]:
    return corpus(train_tasks)


@pytest.fixture(scope="module")
def tok(texts: list[str]) -> Tokenizer:
    return train_tokenizer(texts, vocab_size=VOCAB_SIZE)


@pytest.fixture(scope="module")
def r1(tok: Tokenizer) -> R1Tokenizer:
    return R1Tokenizer(tok)


@pytest.fixture(scope="module")
def saved(tok: Tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tokenizer")
    save_tokenizer(tok, out, model_max_length=1024)
    return out


@pytest.fixture(scope="module")
def hf(saved: Path) -> Iterator[Any]:
    # Offline, as everywhere here: a hub lookup would fail rather than hang.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HF_HUB_OFFLINE", "1")
        transformers = pytest.importorskip("transformers")
        yield transformers.AutoTokenizer.from_pretrained(saved, local_files_only=True)


def random_unicode(rng: random.Random) -> str:
    """Code points from every plane, surrogates excluded (they are not encodable text)."""
    chars = []
    for _ in range(rng.randint(0, 40)):
        plane = rng.choice([0x80, 0x800, 0x10000, 0x110000])
        code = rng.randrange(plane)
        chars.append(chr(code) if not 0xD800 <= code < 0xE000 else "?")
    return "".join(chars)


# --- the vocabulary -------------------------------------------------------------


def test_special_tokens_have_fixed_ids_and_flags(tok: Tokenizer) -> None:
    added = tok.get_added_tokens_decoder()
    for expected_id, content in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(content) == expected_id
        assert added[expected_id].special == (content in CONTROL_TOKENS)
    assert (tok.token_to_id(BOS), tok.token_to_id(EOS), tok.token_to_id(PAD)) == (0, 1, 2)


@pytest.mark.parametrize("token", SPECIAL_TOKENS)
def test_special_and_markup_tokens_are_single_tokens(r1: R1Tokenizer, token: str) -> None:
    ids = r1.encode(f"a{token}b {token} {token}{token}")
    assert ids.count(r1.token_id(token)) == 4
    assert all(r1.tokenizer.id_to_token(i) != token[1:-1] for i in ids)


def test_every_digit_is_its_own_token(r1: R1Tokenizer, tok: Tokenizer) -> None:
    # No vocabulary entry mixes a digit with anything, not even a space.
    for piece in tok.get_vocab():
        if any(ch.isdigit() for ch in piece) and piece not in SPECIAL_TOKENS:
            assert len(piece) == 1, piece
    text = "12345 + 67890 = 80235; x=-7/3 and 2024"
    ids = r1.encode(text)
    pieces = [r1.decode([i]) for i in ids]
    assert "".join(pieces) == text
    digits = [p for p in pieces if any(ch.isdigit() for ch in p)]
    assert digits == [ch for ch in text if ch.isdigit()]
    assert len({r1.token_id(str(d)) for d in range(10)}) == 10


def test_vocab_size_is_respected(tok: Tokenizer, texts: list[str]) -> None:
    # The toy corpus has enough pairs to fill 2048, and never more.
    assert tok.get_vocab_size() == VOCAB_SIZE
    small = train_tokenizer(texts[:500], vocab_size=300)
    assert small.get_vocab_size() <= 300
    # A corpus too small to fill the budget stops early and keeps all bytes.
    tiny = train_tokenizer(["hello hello"], vocab_size=4096)
    assert MIN_VOCAB_SIZE <= tiny.get_vocab_size() < 4096


@pytest.mark.parametrize("vocab_size", [0, MIN_VOCAB_SIZE - 1, 2048.0])
def test_too_small_or_wrong_vocab_size_is_refused(vocab_size: Any) -> None:
    with pytest.raises(ValueError, match="vocab_size must be an int"):
        train_tokenizer(["x"], vocab_size=vocab_size)


def test_no_merge_is_spent_on_tag_fragments(tok: Tokenizer) -> None:
    vocab = tok.get_vocab()
    for fragment in ("</", "><", "think>", "answer>", "Ġ<", "｜"):
        assert fragment not in vocab, fragment


# --- round trips ----------------------------------------------------------------


@pytest.mark.parametrize("text", UNICODE_TEXTS)
def test_unicode_round_trips(r1: R1Tokenizer, text: str) -> None:
    assert r1.decode(r1.encode(text)) == text


def test_random_unicode_round_trips(r1: R1Tokenizer) -> None:
    rng = random.Random(0)
    for _ in range(300):
        text = random_unicode(rng)
        assert r1.decode(r1.encode(text)) == text


def test_corpus_round_trips(r1: R1Tokenizer, texts: list[str]) -> None:
    for text in texts[::7]:
        assert r1.decode(r1.encode(text), skip_special_tokens=False) == text


def test_decode_keeps_tags_and_markers_drops_control_tokens(r1: R1Tokenizer) -> None:
    body = f"{USER}q{ASSISTANT}{THINK_OPEN}1+1=2.{THINK_CLOSE}{ANSWER_OPEN}2{ANSWER_CLOSE}"
    ids = r1.encode(body + PAD + PAD, bos=True, eos=False)
    assert ids[0] == r1.bos_id and ids[-2:] == [r1.pad_id, r1.pad_id]
    assert r1.decode(ids) == body
    assert r1.decode(ids, skip_special_tokens=False) == BOS + body + PAD + PAD
    assert r1.encode("x", eos=True)[-1] == r1.eos_id


# --- determinism ----------------------------------------------------------------


def test_training_is_deterministic_in_process(tok: Tokenizer, texts: list[str]) -> None:
    assert train_tokenizer(texts, vocab_size=VOCAB_SIZE).to_str() == tok.to_str()


def test_training_is_deterministic_across_processes(
    tok: Tokenizer, texts: list[str], tmp_path: Path
) -> None:
    # A fresh process has fresh hash seeds (Python's and Rust's HashMaps).
    corpus_file = tmp_path / "corpus.json"
    corpus_file.write_text(json.dumps(texts), encoding="utf-8")
    script = (
        "import hashlib, json, sys\n"
        "from trainer.tokenizer import train_tokenizer\n"
        "texts = json.loads(open(sys.argv[1], encoding='utf-8').read())\n"
        f"tok = train_tokenizer(texts, vocab_size={VOCAB_SIZE})\n"
        "print(hashlib.sha256(tok.to_str().encode()).hexdigest())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(corpus_file)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == hashlib.sha256(tok.to_str().encode()).hexdigest()


# --- saving and loading ---------------------------------------------------------


def test_save_and_load(saved: Path, tok: Tokenizer) -> None:
    assert load_tokenizer(saved).to_str() == tok.to_str()
    assert R1Tokenizer.from_dir(saved / "tokenizer.json").vocab_size == VOCAB_SIZE
    config = json.loads((saved / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["chat_template"] == CHAT_TEMPLATE
    assert (config["bos_token"], config["eos_token"], config["pad_token"]) == (BOS, EOS, PAD)
    assert config["model_max_length"] == 1024


def test_load_refuses_a_tokenizer_without_r1_tokens(tmp_path: Path) -> None:
    Tokenizer(models.BPE()).save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ValueError, match="expected added token"):
        load_tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="save_tokenizer"):
        load_tokenizer(tmp_path / "missing")


# --- transformers parity --------------------------------------------------------


def test_auto_tokenizer_loads_offline_with_our_tokens(hf: Any) -> None:
    assert (hf.bos_token, hf.eos_token, hf.pad_token) == (BOS, EOS, PAD)
    assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id) == (0, 1, 2)
    assert hf.model_max_length == 1024
    assert set(hf.all_special_tokens) == set(CONTROL_TOKENS)
    for token in MARKUP_TOKENS:
        assert hf.convert_tokens_to_ids(token) == SPECIAL_TOKENS.index(token)


def test_auto_tokenizer_gives_our_ids_and_text(hf: Any, r1: R1Tokenizer, texts: list[str]) -> None:
    rng = random.Random(1)
    samples = texts[::11] + UNICODE_TEXTS + [random_unicode(rng) for _ in range(50)]
    for text in samples:
        ids = r1.encode(text)
        assert hf(text)["input_ids"] == ids
        assert hf.encode(text) == ids
        assert hf.decode(ids, skip_special_tokens=False) == r1.decode(
            ids, skip_special_tokens=False
        )
        assert r1.decode(ids, skip_special_tokens=False) == text
        assert hf.decode(ids, skip_special_tokens=True) == r1.decode(ids) == text.replace(BOS, "")
    ids = r1.encode(f"{THINK_OPEN}a{THINK_CLOSE}{ANSWER_OPEN}b{ANSWER_CLOSE}", bos=True, eos=True)
    assert hf.decode(ids, skip_special_tokens=True) == r1.decode(ids)


def conversations(tasks: list[Task]) -> list[list[dict[str, str]]]:
    chats: list[list[dict[str, str]]] = [[{"role": "system", "content": "Only a system turn."}]]
    for i, task in enumerate(tasks):
        user = {"role": "user", "content": task.prompt}
        reply = {"role": "assistant", "content": task.solution}
        chats.append([user])
        chats.append([user, reply])
        if i % 3 == 0:
            chats.append([{"role": "system", "content": "Be brief."}, user, reply, user])
        if i % 5 == 0:
            chats.append([{"role": "system", "content": ""}, user])
    chats.append([{"role": "user", "content": s} for s in UNICODE_TEXTS])
    return chats


def test_apply_chat_template_equals_render_chat(hf: Any, train_tasks: list[Task]) -> None:
    chats = conversations(train_tasks[::9])
    assert len(chats) > 500
    for messages in chats:
        for add_generation_prompt in (True, False):
            for think in (True, False):
                ours = render_chat(messages, add_generation_prompt, think)
                theirs = hf.apply_chat_template(
                    messages,
                    tokenize=False,
                    add_generation_prompt=add_generation_prompt,
                    think=think,
                )
                assert theirs == ours
        # Without `think`, the template defaults to reasoning, as render_chat does.
        default = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert default == render_chat(messages)


def test_apply_chat_template_ids_equal_encode_chat(
    hf: Any, r1: R1Tokenizer, train_tasks: list[Task]
) -> None:
    for task in train_tasks[::40]:
        messages = [{"role": "user", "content": task.prompt}]
        for think in (True, False):
            ids = hf.apply_chat_template(
                messages, add_generation_prompt=True, think=think, return_dict=False
            )
            assert list(ids) == r1.encode_chat(messages, think=think)


def test_empty_conversation_is_refused() -> None:
    # transformers refuses it before the template runs; render_chat agrees.
    with pytest.raises(ValueError, match="at least one message"):
        render_chat([])


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "tool", "content": "x"}],
        [{"role": "user", "content": "a"}, {"role": "system", "content": "late"}],
    ],
)
def test_bad_roles_are_refused_by_both(hf: Any, messages: list[dict[str, str]]) -> None:
    with pytest.raises(ValueError, match="role must be user or assistant"):
        render_chat(messages)
    with pytest.raises(Exception, match="role must be user or assistant"):
        hf.apply_chat_template(messages, tokenize=False)


# --- the R1 format --------------------------------------------------------------


def test_rendered_prompt_shape() -> None:
    prompt = render_prompt("Compute 12+4.")
    assert prompt == f"{BOS}{DEFAULT_SYSTEM_PROMPT}{USER}Compute 12+4.{ASSISTANT}{THINK_OPEN}"
    assert render_prompt("Hi!", think=False).endswith(f"{ASSISTANT}{THINK_OPEN}{THINK_CLOSE}")
    no_system = render_chat([{"role": "system", "content": ""}, {"role": "user", "content": "q"}])
    assert no_system == f"{BOS}{USER}q{ASSISTANT}{THINK_OPEN}"
    reply = render_chat(
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "r"}],
        add_generation_prompt=False,
    )
    assert reply.endswith(f"{USER}q{ASSISTANT}r{EOS}")


def test_prompt_ids_are_a_prefix_of_the_full_conversation(
    r1: R1Tokenizer, train_tasks: list[Task]
) -> None:
    # SFT masks the prompt by length: the rendered prompt must tokenize to a
    # prefix of the rendered conversation, whichever track.
    for task in train_tasks[::13]:
        think = task.track == "reasoning"
        assert task.solution.startswith(generation_prefix(think))
        user = [{"role": "user", "content": task.prompt}]
        full = [*user, {"role": "assistant", "content": task.solution}]
        prompt_ids = r1.encode_chat(user, add_generation_prompt=True, think=think)
        full_ids = r1.encode_chat(full, add_generation_prompt=False)
        assert full_ids[: len(prompt_ids)] == prompt_ids
        assert full_ids[-1] == r1.eos_id


def test_compression_on_the_toy_corpus(
    tok: Tokenizer, record_property: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    held_out = toy_tasks(seed=1, per_family=25)
    solutions = [render_pretraining_text(task) for task in held_out]
    prompts = [render_prompt(task.prompt) for task in held_out]
    ratios = {
        "pretraining_text": chars_per_token(tok, solutions),
        "chat_prompts": chars_per_token(tok, prompts),
    }
    for family in SOURCES:
        ratios[family] = chars_per_token(
            tok, [render_pretraining_text(t) for t in held_out if t.source == family]
        )
    for name, ratio in ratios.items():
        record_property(f"chars_per_token_{name}", round(ratio, 3))
    with capsys.disabled():
        print(
            "\nchars/token (held-out seed 1):",
            json.dumps({k: round(v, 2) for k, v in ratios.items()}),
        )
    # Digits one per token cap arithmetic's compression; words still merge.
    assert ratios["pretraining_text"] > 2.0
    assert ratios["toy-facts"] > 3.0
