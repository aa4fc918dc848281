"""The shipped artefacts (models/artifacts) against their manifest: every file is there with
the recorded hash, each loader checks it and names a corrupt or missing file, and the code
and data that made them are the ones in the repository (a change means `make retrain`)."""

from __future__ import annotations

import json
import shutil

import pytest

from models.artifacts import ARTIFACTS_DIR, ArtifactError, artifact_file, hash_files, load_manifest
from models.prepare import sha256_file

ARTIFACTS = ("embedder", "injection", "cache-verifier")


def test_every_shipped_file_matches_the_manifest_and_they_stay_small():
    manifest = load_manifest()
    assert set(manifest["artifacts"]) == set(ARTIFACTS)
    total = 0
    for name, record in manifest["artifacts"].items():
        for file, expected in record["files"].items():
            path = artifact_file(name, file)
            assert sha256_file(path) == expected["sha256"]
            total += path.stat().st_size
    assert total < 80 * 2**20  # tens of MB, not hundreds


def test_the_loaders_read_what_the_manifest_records():
    from deployments.cache.verifier import PairVerifier
    from deployments.guardrail.injection import InjectionModel
    from embassy.embeddings import shared_embedder

    figures = {n: r["figures"] for n, r in load_manifest()["artifacts"].items()}
    assert InjectionModel.load().threshold == figures["injection"]["threshold"]
    assert PairVerifier().threshold == figures["cache-verifier"]["threshold"]
    assert shared_embedder().embed(["What is an HS code?"]).shape == (1, 384)


def test_the_made_from_hashes_are_those_of_the_repository_code_and_data():
    """A change to training code, the data, the hand features or the calibration inputs
    without rebuilding the artefact fails here and names what to run."""
    from deployments.guardrail.injection import feature_signature

    for name, record in load_manifest()["artifacts"].items():
        made = record["made_from"]
        for path, digest in {**made.get("code", {}), **made.get("calibration", {}).get("code", {})}.items():
            assert hash_files([ARTIFACTS_DIR.parent.parent / path])[path] == digest, \
                f"{path} changed since the {name} artefact was made: run `embassy train {name}`" \
                f"{' --calibrate-only' if path in made.get('calibration', {}).get('code', {}) else ''}"
    injection = load_manifest()["artifacts"]["injection"]["made_from"]
    assert injection["feature_signature"] == feature_signature(), "hand features changed: `embassy train injection`"
    from models.artifacts import INJECTION_TRAIN, QQP_PAIRS
    assert set(injection["data"].values()) == {sha256_file(p) for p in INJECTION_TRAIN}
    assert list(load_manifest()["artifacts"]["cache-verifier"]["made_from"]["data"].values()) == [sha256_file(QQP_PAIRS)]


@pytest.fixture
def copy_of_artifacts(tmp_path):
    shutil.copytree(ARTIFACTS_DIR, tmp_path / "artifacts", ignore=shutil.ignore_patterns("*.py"))
    return tmp_path / "artifacts"


def test_a_corrupt_file_is_an_error_naming_it(copy_of_artifacts):
    from deployments.cache.verifier import ONNX_FILE, PairVerifier

    path = copy_of_artifacts / ONNX_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one bit pattern changed
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=rf"{path}: SHA-256 .* does not match the manifest"):
        PairVerifier(copy_of_artifacts)


def test_a_truncated_file_is_an_error_naming_it(copy_of_artifacts):
    from deployments.guardrail.injection import HEAD_FILE, InjectionModel

    path = copy_of_artifacts / HEAD_FILE
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ArtifactError, match=rf"{path}: 1000 bytes, the manifest says"):
        InjectionModel.load(copy_of_artifacts)


def test_a_missing_or_broken_manifest_is_an_error_naming_it(copy_of_artifacts):
    manifest = copy_of_artifacts / "manifest.json"
    manifest.write_text("{not json")
    with pytest.raises(ArtifactError, match="manifest.json: the artefact manifest is not valid JSON"):
        artifact_file("embedder", "x", copy_of_artifacts)
    manifest.unlink()
    with pytest.raises(ArtifactError, match="manifest.json: the artefact manifest is missing"):
        artifact_file("embedder", "x", copy_of_artifacts)


def test_a_verifier_calibrated_with_another_embedder_is_refused(copy_of_artifacts):
    from deployments.cache.verifier import META_FILE, ONNX_FILE, PairVerifier
    from models.artifacts import record

    meta = json.loads((copy_of_artifacts / META_FILE).read_text())
    meta["embedder_sha256"] = "f" * 64
    (copy_of_artifacts / META_FILE).write_text(json.dumps(meta))
    record("cache-verifier", [ONNX_FILE, META_FILE], {}, {}, copy_of_artifacts)
    with pytest.raises(ArtifactError, match="another embedder"):
        PairVerifier(copy_of_artifacts)
