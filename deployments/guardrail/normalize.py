"""Text normalization before detection, so that obfuscated identifiers are still caught.

NFKC folds full-width digits and letters ("４１１１" -> "4111") and compatibility forms;
characters that render as nothing but split a number for a regex are removed: zero-width
and bidirectional controls, tag characters, joiners, variation selectors and fillers.
"""

from __future__ import annotations

import re
import unicodedata

# Soft hyphen, Arabic letter mark, combining grapheme joiner (U+034F), Hangul and Mongolian
# fillers and selectors, zero-width (U+200B-U+200D, U+2060, U+FEFF), word joiner and invisible
# operators (U+2060-U+2064), bidi controls (U+200E/F, U+202A-U+202E, U+2066-U+2069), variation
# selectors (U+FE00-U+FE0F, U+E0100-U+E01EF) and tag characters (U+E0000-U+E007F).
_INVISIBLE = re.compile("[\u00ad\u034f\u061c\u115f\u1160\u180b-\u180f\u200b-\u200f\u202a-\u202e"
                        "\u2060-\u2064\u2066-\u2069\u3164\ufe00-\ufe0f\ufeff\uffa0"
                        "\U000e0000-\U000e007f\U000e0100-\U000e01ef]")


def normalize(text: str) -> str:
    return _INVISIBLE.sub("", unicodedata.normalize("NFKC", text))


def normalize_with_offsets(text: str) -> tuple[str, list[int]]:
    """`normalize`, with the offset in `text` of each character of the result (so that a
    span found in the normalized text can be reported on the text as written)."""
    out, offsets = [], []
    for i, ch in enumerate(text):
        if _INVISIBLE.fullmatch(ch):
            continue
        folded = unicodedata.normalize("NFKC", ch)
        out.append(folded)
        offsets += [i] * len(folded)
    return "".join(out), offsets
