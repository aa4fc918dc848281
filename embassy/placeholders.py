"""Typed placeholders (`<PERSON_1>`) that stand for a caller's values in redacted text.

Shared by the guardrail, which makes them, and the ingress, which maps a cached answer's
placeholders back to the values of the caller at hand.
"""

from __future__ import annotations

import re

PLACEHOLDER = re.compile(r"<[A-Z_]+_\d+>")


def restore(text: str, mapping: dict[str, str]) -> str:
    """Replace each placeholder by its value in `mapping`; unknown ones stay as they are."""
    if not mapping:
        return text
    return PLACEHOLDER.sub(lambda m: mapping.get(m.group(0), m.group(0)), text)
