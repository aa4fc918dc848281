"""Retraining is reproducible: the same data sample gives the same model twice, byte for
byte (slow, opt-in: `make test-slow`, or `pytest -m slow`)."""

from __future__ import annotations

import json
import random

import pytest

from deployments.guardrail.evaluation import read_jsonl
from embassy.embeddings import shared_embedder
from models.artifacts import INJECTION_TRAIN, QQP_PAIRS, entry

pytestmark = pytest.mark.slow


def test_the_injection_classifier_retrains_to_the_same_model(tmp_path):
    from deployments.guardrail.injection_training import train

    rows = [{**r, "source": p.name} for p in INJECTION_TRAIN for r in read_jsonl(p)]
    sample = random.Random(0).sample(rows, 80)
    made = []
    for run in ("a", "b"):
        model = train(sample, shared_embedder().encode, {"sample": "x"}, epochs=1, folds=2, out=tmp_path / run,
                      calibrate_on="deepset_train.jsonl")
        made.append((entry("injection", tmp_path / run)["files"], model.threshold))
    assert made[0] == made[1]


def test_the_cache_verifier_retrains_to_the_same_model(tmp_path):
    from deployments.cache.training import train_verifier

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in read_jsonl(QQP_PAIRS)[:1500]))
    made = []
    for run in ("a", "b"):
        meta = train_verifier(pairs, tmp_path / run, shared_embedder().embed, min_cosine=0.7, max_train=256,
                              epochs=1)
        made.append((entry("cache-verifier", tmp_path / run)["files"]["cache-verifier/verifier.int8.onnx"],
                     meta["threshold"], meta["held_out"]))
    assert made[0] == made[1]
