"""Topic hardening: is a prompt within the deployment's business domain?

Each allowed and denied topic is a set of example prompts. A prompt's score for a topic is
the mean cosine similarity of its embedding to the topic's `k` nearest examples. A prompt
is on topic when its best allowed score reaches `threshold` and beats every denied topic.
Nearest examples rather than one centroid per topic, because a business domain (customs)
is several clusters of questions, and a centroid sits between them. A prompt that names a
term of the domain (`domain_terms`) is on topic unless a denied topic beats it: MiniLM
does not know what "ECCN" or "ATA carnet" mean, and scored such questions below 0.25.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TopicVerdict:
    on_topic: bool
    topic: str | None
    score: float
    denied_topic: str | None = None


class TopicModel:
    def __init__(self, allowed: dict[str, list[str]], denied: dict[str, list[str]], embed,
                 threshold: float, k: int = 3, domain_terms: list[str] | None = None) -> None:
        self.threshold = threshold
        self.k = k
        terms = sorted(domain_terms or (), key=len, reverse=True)
        self._terms = re.compile(r"(?i:\b(?:" + "|".join(re.escape(t).replace(r"\ ", r"\s+") for t in terms) + r")\b)") \
            if terms else None
        self._allowed = {name: embed(examples) for name, examples in allowed.items() if examples}
        self._denied = {name: embed(examples) for name, examples in denied.items() if examples}

    def _score(self, bank: np.ndarray, v: np.ndarray) -> float:
        sims = bank @ v
        k = min(self.k, len(sims))
        return float(np.sort(sims)[-k:].mean())

    def check(self, embedding: np.ndarray, text: str | None = None) -> TopicVerdict:
        if not self._allowed:  # no domain declared: everything is on topic
            return TopicVerdict(True, None, 1.0)
        allowed = {n: self._score(b, embedding) for n, b in self._allowed.items()}
        topic, score = max(allowed.items(), key=lambda kv: kv[1])
        denied = {n: self._score(b, embedding) for n, b in self._denied.items()}
        worst = max(denied.items(), key=lambda kv: kv[1]) if denied else (None, -1.0)
        if worst[1] > score:
            return TopicVerdict(False, topic, score, worst[0])
        if text is not None and self._terms is not None and (term := self._terms.search(text)):
            return TopicVerdict(True, f"term:{term.group(0).lower()}", score)
        return TopicVerdict(score >= self.threshold, topic, score)
