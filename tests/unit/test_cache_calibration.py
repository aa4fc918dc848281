"""Re-calibrating the shipped cache verifier (`embassy train cache-verifier --calibrate-only`),
with the real int8 verifier and embedder: the threshold is picked again, the weights are
untouched, and the manifest vouches for the new threshold file."""

from __future__ import annotations

import json
import shutil

import pytest

from deployments.cache.training import calibrate_verifier
from deployments.cache.verifier import META_FILE, ONNX_FILE, PairVerifier, held_out_pairs, pair_split
from embassy.embeddings import shared_embedder
from models.artifacts import ARTIFACTS_DIR, ArtifactError, entry


def test_calibrate_only_picks_a_new_threshold_and_keeps_the_weights(tmp_path):
    (tmp_path / "cache-verifier").mkdir()
    (tmp_path / ONNX_FILE).symlink_to(ARTIFACTS_DIR / ONNX_FILE)  # by link: calibration must not write it
    shutil.copy(ARTIFACTS_DIR / META_FILE, tmp_path / META_FILE)
    shutil.copy(ARTIFACTS_DIR / "manifest.json", tmp_path)
    rows = held_out_pairs()[:1500]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    calibration_rows = [r for i, r in enumerate(rows) if pair_split(i) == "calibrate"]
    before = json.loads((tmp_path / META_FILE).read_text())
    meta = calibrate_verifier(pairs, tmp_path, shared_embedder().embed, min_cosine=0.8, target_precision=0.9)
    assert meta["target_precision"] == 0.9 and meta["calibration"].get("pairs", 0) <= len(calibration_rows)
    assert json.loads((tmp_path / META_FILE).read_text())["threshold"] == meta["threshold"]
    assert meta["training"] == before["training"] and (tmp_path / ONNX_FILE).is_symlink()
    recorded = entry("cache-verifier", tmp_path)
    assert recorded["figures"]["threshold"] == meta["threshold"]
    assert recorded["made_from"]["calibration"]["min_cosine"] == 0.8
    assert PairVerifier(tmp_path).threshold == meta["threshold"]  # the manifest vouches for the new file


def test_the_verifier_scores_a_pair_the_same_either_way_round_and_alone_or_batched():
    verifier = PairVerifier()
    a = ["How do I get an EORI number?", "What is the duty on coffee?"]
    b = ["How can I obtain an EORI number?", "Which documents do I need to export wine?"]
    forward, backward = verifier.probabilities(a, b), verifier.probabilities(b, a)
    assert forward == pytest.approx(backward, abs=1e-6)
    assert forward[0] > 0.5 > forward[1]  # a paraphrase scores high, another question low
    assert verifier.probabilities(a[:1], b[:1])[0] == forward[0]  # no batch neighbour moves a score


def test_a_folder_without_the_verifier_is_a_clear_error(tmp_path):
    shutil.copy(ARTIFACTS_DIR / "manifest.json", tmp_path)
    with pytest.raises(ArtifactError, match=r"cache-verifier/verifier\.json: missing"):
        PairVerifier(tmp_path)
