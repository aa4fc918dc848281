"""Text normalization before detection, so that obfuscated identifiers are still caught.

NFKC folds full-width digits and letters ("４１１１" -> "4111") and compatibility forms;
zero-width and bidirectional control characters, which render as nothing but split a
number for a regex, are removed.
"""

from __future__ import annotations

import re
import unicodedata

# Zero-width (U+200B-U+200D, U+2060, U+FEFF), soft hyphen, and bidi controls
# (U+200E/F, U+202A-U+202E, U+2066-U+2069).
_INVISIBLE = re.compile("[\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")


def normalize(text: str) -> str:
    return _INVISIBLE.sub("", unicodedata.normalize("NFKC", text))
