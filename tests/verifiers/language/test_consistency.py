# ruff: noqa: RUF001 -- full-width and look-alike characters are the point of these cases
"""The language-consistency reward and the mixed-language rule."""

import pytest

from verifiers.language import (
    SUPPORTED_LANGUAGES,
    detect_mixed_language,
    language_consistency,
    normalize_language,
)

ZH = "首先，我们把两个数相加。然后检查结果是不是偶数。"
EN = "First we add the two numbers. Then we check whether the result is even."


@pytest.mark.parametrize(
    ("text", "target"),
    [
        (ZH, "zh"),
        (EN, "en"),
        ("Сначала сложим два числа, потом проверим чётность.", "ru"),
        ("まず二つの数を足します。次に結果を確かめます。", "ja"),
        ("먼저 두 수를 더합니다. 그 다음 결과를 확인합니다.", "ko"),
        ("نجمع العددين ثم نتحقق من النتيجة", "ar"),
        ("Πρώτα προσθέτουμε τους δύο αριθμούς.", "el"),
        ("Nous additionnons les deux nombres, puis nous vérifions le résultat.", "fr"),
        ("Wir addieren die beiden Zahlen und prüfen dann das Ergebnis.", "de"),
        ("Primero sumamos los dos números y luego comprobamos el resultado.", "es"),
    ],
)
def test_text_in_the_target_language_scores_one(text, target):
    assert language_consistency(text, target) == 1.0
    assert detect_mixed_language(text, target) is None


@pytest.mark.parametrize(
    ("text", "target"),
    [(ZH, "en"), (EN, "zh"), (ZH, "ru"), ("Сумма чётная.", "en"), (EN, "ar")],
)
def test_text_in_another_script_scores_zero(text, target):
    assert language_consistency(text, target) == 0.0
    assert detect_mixed_language(text, target) == "mixed_language"


def test_chinese_reasoning_with_english_words_is_mixed():
    # 9 + 3 Han words and 4 English words: 12 / 16
    text = "我们需要计算这个值，let me check again，结果对。"
    assert language_consistency(text, "zh") == pytest.approx(12 / 16)
    assert detect_mixed_language(text, "zh") == "mixed_language"
    assert language_consistency(text, "en") == pytest.approx(4 / 16)


def test_chinese_reasoning_switching_to_english_mid_way():
    text = ZH + " Wait, let me recheck the second step carefully before answering."
    assert detect_mixed_language(text, "zh") == "mixed_language"
    assert detect_mixed_language(text, "en") == "mixed_language"


def test_one_technical_term_in_chinese_stays_under_the_threshold():
    # 19 Han words and one Latin word: 19/20 > 0.9
    text = "我们用 Python 写一个函数来验证这个结论是否正确。"
    assert language_consistency(text, "zh") == pytest.approx(19 / 20)
    assert detect_mixed_language(text, "zh") is None


def test_english_reasoning_with_a_chinese_aside_is_mixed():
    text = "We add the numbers and get twelve. 这个结果是偶数。"
    assert language_consistency(text, "en") == pytest.approx(7 / 14)
    assert detect_mixed_language(text, "en") == "mixed_language"


def test_math_code_variables_and_symbols_are_neutral():
    text = (
        r"设 $f(x) = x^2 + \frac{1}{x}$，则当 x > 0 时，"
        "`f(x)` 的最小值由 sin、cos 无关，得 y_1 = 3 ≥ 2 ✅。"
    )
    assert language_consistency(text, "zh") == 1.0


def test_full_width_punctuation_and_emoji_are_neutral():
    assert language_consistency("好的！我们开始吧😀。（第一步）", "zh") == 1.0
    assert language_consistency("Ｏｋ，ｌｅｔ’ｓ ｇｏ！", "en") == 1.0


@pytest.mark.parametrize("text", ["", "   ", "1 + 1 = 2", "$$x^2$$", "😀😀", "```\ncode\n```"])
def test_text_without_words_scores_one(text):
    assert language_consistency(text, "zh") == 1.0
    assert detect_mixed_language(text, "en") is None


def test_kana_in_a_chinese_target_is_off_target():
    text = "我们计算这个值です"
    assert language_consistency(text, "zh") == pytest.approx(7 / 9)
    assert language_consistency(text, "ja") == 1.0


def test_english_reasoning_switching_to_french_is_mixed():
    text = (
        "First we add the two numbers and check the parity. "
        "Ensuite, nous avons donc une somme qui est paire et cela suffit."
    )
    score = language_consistency(text, "en")
    assert 0.3 < score < 0.6
    assert detect_mixed_language(text, "en") == "mixed_language"
    assert detect_mixed_language(text, "fr") == "mixed_language"


def test_a_whole_text_in_another_latin_language_is_off_target():
    # each sentence is too short to call alone, the whole text is clearly German
    text = "Also gut. Das ist klar. Wir sind fertig. Und nun?"
    assert language_consistency(text, "en") == 0.0
    assert language_consistency(text, "de") == 1.0


def test_a_french_phrase_quoted_in_english_is_not_flagged():
    text = "The French say c'est la vie, which means that this is life."
    assert language_consistency(text, "en") == 1.0


def test_script_cannot_tell_unlisted_latin_languages_apart():
    # documented limit: Italian is not identified, so it passes as English
    text = "Quindi la somma è pari e il risultato è corretto."
    assert language_consistency(text, "en") == 1.0


@pytest.mark.parametrize(("tag", "code"), [("zh-CN", "zh"), ("EN_us", "en"), (" ru ", "ru")])
def test_language_tags_are_normalised(tag, code):
    assert normalize_language(tag) == code
    assert language_consistency(ZH, tag) == language_consistency(ZH, code)


@pytest.mark.parametrize("target", ["", "xx", "chinese", "pt"])
def test_unsupported_target_names_the_choices(target):
    with pytest.raises(ValueError, match="unsupported target language") as info:
        language_consistency(EN, target)
    assert all(code in str(info.value) for code in SUPPORTED_LANGUAGES)


def test_threshold_is_respected_and_validated():
    text = "我们需要计算这个值，let me check again，结果对。"  # 12/16 = 0.75
    assert detect_mixed_language(text, "zh", threshold=0.75) is None
    assert detect_mixed_language(text, "zh", threshold=0.76) == "mixed_language"
    assert detect_mixed_language(EN, "en", threshold=1.0) is None
    with pytest.raises(ValueError, match="threshold"):
        detect_mixed_language(EN, "en", threshold=1.5)
