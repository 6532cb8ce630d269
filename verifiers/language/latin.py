"""Telling English, French, German and Spanish apart by their function words.

Script counting sees all four as Latin. Here a text's lower-cased words are
matched against short lists of frequent function words, one list per
language. The lists are disjoint on purpose: a word common to two of the
languages (`de`, `la`, `que`, `en`, `in`, `die`, `es`, `son`, ...) or to a
language and to mathematics (`plus`, `sin`) is left out, so every hit is
evidence for one language only. The call is made only when it is clear: at
least `min_hits` hits for the winner and more than twice the runner-up's.
Short or function-word-free text, and other Latin-script languages (Italian,
Portuguese, Dutch, ...), come back as `None` (unknown).
"""

from __future__ import annotations

from collections.abc import Iterable


def _wordlist(text: str) -> frozenset[str]:
    return frozenset(text.split())


STOPWORDS: dict[str, frozenset[str]] = {
    "en": _wordlist(
        """
        the and is are were be been being this that these those with for
        we it its of to have not but which what there they their can would
        should because if from by at let us our into each than how why when
        where does do now only just about then must
        """
    ),
    "fr": _wordlist(
        """
        une est sont et nous vous il ils elle elles qui dans pour pas ne sur
        avec au aux ce cette ces donc mais ou où être avoir avons fait comme
        alors leur même aussi très était ses ça cela ceci puis ainsi chaque
        sans sous peut doit faut voici déjà après avant parce
        """
    ),
    "de": _wordlist(
        """
        der das und ist sind nicht ein eine einen dem den mit auf für von zu
        wir ich sie auch nur noch wenn dann aber oder wird werden kann können
        haben dass daß durch bei nach aus wie diese dieser sich jetzt hier
        schon ob weil damit zum zur im vom
        """
    ),
    "es": _wordlist(
        """
        el los las del por para con una uno está están pero como más muy
        también entonces porque cuando donde esto esta este estos sus hay ser
        tiene tenemos podemos vamos ahora luego primero qué cómo fue era hacer
        puede lo al ya cada su
        """
    ),
}

LATIN_LANGUAGES = tuple(STOPWORDS)


def stopword_hits(words: Iterable[str]) -> dict[str, int]:
    """Number of `words` found in each language's function-word list."""
    hits = dict.fromkeys(STOPWORDS, 0)
    for word in words:
        lowered = word.lower()
        for language, stopwords in STOPWORDS.items():
            if lowered in stopwords:
                hits[language] += 1
    return hits


def identify_latin_language(words: Iterable[str], *, min_hits: int = 2) -> str | None:
    """The language of `words` among `LATIN_LANGUAGES` when the evidence is clear, else None."""
    ranked = sorted(stopword_hits(words).items(), key=lambda item: item[1], reverse=True)
    (best, best_hits), (_, second_hits) = ranked[0], ranked[1]
    if best_hits >= min_hits and best_hits > 2 * second_hits:
        return best
    return None
