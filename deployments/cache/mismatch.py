"""Vetoes on a candidate hit: differences that change a question's meaning however close its
embedding is ("export to Germany" vs "import from Germany", "under 10 kg" vs "under 100 kg").

A similarity model scores such pairs high because they share nearly every word; these
rules are cheap, exact and explainable, and they run before the pair classifier. They look
for a slot filled two ways (a number for another, one place or name for another, negated or
not, import or export), not for a detail one question adds: "jobs in Canada from India"
and "jobs in Canada", or "changes in 2016" and "changes", are left
to the classifier, which weighs such additions better than a rule (on the QQP calibration
part, broader rules vetoed 115 pairs that the classifier scored above 0.95; 109 of them were
labelled duplicates).
"""

from __future__ import annotations

import re
from functools import lru_cache

_WORD = re.compile(r"[\w<>.'’-]+", re.UNICODE)
# A number: its digits, with thousands separators dropped ("1,000" = "1000", but "500,1000"
# is two numbers) and "k" for thousand ("15k" = "15000"), so that "Rs.1000", "1000rs" and
# "1000" agree; codes keep their digit groups (8471.30, EUR1 -> 1).
_NUMBER = re.compile(r"(\d+(?:,\d{3}(?!\d))*(?:\.\d+)*)(k\b)?", re.IGNORECASE)
# Upper-case Roman numerals from 2 ("World War II"); "I", "V" and "X" are too often words.
_ROMAN_WORD = re.compile(r"\b[IVX]+\b")
_ROMAN = {"II": "2", "III": "3", "IV": "4", "VI": "6", "VII": "7", "VIII": "8", "IX": "9", "XI": "11",
          "XII": "12"}
_NUMBER_WORDS = {"first": "1", "third": "3", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
                 "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12",
                 "twenty": "20", "thirty": "30",
                 "hundred": "100", "thousand": "1000", "million": "1000000", "billion": "1000000000"}
_FUNCTION_WORDS = {"i", "i'm", "is", "are", "what", "how", "why", "which", "who", "the", "a", "an", "and", "or",
                   "in", "of", "for", "to", "do", "does", "can", "my", "it", "best"}
_NEGATIONS = {"not", "no", "never", "without", "cannot", "nor", "none", "neither", "nothing", "unless",
              # Contractions typed without the apostrophe.
              "cant", "dont", "doesnt", "didnt", "isnt", "arent", "wasnt", "werent", "wont", "wouldnt",
              "shouldnt", "couldnt", "havent", "hasnt", "hadnt"}
# Set phrases with a negation that does not negate the question ("Why or why not?").
_IDIOMS = re.compile(r"\b(?:why or why not|or not|if not|whether or not|no matter|little to no)\b")
# Opposites: a pair differs when one text has one side only and the other the other side only.
_OPPOSITES = [("import", "export"), ("imports", "exports"), ("importing", "exporting"),
              ("imported", "exported"), ("importer", "exporter"), ("to", "from"), ("into", "out"),
              ("buy", "sell"), ("buying", "selling"), ("inbound", "outbound"), ("before", "after"),
              ("increase", "decrease"), ("above", "below"), ("over", "under"), ("more", "less"),
              ("maximum", "minimum"), ("max", "min"), ("higher", "lower"), ("cheapest", "expensive"),
              ("best", "worst"), ("arrival", "departure"), ("origin", "destination"),
              ("allowed", "prohibited"), ("legal", "illegal"), ("pros", "cons"), ("male", "female"),
              ("men", "women"), ("boy", "girl"), ("good", "bad"), ("start", "end"), ("open", "close"),
              ("past", "future"), ("present", "future"), ("advantages", "disadvantages"),
              ("advantage", "disadvantage"), ("odd", "even"), ("inside", "outside"), ("in", "outside")]


def _words(text: str) -> list[str]:
    return [w.strip(".'’-").lower() for w in _WORD.findall(text)]


# One country under several names; more aliases belong here as they turn up.
_ALIASES = {"us": "usa", "u.s": "usa", "u.s.a": "usa", "america": "usa", "american": "usa", "uk": "britain",
            "u.k": "britain", "british": "britain", "england": "britain"}


