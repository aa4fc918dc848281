"""Indirect prompt injection: instructions to the model hidden in a retrieved document.

The guard's injection model was trained and calibrated on prompts; on ordinary document
prose it misfires (on the test corpus 28 of 254 sentences scored above its threshold:
classification rules read like commands). So a passage is screened sentence by sentence,
and a sentence is removed only when two independent signals agree: one of the guard's
attack patterns fires in it (instruction override, prompt extraction, jailbreak wording,
spoofed chat delimiters, encoded payloads) and the injection model scores it above its
threshold. The patterns are regular expressions, so benign passages cost almost nothing;
only sentences that match one are embedded and scored.
"""

from __future__ import annotations

import re
from typing import Callable

from deployments.guardrail.injection import FEATURE_NAMES, hand_features

# Role-play wording ("act as") is left out: documents say "act as exporter" in earnest.
ATTACK_FEATURES = ("override_en", "override_short_en", "override_de", "override_de_after", "new_task",
                   "prompt_extraction", "jailbreak", "spoofed_delimiter", "encoded_payload")
_ATTACK_INDEX = [FEATURE_NAMES.index(name) for name in ATTACK_FEATURES]
_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+|\n|$)")
REMOVED = "[removed: instructions addressed to the assistant]"
# Chat-template control tokens have no business in a document whatever surrounds them.
_CONTROL = re.compile(r"<\|[A-Za-z_]{2,20}\|>|\[/?INST\]|<</?SYS>>")


class PassageScreen:
    def __init__(self, model, encode: Callable, threshold: float | None = None) -> None:
        self.model = model
        self.encode = encode
        self.threshold = threshold or model.threshold

    def screen(self, text: str) -> tuple[str, int]:
        """The passage with flagged sentences replaced by a marker, and how many were
        (control tokens stripped count as one)."""
        text, controls = _CONTROL.subn("", text)
        spans = [m.span() for m in _SENTENCE.finditer(text)]
        suspects = [(a, b) for a, b in spans if hand_features(text[a:b])[_ATTACK_INDEX].any()]
        if not suspects:
            return text, min(controls, 1)
        _, trunks = self.encode([text[a:b] for a, b in suspects])
        flagged = [(a, b) for (a, b), h in zip(suspects, trunks)
                   if self.model.score(text[a:b], h) > self.threshold]
        out, pos = [], 0
        for a, b in flagged:
            out += [text[pos:a], REMOVED, "\n" if text[a:b].endswith("\n") else " "]
            pos = b
        out.append(text[pos:])
        return "".join(out), len(flagged) or min(controls, 1)


def has_content(text: str, heading: str) -> bool:
    """Anything left besides removal markers and the heading line?"""
    body = text[len(heading):] if heading and text.startswith(heading) else text
    return bool(body.replace(REMOVED, "").strip())
