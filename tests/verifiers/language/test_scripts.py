# ruff: noqa: RUF001 -- full-width and look-alike characters are the point of these cases
"""Script counting: which letters count, and which script they are in."""

import pytest

from verifiers.language import SCRIPTS, script_counts, script_shares, strip_non_prose
from verifiers.language.scripts import char_script, iter_words


def only(script: str) -> dict[str, float]:
    return {s: (1.0 if s == script else 0.0) for s in SCRIPTS}


@pytest.mark.parametrize(
    ("text", "script"),
    [
        ("The sum is even.", "latin"),
        ("Ça reste très élégant, naïve façade.", "latin"),
        ("Größer als fünf.", "latin"),
        ("我们先求和。", "cjk"),
        ("ひらがなとカタカナ", "cjk"),
        ("ｶﾀｶﾅ", "cjk"),  # half-width katakana
        ("안녕하세요 여러분", "cjk"),
        ("Сумма чётная.", "cyrillic"),
        ("المجموع زوجي", "arabic"),
        ("Το άθροισμα είναι άρτιο", "greek"),
        ("नमस्ते दुनिया", "other"),
        ("สวัสดีครับ", "other"),
    ],
)
def test_single_script_text(text, script):
    assert script_shares(text) == only(script)


def test_every_key_present_and_shares_sum_to_one():
    shares = script_shares("我们 compute Сумма")
    assert set(shares) == set(SCRIPTS)
    assert sum(shares.values()) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n",
        "12345 + 678 = 13023",
        "😀🤔🎉 👍🏽",
        "，。！？：；「」【】（）",
        "∑ ∫ √ ≤ ≥ ∞ ∈",
        "$x^2 + y^2 = r^2$",
    ],
)
def test_text_without_counted_letters_has_all_zero_shares(text):
    assert script_shares(text) == dict.fromkeys(SCRIPTS, 0.0)


def test_letter_and_word_units():
    text = "我们需要 calculate 这个值"
    # 7 Han characters and 9 Latin letters, but 7 Han "words" and 1 Latin word
    assert script_counts(text, unit="letter") == {"han": 7, "latin": 9}
    assert script_counts(text, unit="word") == {"han": 7, "latin": 1}
    assert script_shares(text)["latin"] == pytest.approx(9 / 16)
    assert script_shares(text, unit="word")["latin"] == pytest.approx(1 / 8)


def test_japanese_is_split_into_han_and_kana():
    assert script_counts("日本語のテキスト", unit="letter") == {"han": 3, "kana": 5}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        # variables: single letters, letters touching digits or underscores
        ("Let x be 3 and n = 2x + y_1.", ["Let", "be", "and"]),
        ("设x为正数，则y也是。", ["设", "为", "正", "数", "则", "也", "是"]),
        ("Take α and β where θ varies.", ["Take", "and", "where", "varies"]),
        # math function names are notation
        ("so sin and cos and log and max agree", ["so", "and", "and", "and", "agree"]),
        # math alphanumerics, letterlike symbols, super/subscripts
        ("the 𝑥 in ℝ with xⁿ and aᵢ", ["the", "in", "with", "and"]),
        # combining accents stay with their letter; emoji split nothing
        ("cafe\u0301 done😀ok", ["cafe\u0301", "done", "ok"]),
        # full-width letters are Latin, full-width punctuation is not a letter
        ("ＡＢＣ，ＯＫ！", ["ＡＢＣ", "ＯＫ"]),
        ("第3步：完成", ["第", "步", "完", "成"]),
        ("don't stop", ["don", "stop"]),
    ],
)
def test_iter_words_skips_notation(text, words):
    assert [w for _, w in iter_words(text)] == words


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        (r"我们有 $\frac{a}{b} + \sqrt{c}$ 和 $$\sum_{i=1}^{n} i$$ 两项", "我们有 和 两项"),
        (r"由 \(x+y\) 与 \[x-y\] 可得", "由 与 可得"),
        (r"the \alpha case", "the case"),
        ("call `numpy.linalg.solve` here", "call here"),
        ("see https://example.com/a?b=c now", "see now"),
        ("before\n```python\ndef f():\n    return 1\n```\nafter", "before after"),
        ("before\n~~~\ncode\n~~~\nafter", "before after"),
        ("before\n```\nunterminated code", "before"),
    ],
)
def test_strip_non_prose(text, kept):
    assert " ".join(strip_non_prose(text).split()) == kept


def test_latex_and_code_do_not_count_as_latin_in_chinese():
    text = r"因为 $\frac{x}{2} = \lambda$，所以用 `solve()` 求解。"
    assert script_shares(text) == only("cjk")


@pytest.mark.parametrize(
    ("ch", "script"),
    [
        ("a", "latin"),
        ("é", "latin"),
        ("Ａ", "latin"),
        ("中", "han"),
        ("々", "han"),
        ("𠀀", "han"),  # CJK Extension B
        ("あ", "kana"),
        ("ー", "kana"),
        ("한", "hangul"),
        ("ж", "cyrillic"),
        ("ب", "arabic"),
        ("λ", "greek"),
        ("क", "other"),
        ("\u0301", "mark"),
        ("1", ""),
        ("，", ""),
        ("😀", ""),
        ("𝑥", ""),
        ("ℝ", ""),
        ("ⁿ", ""),
    ],
)
def test_char_script(ch, script):
    assert char_script(ch) == script
