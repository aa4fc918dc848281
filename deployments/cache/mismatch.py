"""Vetoes on a candidate hit: differences that change a question's meaning however close its
embedding is ("export to Germany" vs "import from Germany", "under 10 kg" vs "under 100 kg").

A similarity model scores such pairs high because they share nearly every word; these
rules are cheap, exact and explainable, and they run before the pair classifier.
"""

from __future__ import annotations

import re
from functools import lru_cache

_WORD = re.compile(r"[\w<>.'’-]+", re.UNICODE)
# Numbers and codes: anything with a digit (10, 8471.30, EUR1, <IBAN_1>), normalized.
_NUMBERISH = re.compile(r"\d")
_NUMBER_WORDS = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                 "eleven", "twelve", "twenty", "thirty", "hundred", "thousand", "million", "billion",
                 "first", "second", "third", "half", "double", "single"}
_FUNCTION_WORDS = {"i", "i'm", "is", "are", "what", "how", "why", "which", "who", "the", "a", "an", "and", "or",
                   "in", "of", "for", "to", "do", "does", "can", "my", "it", "best"}
_NEGATIONS = {"not", "no", "never", "without", "cannot", "nor", "none", "neither", "nothing", "unless"}
# Opposites: a pair differs when one text has one side only and the other the other side only.
_OPPOSITES = [("import", "export"), ("imports", "exports"), ("importing", "exporting"),
              ("imported", "exported"), ("importer", "exporter"), ("to", "from"), ("into", "out"),
              ("buy", "sell"), ("buying", "selling"), ("inbound", "outbound"), ("before", "after"),
              ("increase", "decrease"), ("above", "below"), ("over", "under"), ("more", "less"),
              ("maximum", "minimum"), ("max", "min"), ("higher", "lower"), ("cheapest", "expensive"),
              ("best", "worst"), ("arrival", "departure"), ("origin", "destination"),
              ("allowed", "prohibited"), ("legal", "illegal"), ("pros", "cons"), ("male", "female"),
              ("men", "women"), ("boy", "girl"), ("good", "bad"), ("start", "end"), ("open", "close")]


def _words(text: str) -> list[str]:
    return [w.strip(".'’-").lower() for w in _WORD.findall(text)]


def _names(text: str) -> list[str]:
    """Capitalized words after the first (names, places, codes), lowercased, in order."""
    raw = [w.strip(".'’-") for w in _WORD.findall(text)][1:]
    return [w.lower() for w in raw if w[:1].isupper() and w.lower() not in _FUNCTION_WORDS]


def _numbers(words: list[str]) -> frozenset[str]:
    return frozenset(w.replace(",", "") for w in words if _NUMBERISH.search(w) or w in _NUMBER_WORDS)


def _negated(words: list[str]) -> bool:
    return any(w in _NEGATIONS or w.endswith("n't") or w.endswith("n’t") for w in words)


@lru_cache(maxsize=1)
def _places() -> frozenset[str]:
    from faker.providers.address.en import Provider

    return frozenset(c.lower() for c in Provider.countries if " " not in c)


def mismatch(query: str, candidate: str) -> str | None:
    """The reason the two questions differ in meaning, or None when no rule objects."""
    a, b = _words(query), _words(candidate)
    if _numbers(a) != _numbers(b):
        return "numbers or codes differ"
    if _negated(a) != _negated(b):
        return "negation differs"
    sa, sb = set(a), set(b)
    for x, y in _OPPOSITES:
        if (x in sa and y not in sa and y in sb and x not in sb) or (y in sa and x not in sa and x in sb and y not in sb):
            return f"direction differs ({x}/{y})"
    places = _places()
    if {w for w in sa if w in places} != {w for w in sb if w in places}:
        return "places differ"
    na, nb = _names(query), _names(candidate)
    # A name swapped for another (Jackson County / Union County); a name only added or
    # dropped is left to the classifier, since questions often name their context loosely.
    if set(na) - sb and set(nb) - sa:
        return "names differ"
    if na != nb and sorted(na) == sorted(nb) and len(set(na)) > 1:
        return "names in another order"  # "from Texas to California" vs "from California to Texas"
    return None
