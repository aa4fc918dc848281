"""A fixed set of adversarial inputs for the guard and the ingress: strings that make
backtracking patterns quadratic, JSON nested past the parser's stack, huge messages and
Unicode that hides identifiers. benchmarks/adversarial.py replays them against a stack;
tests/unit/guardrail/test_redos.py checks that every guard pattern scales linearly on them.
"""

from __future__ import annotations

import itertools
import re
from types import ModuleType

# Characters that the guard's patterns treat differently (word, digit, separators, '@', '.').
ALPHABET = "aA1-. @:!'+_\nx"


def repeated_units(length: int, alphabet: str = ALPHABET) -> dict[str, str]:
    """Every two-character unit of `alphabet`, repeated to `length` characters."""
    units = ["".join(p) for p in itertools.product(alphabet, repeat=2)] + ["Aa ", "1 A", "a1-", "A. "]
    return {u: u * (length // len(u)) for u in units}


def patterns_of(*modules: ModuleType) -> dict[str, re.Pattern]:
    """Every compiled pattern that `modules` hold at top level, alone or in tuples."""
    found: dict[str, re.Pattern] = {}
    for mod in modules:
        short = mod.__name__.rsplit(".", 1)[-1]
        for name, value in vars(mod).items():
            if isinstance(value, re.Pattern):
                found[f"{short}.{name}"] = value
            elif isinstance(value, tuple):
                for i, item in enumerate(value):
                    pattern = getattr(item, "regex", None) or next(
                        (x for x in item if isinstance(x, re.Pattern)), None) if isinstance(item, tuple) \
                        else getattr(item, "regex", None)
                    if isinstance(pattern, re.Pattern):
                        found[f"{short}.{name}[{i}]"] = pattern
    return found


def guard_modules() -> tuple[ModuleType, ...]:
    from deployments.guardrail import groundedness, injection, normalize, pii
    from deployments.retriever import screening
    from embassy import placeholders

    return pii, injection, groundedness, normalize, screening, placeholders


# Identifiers hidden by characters that render as nothing: a tag space, a combining grapheme
# joiner, a variation selector, a word joiner, a zero-width non-joiner.
HIDDEN_CARD = ["4111\U000e00201111 1111 1111", "4111\u034f 1111 1111 1111", "4111\ufe0f 1111 1111 1111",
               "4111\u2060 1111 1111 1111", "4111 11\u200c11 1111 1111"]


def nested_json(depth: int) -> bytes:
    return b'{"model": "m", "messages": ' + b"[" * depth + b"]" * depth + b"}"
