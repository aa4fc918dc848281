"""Model registry manifests and model-store preparation (real conversion, real checksums)."""

from __future__ import annotations

import json
import shutil

import pytest

from embassy.errors import ConfigError
from models.prepare import STORE_RECORD, PreparationError, prepare_model, verify_store
from models.registry import load_manifest, load_registry
from tests.conftest import DEFAULT_MODEL


def test_registry_has_the_default_model():
    manifest = load_registry()[DEFAULT_MODEL]
    assert manifest.context_length == 8192 and manifest.format == "gguf"
    assert manifest.store_name == f"{DEFAULT_MODEL}-v{manifest.version}"


def test_bad_manifest_names_file_and_field(tmp_path):
    path = tmp_path / "bad.yaml"
    good = load_registry()[DEFAULT_MODEL].model_dump(mode="json")
    path.write_text(json.dumps({**good, "sha256": "not-a-hash"}))
    with pytest.raises(ConfigError) as err:
        load_manifest(path)
    assert f"{path}: sha256:" in str(err.value)


def test_duplicate_ids_are_rejected(tmp_path):
    good = load_registry()[DEFAULT_MODEL].model_dump(mode="json")
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text(json.dumps(good))
    with pytest.raises(ConfigError, match="duplicate model id"):
        load_registry(tmp_path)


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
