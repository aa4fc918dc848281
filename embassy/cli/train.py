"""`embassy train`: rebuild the shipped artefacts (models/artifacts)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from embassy.cli.common import ConfigOpt, _progress_bar, _settings, console, err

train_app = typer.Typer(help="Rebuild the shipped artefacts (models/artifacts) from models/training.",
                        no_args_is_help=True)


def _compare_figures(name: str, before: dict | None, after: dict) -> None:
    """Print the new figures beside the manifest's old ones (a retrain should reproduce them)."""
    from models.artifacts import entry

    new = entry(name)
    same = before is not None and before["files"] == new["files"]
    console.print(f"[bold]{name}[/bold]: files {'identical to' if same else 'differ from'} the previous manifest")
    old_figures = (before or {}).get("figures", {})
    for key, value in after.items():
        console.print(f"  {key}: {json.dumps(value)}  (before: {json.dumps(old_figures.get(key))})")


def _previous_entry(name: str, root: Path):
    from models.artifacts import ArtifactError, entry

    try:
        return entry(name, root)
    except ArtifactError:
        return None


OutOpt = typer.Option(None, "--out", help="Artefacts folder to write (default: models/artifacts).")


@train_app.callback()
def _train_quietly() -> None:
    """Offline, and without the libraries' per-file progress bars and advice (transformers'
    weight loading, ONNX Runtime's quantizer): the commands print their own progress."""
    import logging
    import os

    for key, value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error",
                       "HF_HUB_DISABLE_PROGRESS_BARS": "1"}.items():
        os.environ.setdefault(key, value)
    logging.getLogger().setLevel(logging.ERROR)


@train_app.command("embedder")
def train_embedder(out: Path = OutOpt) -> None:
    """Export all-MiniLM-L6-v2 from its PyPI package to int8 ONNX (no training: a quantization)."""
    import tempfile

    import numpy as np

    from deployments.guardrail.evaluation import read_jsonl
    from embassy.embeddings import ARTIFACT, ONNX_NAME, Embedder, export_onnx, model_path
    from models.artifacts import ARTIFACTS_DIR, QQP_PAIRS, hash_files, record

    root = out or ARTIFACTS_DIR
    before = _previous_entry(ARTIFACT, root)
    with tempfile.TemporaryDirectory() as tmp, err.status("exporting and quantizing the embedder"):
        float_file = Path(tmp) / "float.onnx"
        export_onnx(root / ONNX_NAME, float_file)
        texts = [r["text_a"] for r in read_jsonl(QQP_PAIRS)[:500]]
        cos = (Embedder(root / ONNX_NAME).embed(texts) * Embedder(float_file).embed(texts)).sum(1)
    figures = {"cosine_to_float32": {"median": round(float(np.median(cos)), 4), "min": round(float(cos.min()), 4),
                                     "texts": len(texts)}}
    record(ARTIFACT, [ONNX_NAME], {"base_model": hash_files([model_path() / "model.safetensors"]),
                                  "code": hash_files([Path(__file__).parents[1] / "embeddings.py"])}, figures, root)
    _compare_figures(ARTIFACT, before, figures) if root == ARTIFACTS_DIR else None


