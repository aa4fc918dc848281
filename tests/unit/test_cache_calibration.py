"""Re-calibrating the trained cache verifier for a new embedder (`--calibrate-only`), with
the real verifier and embedder: the threshold is picked again, the weights are untouched."""

from __future__ import annotations

import json

import pytest

from deployments.cache.training import calibrate_verifier
from deployments.cache.verifier import pair_split
from embassy.embeddings import shared_embedder
from embassy.settings import PROJECT_ROOT

TRAINED = PROJECT_ROOT / ".embassy" / "models" / "cache-verifier"


@pytest.mark.skipif(not (TRAINED / "verifier.json").exists(), reason="run `make install` (it trains the verifier)")
def test_calibrate_only_picks_a_new_threshold_and_keeps_the_weights(tmp_path):
    for f in TRAINED.iterdir():  # the weights by link: calibration must not write them
        (tmp_path / f.name).symlink_to(f) if f.name != "verifier.json" else (tmp_path / f.name).write_text(f.read_text())
    rows = [json.loads(line) for line in (TRAINED / "test.jsonl").open()][:3000]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    calibration_rows = [r for i, r in enumerate(rows) if pair_split(i) == "calibrate"]
    before = json.loads((tmp_path / "verifier.json").read_text())
    meta = calibrate_verifier(pairs, tmp_path, shared_embedder().embed, min_cosine=0.8, target_precision=0.9)
    assert meta["target_precision"] == 0.9 and meta["calibration"].get("pairs", 0) <= len(calibration_rows)
    assert json.loads((tmp_path / "verifier.json").read_text())["threshold"] == meta["threshold"]
    assert meta["train_rows"] == before["train_rows"] and (tmp_path / "model.safetensors").is_symlink()


@pytest.mark.skipif(not (TRAINED / "verifier.json").exists(), reason="run `make install` (it trains the verifier)")
def test_the_verifier_scores_a_pair_the_same_either_way_round():
    from deployments.cache.verifier import PairVerifier

    verifier = PairVerifier(TRAINED)
    a = ["How do I get an EORI number?", "What is the duty on coffee?"]
    b = ["How can I obtain an EORI number?", "Which documents do I need to export wine?"]
    forward, backward = verifier.probabilities(a, b), verifier.probabilities(b, a)
    assert forward == pytest.approx(backward, abs=1e-6)
    assert forward[0] > 0.5 > forward[1]  # a paraphrase scores high, another question low


def test_a_folder_without_a_trained_model_is_a_clear_error(tmp_path):
    from deployments.cache.verifier import PairVerifier

    (tmp_path / "verifier.json").write_text(json.dumps({"threshold": 0.9}))
    with pytest.raises(FileNotFoundError, match="embassy cache train-verifier"):
        PairVerifier(tmp_path)
