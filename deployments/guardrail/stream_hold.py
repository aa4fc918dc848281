"""Where a streamed answer may be cut for the output guard (issue 17).

Text before the cut can be screened and sent now; the text after it could still grow into
an identifier the guard would mask, so it waits for the next delta. A fixed hold of the
longest identifier's length (48 characters) made the first text wait about 25 tokens; this
holds back only a tail that could still become one:

- a word with a digit, `@`, `+` or an invisible joiner (phones, IBANs, passports, emails,
  numbers written with spaces or zero-width characters between the digits);
- a capitalised word that is not a common English word (a name, a street, an IBAN's bank
  code, a NINO's letters), and the short connectors between such words ("Calle de Alcalá");
- the last word while it is still being written (no space after it yet), unless it is a
  common English word in lower case, or one that opens a sentence: "john" may become
  "john.doe@example.com" and "Go" "Gonzalez", but a sentence's "The" will not.

A run of such words at the end is held whole, since an identifier may span several. The
common words are spaCy's English stop words (spaCy is the guard's NER already) plus a few
answer openers it lacks. The held tail never exceeds `max_hold` characters: past that, the
cut moves to a space `max_hold` characters before the end, as the fixed hold did, and the
guard moves it back to the start of any identifier found across it.
"""

from __future__ import annotations

import re

from spacy.lang.en.stop_words import STOP_WORDS

_OPENERS = {"yes", "sure", "hello", "hi", "certainly", "sorry", "thanks", "okay", "ok", "great", "good", "dear"}
COMMON_WORDS = frozenset(STOP_WORDS) | _OPENERS
# Lower-case words inside names and addresses: "Calle de Alcalá", "Plot No. 12", "bin Rashid".
_CONNECTORS = frozenset({"de", "del", "la", "las", "los", "el", "da", "do", "dos", "di", "du", "van", "von",
                         "der", "den", "bin", "binti", "al", "y", "e", "no", "no.", "of", "&", "-", "/", ","})
_RISKY_CHARS = re.compile(r"[\d@+\u200b-\u200d\u2060\ufeff]")
_WORD = re.compile(r"\S+")
_EDGES = ".,;:!?()[]\"'“”‘’"


def _could_grow(word: str, being_written: bool, starts_sentence: bool = False) -> bool:
    if _RISKY_CHARS.search(word):
        return True
    core = word.strip(_EDGES)
    if not core:
        return False
    common = core.lower() in COMMON_WORDS
    if core[0].isupper() and not common:
        return True
    if being_written:
        # A capitalised common word opens a sentence ("The", "An", "A"); elsewhere it may be
        # the start of a name or code still being written ("Go" of "Gonzalez", "A" of "AB
        # 12 34 56 C"), so it waits like any unknown word.
        return not common or (core[0].isupper() and not starts_sentence)
    return False


def stream_cut(text: str, max_hold: int, sent: str = "") -> int:
    """How many characters of `text` (the part not yet sent) may be screened and sent now;
    `sent` is what went before it."""
    words = [(m.start(), m.group()) for m in _WORD.finditer(text)]
    if not words:
        return len(text)
    open_last = not text[-1].isspace()
    # Only the last word can be being written, so only its sentence position matters; the
    # text before it is looked at once, not per word (this runs on every streamed check).
    before = (text[:words[-1][0]].rstrip() or sent.rstrip())[-1:]
    opens_sentence = not before or before in ".!?:\n"
    cut = len(text)
    for i in range(len(words) - 1, -1, -1):
        start, word = words[i]
        last = i == len(words) - 1
        growing = _could_grow(word, open_last and last, starts_sentence=last and opens_sentence)
        # A connector is held while the word before it could be part of a name or address.
        joins = word.lower() in _CONNECTORS and i > 0 and _could_grow(words[i - 1][1], False)
        if not (growing or joins):
            break
        cut = start
    if len(text) - cut > max_hold:  # a long run: keep only an identifier's length back
        limit = len(text) - max_hold
        space = text.rfind(" ", 0, limit + 1)
        cut = max(cut, space if space > 0 else 0)
    return cut