@train_app.command("injection")
def train_injection(
        data: list[Path] = typer.Option(None, "--data", exists=True, dir_okay=False,
                                        help="JSON Lines of {text, label: injection|benign}; repeat for several "
                                             "(default: models/training/deepset_train.jsonl, "
                                             "models/guard/injection_extra.jsonl and "
                                             "tests/data/customs_dev/injection_train.jsonl)."),
        target_fpr: float = typer.Option(0.05, "--target-fpr"),
        epochs: int = typer.Option(3, "--epochs"),
        calibrate_on: str = typer.Option("deepset_train.jsonl", "--calibrate-on",
                                         help="File name whose benign rows set the threshold ('' for all)."),
        out: Path = OutOpt) -> None:
    """Fine-tune the prompt-injection classifier; write it, its threshold and its manifest entry."""
    from deployments.guardrail.evaluation import eval_binary, read_jsonl
    from deployments.guardrail.injection import ARTIFACT
    from deployments.guardrail.injection_training import train
    from deployments.guardrail.normalize import normalize
    from embassy.embeddings import shared_embedder
    from models.artifacts import ARTIFACTS_DIR, INJECTION_TEST, INJECTION_TRAIN, hash_files, record
    from models.prepare import sha256_file

    root = out or ARTIFACTS_DIR
    data = data or INJECTION_TRAIN
    before = _previous_entry(ARTIFACT, root)
    rows = [{**row, "source": path.name} for path in data for row in read_jsonl(path)]
    sources = {path.name: sha256_file(path) for path in data}
    embedder = shared_embedder()
    with err.status(f"training the injection classifier on {len(rows)} rows (about 4 minutes on 2 cores)"):
        model = train(rows, embedder.encode, sources, target_fpr, epochs, out=root, calibrate_on=calibrate_on or None)

    def flagged(text: str) -> bool:  # as the guard scores it: on the normalized text
        text = normalize(text)
        _, trunks = embedder.encode([text])
        return model.score(text, trunks[0]) > model.threshold
    test = eval_binary(read_jsonl(INJECTION_TEST), flagged, positive="injection")
    figures = {**entry_figures(ARTIFACT, root), "deepset_test": {k: test[k] for k in ("n", "tpr", "fpr")}}
    made = _previous_entry(ARTIFACT, root)["made_from"]
    made["evaluated_on"] = hash_files([INJECTION_TEST])
    record(ARTIFACT, list(_previous_entry(ARTIFACT, root)["files"]), made, figures, root)
    _compare_figures(ARTIFACT, before, figures) if root == ARTIFACTS_DIR else None


def entry_figures(name: str, root: Path) -> dict:
    from models.artifacts import entry

    return dict(entry(name, root)["figures"])


@train_app.command("cache-verifier")
def train_cache_verifier(
        pairs: Path = typer.Option(None, "--pairs", exists=True, dir_okay=False,
                                   help="JSON Lines of {text_a, text_b, label} (default: "
                                        "models/training/qqp_pairs_dev.jsonl.gz)."),
        max_train: int = typer.Option(None, "--max-train", help="Train on at most this many pairs."),
        epochs: int = typer.Option(3, "--epochs"),
        target_precision: float = typer.Option(0.95, "--target-precision"),
        calibrate_only: bool = typer.Option(False, "--calibrate-only",
                                            help="Keep the trained verifier; pick its threshold again "
                                                 "(after the embedder, the rules or the cosine gate changed)."),
        out: Path = OutOpt, config: Path = ConfigOpt) -> None:
    """Fine-tune the cache's pair verifier (about 30 minutes on 2 cores), export it as int8 ONNX,
    calibrate its threshold and measure it on the held-out part."""
    from deployments.cache.training import calibrate_verifier, train_verifier
    from deployments.cache.verifier import ARTIFACT
    from embassy.embeddings import shared_embedder
    from models.artifacts import ARTIFACTS_DIR, QQP_PAIRS

    settings = _settings(config)
    root = out or ARTIFACTS_DIR
    pairs = pairs or QQP_PAIRS
    before = _previous_entry(ARTIFACT, root)
    embed = shared_embedder().embed
    if calibrate_only:
        with err.status("calibrating the cache verifier"):
            meta = calibrate_verifier(pairs, root, embed, min_cosine=settings.cache.min_cosine,
                                      target_precision=target_precision)
    else:
        with _progress_bar() as bar:
            task = bar.add_task("training the cache verifier", total=None)
            meta = train_verifier(pairs, root, embed, min_cosine=settings.cache.min_cosine,
                                  target_precision=target_precision, max_train=max_train, epochs=epochs,
                                  progress=lambda phase, done, total: bar.update(task, completed=done, total=total))
    figures = {k: meta[k] for k in ("threshold", "calibration", "held_out")}
    _compare_figures(ARTIFACT, before, figures) if root == ARTIFACTS_DIR else None


@train_app.command("all")
def train_all(config: Path = ConfigOpt) -> None:
    """Every artefact, in dependency order: embedder, injection classifier, cache verifier."""
    train_embedder(out=None)
    train_injection(data=None, target_fpr=0.05, epochs=3, calibrate_on="deepset_train.jsonl", out=None)
    train_cache_verifier(pairs=None, max_train=None, epochs=3, target_precision=0.95, calibrate_only=False,
                         out=None, config=config)
