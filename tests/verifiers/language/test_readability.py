# ruff: noqa: RUF001 -- full-width and look-alike characters are the point of these cases
"""The readability rules of rejection sampling, alone and combined."""

import time

import pytest

from verifiers.language import (
    code_block_in_reasoning,
    longest_paragraph_chars,
    overlong_paragraphs,
    readability_issues,
    repetition_score,
)


def r1(reasoning: str, answer: str = "4") -> str:
    return f"<think>\n{reasoning}\n</think>\n<answer>{answer}</answer>"


# -- overlong paragraphs -------------------------------------------------------


def test_paragraphs_are_split_on_blank_lines():
    text = "a" * 1500 + "\n\n" + "b" * 1800 + "\n \t\n" + "c" * 10
    assert longest_paragraph_chars(text) == 1800
    assert overlong_paragraphs(text) is None


def test_a_paragraph_over_the_limit_is_flagged():
    assert overlong_paragraphs("short.\n\n" + "x" * 2001) == "overlong_paragraph"
    assert overlong_paragraphs("x" * 2000) is None
    assert overlong_paragraphs("x" * 101, max_chars=100) == "overlong_paragraph"


def test_single_line_breaks_do_not_end_a_paragraph():
    text = "\n".join(["this line has some words in it"] * 80)
    assert longest_paragraph_chars(text) == len(text)
    assert overlong_paragraphs(text) == "overlong_paragraph"


def test_limit_counts_characters_so_chinese_is_measured_the_same_way():
    assert overlong_paragraphs("我" * 2001) == "overlong_paragraph"
    assert overlong_paragraphs("我" * 2000) is None


def test_fenced_code_is_left_to_the_code_rule():
    text = "Intro.\n```\n" + "x = 1\n" * 500 + "```\nOutro."
    assert overlong_paragraphs(text) is None


def test_empty_text_and_bad_limit():
    assert longest_paragraph_chars("") == 0
    assert overlong_paragraphs("") is None
    with pytest.raises(ValueError, match="max_chars"):
        overlong_paragraphs("text", max_chars=0)


# -- code blocks in the reasoning ----------------------------------------------

CODE = {
    "fenced python": "Let me write it:\n```python\nprint(sum(range(10)))\n```\nSo 45.",
    "fenced without language": "Try\n```\n2 + 2\n```",
    "tilde fence": "Try\n~~~\nx = 1\n~~~",
    "unclosed fence": "Let me code it:\n```python\ndef f(n):",
    "indented fence": "Here:\n   ```js\n   f()\n   ```",
    "bare python": (
        "So the function is\ndef fib(n):\n    if n < 2:\n        return n\n"
        "    return fib(n - 1) + fib(n - 2)\nThat should work."
    ),
    "indented code": "Consider\n\n    x = 1\n    y = 2\n    print(x + y)\n\nwhich prints 3.",
    "tab indented": "Then\n\tfor i in range(3):\n\t\ttotal += i\n\tprint(total)",
    "c": 'In C:\nint main() {\n  printf("hi");\n  return 0;\n}',
    "javascript": "const xs = [1, 2];\nlet total = 0;\nfor (const x of xs) total += x;",
    "imports": "import math\nfrom fractions import Fraction\nprint(math.gcd(4, 6))",
}

NOT_CODE = {
    "inline code": "We call `len(xs)` and then `sorted(xs)`; the `for` loop is fine.",
    "inline triple backticks": "Write ```x = 1``` on one line.",
    "inline math": r"Since $x^2 + 1 > 0$ and \(y = 2\), the sum $x + y$ is positive.",
    "display math": (
        "We solve\n$$\n\\begin{cases}\nx + y = 3; \\\\\nx - y = 1;\n\\end{cases}\n$$\nso x = 2."
    ),
    "bracket display math": "Then\n\\[\na = b;\nb = c;\nc = d;\n\\]\nhence a = d.",
    "indented math": "We solve:\n\n    2x + 3 = 7\n    2x = 4\n    x = 2\n\nSo x = 2.",
    "indented prose": "Case 1:\n    We have x = 1.\n    Then y = 2.\n    This works.",
    "nested list": "- Case 1:\n    - if x > 0: positive\n    - x = 1\n    - y = 2",
    "numbered list": "1. Add.\n2. Check parity;\n3. Answer;",
    "two code lines": "def f(x):\n    return x",
    "capitalised prose": "If n is even:\nthen we halve it.\nOtherwise we triple it and add one.",
    "chinese": "首先计算：\n    三加四等于七；\n    七是奇数；\n    所以答案是七。",
    "plain": "First add the numbers, then check the parity of the sum.",
    "empty": "",
}