def _name_key(word: str) -> str:
    """A name's comparable form: lower case, no possessive or plural ("Years" = "year")."""
    w = word.lower().removesuffix("'s").removesuffix("’s")
    w = w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w
    return _ALIASES.get(w, w)


def _names(text: str) -> list[str]:
    """Capitalized words after the first (names, places, codes), in comparable form, in order."""
    raw = [w.strip(".'’-") for w in _WORD.findall(text)][1:]
    return [_name_key(w) for w in raw if w[:1].isupper() and w.lower() not in _FUNCTION_WORDS]


def _number(digits: str, thousands: str) -> str:
    n = digits.replace(",", "")
    return str(int(float(n) * 1000)) if thousands and n.replace(".", "", 1).isdigit() else n


def _numbers(text: str, words: list[str]) -> frozenset[str]:
    return frozenset({_number(d, k) for d, k in _NUMBER.findall(text)} |
                     {_NUMBER_WORDS[w] for w in words if w in _NUMBER_WORDS} |
                     {_ROMAN[w] for w in _ROMAN_WORD.findall(text) if w in _ROMAN})


def _negated(text: str) -> bool:
    words = _words(_IDIOMS.sub(" ", text.lower()))
    return any(w in _NEGATIONS or w.endswith("n't") or w.endswith("n’t") for w in words)


@lru_cache(maxsize=1)
def _places() -> frozenset[str]:
    from faker.providers.address.en import Provider

    return frozenset(c.lower() for c in Provider.countries if " " not in c)


def _swapped(a: set[str], b: set[str]) -> bool:
    """Each side has one the other lacks: a slot filled two ways, not a detail added."""
    return bool(a - b) and bool(b - a)


def _same_frame(a: set[str], b: set[str]) -> bool:
    """The rest of the two questions (the words outside the slot) is mostly the same."""
    return len(a & b) >= 0.7 * max(len(a | b), 1)


def _initials(names: list[str]) -> set[str]:
    """Acronyms of consecutive names, in comparable form ("United States" -> "us" -> "usa"),
    so that "US" and "United States" count as one name."""
    out = set()
    for i in range(len(names)):
        for j in range(i + 2, min(len(names), i + 5) + 1):
            out.add(_name_key("".join(n[0] for n in names[i:j])))
    return out


def mismatch(query: str, candidate: str) -> str | None:
    """The reason the two questions differ in meaning, or None when no rule objects."""
    a, b = _words(query), _words(candidate)
    na_, nb_ = _numbers(query, a), _numbers(candidate, b)
    if na_ != nb_ and (bool(na_ and nb_) or len(na_ | nb_) > 1):
        # One bare number added ("in 2017", "top 10") is a detail; anything else changes the ask.
        return "numbers or codes differ"
    if _negated(query) != _negated(candidate):
        return "negation differs"
    sa, sb = set(a), set(b)
    for x, y in _OPPOSITES:
        if (x in sa and y not in sa and y in sb and x not in sb) or (y in sa and x not in sa and x in sb and y not in sb):
            return f"direction differs ({x}/{y})"
    places = _places()
    if _swapped({w for w in sa if w in places}, {w for w in sb if w in places}):
        return "places differ"
    na, nb = _names(query), _names(candidate)
    # A name swapped for another in an otherwise same question (the hours of Jackson County
    # customs / of Union County customs). A name only added or dropped, or names in two
    # differently worded questions ("RBI's move" / "the Indian government's decision"), are
    # left to the classifier: capitalisation is a poor guide to what a name is.
    ka, kb = {_name_key(w) for w in a}, {_name_key(w) for w in b}
    if _swapped(set(na) - kb - _initials(nb), set(nb) - ka - _initials(na)) and \
            _same_frame(ka - set(na), kb - set(nb)):
        return "names differ"
    if na != nb and sorted(na) == sorted(nb) and len(set(na)) > 1:
        return "names in another order"  # "from Texas to California" vs "from California to Texas"
    return None
