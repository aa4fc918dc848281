"""The trained artefacts Embassy ships (models/artifacts/) and the manifest that vouches for them.

Nothing is trained at install: the sentence embedder (int8 ONNX), the guard's injection
classifier and the cache's pair verifier are committed, small (int8 ONNX), and described
in `models/artifacts/manifest.json`: every file's SHA-256 and size, the data and code they
were made from (by SHA-256), and the figures measured when they were made. `embassy train`
(`make retrain`) rebuilds them and rewrites their entries.

A loader asks `artifact_file` for a path: the file must exist and match the manifest, or
the load stops with an `ArtifactError` that names the file and how to get a good one back.
There is no fallback to an untrained or stale model.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from models.prepare import sha256_file

ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"
MANIFEST_NAME = "manifest.json"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
_verified: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> sha256, once per process


class ArtifactError(RuntimeError):
    """A shipped artefact is missing, corrupt, or does not match the code that reads it."""


def _fix(path: Path) -> str:
    try:
        rel = path.resolve().relative_to(PROJECT_ROOT)
        return f"restore it with `git checkout -- {rel}` or rebuild it with `make retrain`"
    except ValueError:
        return "rebuild it with `embassy train`"


def load_manifest(root: Path = ARTIFACTS_DIR) -> dict[str, Any]:
    path = root / MANIFEST_NAME
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path}: the artefact manifest is missing; {_fix(path)}") from None
    except ValueError as exc:
        raise ArtifactError(f"{path}: the artefact manifest is not valid JSON ({exc}); {_fix(path)}") from None


def entry(name: str, root: Path = ARTIFACTS_DIR) -> dict[str, Any]:
    """The manifest's record of one artefact (files, made_from, figures)."""
    manifest = load_manifest(root)
    if name not in manifest.get("artifacts", {}):
        raise ArtifactError(f"{root / MANIFEST_NAME}: no artefact {name!r}; rebuild it with `embassy train {name}`")
    return manifest["artifacts"][name]


def artifact_file(name: str, file: str, root: Path = ARTIFACTS_DIR) -> Path:
    """The path of `file` of artefact `name`, checked against the manifest (size, SHA-256)."""
    path = root / file
    expected = entry(name, root)["files"].get(file)
    if expected is None:
        raise ArtifactError(f"{path}: not listed for {name!r} in {root / MANIFEST_NAME}; {_fix(path)}")
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing ({name}); {_fix(path)}") from None
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _verified:
        if stat.st_size != expected["bytes"]:
            raise ArtifactError(f"{path}: {stat.st_size} bytes, the manifest says {expected['bytes']} "
                                f"(corrupt or truncated); {_fix(path)}")
        digest = sha256_file(path)
        if digest != expected["sha256"]:
            raise ArtifactError(f"{path}: SHA-256 {digest[:12]}... does not match the manifest's "
                                f"{expected['sha256'][:12]}... (corrupt or changed); {_fix(path)}")
        _verified[key] = digest
    return path


def read_meta(name: str, file: str, root: Path = ARTIFACTS_DIR) -> dict[str, Any]:
    """A checked JSON file of an artefact (its threshold and other parameters)."""
    return json.loads(artifact_file(name, file, root).read_text())


def hash_files(paths: list[Path]) -> dict[str, str]:
    """SHA-256 per file, keyed by its path relative to the project when it lies inside it."""
    out = {}
    for p in paths:
        p = Path(p).resolve()
        try:
            key = str(p.relative_to(PROJECT_ROOT))
        except ValueError:
            key = p.name
        out[key] = sha256_file(p)
    return out


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def record(name: str, files: list[str], made_from: dict[str, Any], figures: dict[str, Any],
           root: Path = ARTIFACTS_DIR) -> dict[str, Any]:
    """Write (or replace) artefact `name`'s entry: its files' hashes as they are on disk now."""
    path = root / MANIFEST_NAME
    manifest = json.loads(path.read_text()) if path.exists() else {"artifacts": {}}
    manifest["artifacts"][name] = {
        "files": {f: {"sha256": sha256_file(root / f), "bytes": (root / f).stat().st_size} for f in files},
        "made_from": made_from, "figures": figures}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return manifest["artifacts"][name]


TRAINING_DIR = PROJECT_ROOT / "models" / "training"
QQP_PAIRS = TRAINING_DIR / "qqp_pairs_dev.jsonl.gz"
# The customs dev set's train split teaches the domain's look-alikes (its calibration and
# test splits stay out of training; tests/data/customs_dev/README.md).
INJECTION_TRAIN = [TRAINING_DIR / "deepset_train.jsonl", PROJECT_ROOT / "models" / "guard" / "injection_extra.jsonl",
                   PROJECT_ROOT / "tests" / "data" / "customs_dev" / "injection_train.jsonl"]
INJECTION_TEST = TRAINING_DIR / "deepset_test.jsonl"
# The cache's customs pairs: train and calibration set the customs threshold, test measures it.
CUSTOMS_PAIRS_DIR = PROJECT_ROOT / "tests" / "data" / "customs_dev"