@pytest.mark.parametrize("text", CODE.values(), ids=CODE.keys())
def test_code_blocks_are_flagged(text):
    assert code_block_in_reasoning(text) == "code_in_reasoning"


@pytest.mark.parametrize("text", NOT_CODE.values(), ids=NOT_CODE.keys())
def test_inline_code_math_and_lists_are_not_code_blocks(text):
    assert code_block_in_reasoning(text) is None


# -- repetition ----------------------------------------------------------------


def test_repetition_score_hand_computed():
    # 12 words, 9 four-grams, 4 of them distinct: 5 repeats
    assert repetition_score("a b c d a b c d a b c d") == pytest.approx(5 / 9)
    assert repetition_score("one two three four five six") == 0.0
    assert repetition_score("too short") == 0.0
    assert repetition_score("") == 0.0


def test_repetition_ignores_case_and_punctuation_and_splits_chinese():
    assert repetition_score("Wait, wait. WAIT! wait?", n=1) == pytest.approx(3 / 4)
    # 8 characters, 7 bigrams, 2 distinct (我们 and 们我)
    assert repetition_score("我们我们我们我们", n=2) == pytest.approx(5 / 7)


def test_repetition_n_is_validated():
    with pytest.raises(ValueError, match="n must be"):
        repetition_score("text", n=0)


def test_a_looping_chain_of_thought_scores_high():
    loop = "Let me check the sum again. " * 20
    assert repetition_score(loop) > 0.9
    assert repetition_score("Let me check the sum again. It is even, so the answer is 4.") == 0.0


# -- combined ------------------------------------------------------------------


def test_a_readable_completion_has_no_issues():
    text = r1("First add 2 and 2 to get $4$.\n\nThe sum `2 + 2` is even, so the answer is 4.")
    assert readability_issues(text) == []


def test_the_non_reasoning_track_has_no_issues():
    assert readability_issues("<think></think><answer>Bonjour !</answer>", "fr") == []


def test_each_rule_is_reported():
    mixed = "We add the numbers. 然后我们检查这个结果是不是偶数，最后得到答案。"
    long = "We add the numbers. " * 120
    code = "We add:\n```python\nprint(2 + 2)\n```"
    assert readability_issues(r1(mixed)) == ["mixed_language"]
    assert readability_issues(r1(long)) == ["overlong_paragraph"]
    assert readability_issues(r1(code)) == ["code_in_reasoning"]
    long_chinese = "我们把这两个数相加。" * 250
    assert readability_issues(r1(f"We add.\n\n{long_chinese}\n\n{code}")) == [
        "mixed_language",
        "overlong_paragraph",
        "code_in_reasoning",
    ]


def test_rules_look_at_the_reasoning_not_the_answer():
    answer = "```python\nprint(4)\n```\n" + "答案" * 1500
    assert readability_issues(r1("We add 2 and 2.", answer=answer)) == []


def test_target_language_and_limits_are_passed_through():
    zh = r1("我们先把两个数相加，然后检查结果。")
    assert readability_issues(zh, "zh") == []
    assert readability_issues(zh, "en") == ["mixed_language"]
    assert readability_issues(zh, "zh-CN", max_paragraph_chars=5) == ["overlong_paragraph"]
    half = r1("我们先把两个数相加 and then we check it")
    assert readability_issues(half, "zh", min_consistency=0.5) == []


def test_a_malformed_completion_reports_its_format_reason():
    assert readability_issues("no tags at all") == ["missing_think"]
    assert readability_issues("<think>a</think>4") == ["missing_answer"]
    assert readability_issues("<think>a</think>4", require_answer=False) == []


def test_unsupported_target_is_an_error():
    with pytest.raises(ValueError, match="unsupported target language"):
        readability_issues(r1("text"), "klingon")


# -- cost ----------------------------------------------------------------------

HOSTILE = {
    "unclosed display math": "\\[" * 20_000,
    "unclosed inline math": "\\(" * 20_000,
    "unclosed double dollar": "$$" + "a" * 50_000,
    "fence after fence": "```\n" * 20_000,
    "dollar after dollar": "$a " * 20_000,
    "backtick after backtick": "`a " * 20_000,
    "one huge line": "for x in " + "y, " * 30_000,
}


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_reasoning_is_judged_in_linear_time(text):
    """Each case took seconds with a naive lazy-match regex; all rules must stay fast."""
    start = time.perf_counter()
    readability_issues(f"<think>{text}</think><answer>1</answer>")
    repetition_score(text)
    assert time.perf_counter() - start < 5.0  # a hang guard: the naive regexes took about 10 s
