"""Model registry manifests and model-store preparation (real conversion, real checksums)."""

from __future__ import annotations

import json
import shutil

import pytest

from embassy.errors import ConfigError
from models.prepare import STORE_RECORD, PreparationError, prepare_model, verify_store
from models.registry import MANIFEST_DIR, UnknownModel, load_manifest, load_registry
from tests.conftest import DEFAULT_MODEL, TEST_MANIFESTS


def test_registry_has_the_default_model():
    manifest = load_registry()[DEFAULT_MODEL]
    assert manifest.context_length == 8192 and manifest.format == "gguf"
    assert manifest.store_name == f"{DEFAULT_MODEL}-{manifest.sha256[:12]}"
    assert manifest.default and manifest.ref == f"{DEFAULT_MODEL}@{manifest.version}"


def _write(root, manifest: dict, name: str | None = None):
    folder = root / manifest["id"]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name or manifest['version']}.yaml"
    path.write_text(json.dumps(manifest))
    return path


def test_bad_manifest_names_file_and_field(tmp_path):
    good = load_registry()[DEFAULT_MODEL].model_dump(mode="json")
    path = _write(tmp_path, {**good, "sha256": "not-a-hash"})
    with pytest.raises(ConfigError) as err:
        load_manifest(path)
    assert f"{path}: sha256:" in str(err.value)


def test_a_manifest_must_live_at_id_slash_version(tmp_path):
    good = load_registry()[DEFAULT_MODEL].model_dump(mode="json")
    path = _write(tmp_path, good, name="7")
    with pytest.raises(ConfigError, match="<id>/<version>.yaml"):
        load_manifest(path)


def test_a_version_defined_twice_is_rejected(tmp_path):
    good = load_registry()[DEFAULT_MODEL].model_dump(mode="json")
    for root in (tmp_path / "a", tmp_path / "b"):
        _write(root, good)
    with pytest.raises(ConfigError, match="duplicate model version"):
        load_registry(tmp_path / "a", tmp_path / "b")


def test_each_id_needs_exactly_one_default_version(tmp_path):
    good = load_registry()[DEFAULT_MODEL].model_dump(mode="json")
    _write(tmp_path, good)
    _write(tmp_path, {**good, "version": "2"})
    with pytest.raises(ConfigError, match="exactly one version must be `default: true`"):
        load_registry(tmp_path)


def test_versions_are_addressed_as_id_at_version_and_unknown_ones_named():
    registry = load_registry(MANIFEST_DIR, TEST_MANIFESTS)
    assert registry.resolve(DEFAULT_MODEL).version == registry[DEFAULT_MODEL].version
    assert registry.resolve(f"{DEFAULT_MODEL}@1b").engine_args["max_num_seqs"] == 16
    assert {"1", "1b", "broken"} <= set(registry.versions(DEFAULT_MODEL))
    with pytest.raises(UnknownModel, match="has no version '9'; its versions are 1, 1b, broken"):
        registry.resolve(f"{DEFAULT_MODEL}@9")
    with pytest.raises(UnknownModel, match="unknown model id 'gpt-9'"):
        registry.resolve("gpt-9@1")
    # versions with the same weights share one prepared folder
    assert registry.resolve(f"{DEFAULT_MODEL}@1b").store_name == registry[DEFAULT_MODEL].store_name


def test_prepared_store_is_verified_and_not_rebuilt(prepared_model, tmp_path):
    manifest, folder = prepared_model
    record = json.loads((folder / STORE_RECORD).read_text())
    assert record["source_sha256"] == manifest.sha256
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(record["files"])
    store = tmp_path / "store"
    shutil.copytree(folder, store / manifest.store_name)
    steps = []
    result = prepare_model(manifest, store, lambda step, frac: steps.append(step))
    assert result.rebuilt is False and steps[-1] == "already prepared"


def test_corrupt_store_is_detected_and_rebuilt(prepared_model, tmp_path):
    manifest, folder = prepared_model
    store = tmp_path / "store"
    copy = store / manifest.store_name
    shutil.copytree(folder, copy)
    with (copy / "config.json").open("a") as f:
        f.write(" ")
    assert not verify_store(copy, manifest)
    result = prepare_model(manifest, store)
    assert result.rebuilt is True and verify_store(copy, manifest)
    assert not [p for p in store.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_source_with_wrong_checksum_is_refused(prepared_model, tmp_path):
    manifest, _ = prepared_model
    wrong = manifest.model_copy(update={"sha256": "0" * 64})
    with pytest.raises(PreparationError, match="does not match"):
        prepare_model(wrong, tmp_path / "store")
