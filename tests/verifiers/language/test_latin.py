"""Function-word identification of English, French, German and Spanish."""

import itertools

import pytest

from verifiers.language import LATIN_LANGUAGES, identify_latin_language
from verifiers.language.latin import STOPWORDS, stopword_hits


def words(text: str) -> list[str]:
    return text.replace(",", " ").replace(".", " ").split()


def test_lists_are_disjoint_so_each_hit_is_evidence_for_one_language():
    for a, b in itertools.combinations(LATIN_LANGUAGES, 2):
        assert not STOPWORDS[a] & STOPWORDS[b], (a, b)


def test_lists_hold_no_single_letters_or_math_words():
    every = set().union(*STOPWORDS.values())
    assert all(len(w) >= 2 for w in every)
    assert not every & {"plus", "sin", "min", "max", "mod", "log"}


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("First we check that the sum of these terms is even.", "en"),
        ("Nous avons donc une somme qui est paire, et cela suffit.", "fr"),
        ("Wir sehen, dass die Summe nicht ungerade ist, und das reicht.", "de"),
        ("Entonces la suma es par, porque cada término también lo es.", "es"),
        ("WE CHECK THAT THE SUM IS EVEN", "en"),
    ],
)
def test_clear_sentences_are_identified(text, language):
    assert identify_latin_language(words(text)) == language


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Donc x.",  # one hit is not enough
        "Sturm und Drang is the name.",  # en 2 vs de 1: not more than twice
        "Quindi la somma è pari e il risultato è corretto.",  # Italian: unknown
        "Compute gcd quickly.",  # no function words at all
    ],
)
def test_unclear_text_is_not_identified(text):
    assert identify_latin_language(words(text)) is None


def test_min_hits_is_adjustable():
    assert identify_latin_language(["donc"], min_hits=1) == "fr"
    assert identify_latin_language(["the", "and", "is"], min_hits=4) is None


def test_hits_are_case_insensitive():
    assert stopword_hits(["The", "UND", "Est", "Pero"]) == {"en": 1, "fr": 1, "de": 1, "es": 1}
