"""Training and calibration of the cache's pair verifier (`embassy train cache-verifier`).

Fine-tunes all-MiniLM-L6-v2's weights as a cross-encoder (one logit: same question or not)
on the `train` part of a pairs file, exports it as int8 ONNX into the artefacts folder,
then picks the threshold on the `calibrate` part with that int8 graph: the lowest
probability at which the pairs that would reach the verifier in the cache (cosine at least
`min_cosine`, no rule veto) keep at least `target_precision`. The `test` part is used by
neither step; its figures are measured once and kept in the manifest (`embassy eval cache
--pairs models/training/qqp_pairs_dev.jsonl.gz --part test` measures them again through Redis).
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Callable

import numpy as np

from deployments.cache.verifier import ARTIFACT, MAX_PAIR_TOKENS, META_FILE, ONNX_FILE, PairVerifier, pair_split
from deployments.guardrail.evaluation import read_jsonl
from models.artifacts import ARTIFACTS_DIR, CUSTOMS_PAIRS_DIR, entry, hash_files, record

Progress = Callable[[str, int, int], None]  # (phase, done, total)


def train_verifier(pairs_file: Path, out: Path, embed, *, min_cosine: float, target_precision: float = 0.95,
                   max_train: int | None = None, epochs: int = 3, seed: int = 0, work_dir: Path | None = None,
                   progress: Progress = lambda *a: None) -> dict:
    """Train, export (int8 ONNX), calibrate; write the files and the manifest entry under
    `out` (an artefacts folder). The float32 weights go to `work_dir` (a temporary folder
    by default) and are not kept."""
    import tempfile

    parts = {"train": [], "calibrate": [], "test": []}
    for i, r in enumerate(read_jsonl(pairs_file)):
        parts[pair_split(i)].append(r)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        work = work_dir or Path(tmp)
        rows = train_model(parts["train"], work, seed=seed, epochs=epochs, max_train=max_train, progress=progress)
        export_verifier(work, out / ONNX_FILE)
    training = {"pairs_file_sha256": hash_files([pairs_file]), "train_rows": rows, "epochs": epochs, "seed": seed,
                "max_train": max_train, "train_seconds": round(time.monotonic() - started, 1)}
    return calibrate_verifier(pairs_file, out, embed, min_cosine=min_cosine, target_precision=target_precision,
                              training=training)


def export_verifier(model_dir: Path, target: Path) -> Path:
    """The fine-tuned float32 model in `model_dir` as int8 ONNX at `target` (matrix products
    per output channel, as the embedder)."""
    import tempfile

    import onnx
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModelForSequenceClassification

    from embassy.embeddings import quiet_export

    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), local_files_only=True).eval()

    class Logit(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).logits

    names = ["input_ids", "attention_mask", "token_type_ids"]
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        plain = Path(tmp) / "verifier.onnx"
        example = tuple(torch.ones((1, 6), dtype=torch.long) for _ in names)
        with torch.no_grad(), quiet_export():
            torch.onnx.export(Logit(), example, str(plain), input_names=names, output_names=["logit"],
                              opset_version=17, dynamo=False,
                              dynamic_axes={k: {0: "batch", 1: "tokens"} for k in names})
        quantize_dynamic(str(plain), str(Path(tmp) / target.name), weight_type=QuantType.QInt8, per_channel=True,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        (Path(tmp) / target.name).replace(target)
    return target


def train_model(labelled: list[dict], out: Path, *, seed: int, epochs: int = 3, max_train: int | None = None,
                batch_size: int = 32, lr: float = 4e-5, progress: Progress = lambda *a: None) -> int:
    """Fine-tune one cross-encoder (one logit: same question or not) on `labelled` and the
    pairs they imply; save model and tokenizer to `out`. Returns the number of pairs."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from embassy.embeddings import model_path

    random.seed(seed)
    torch.manual_seed(seed)
    train = list(labelled)
    random.shuffle(train)
    train = train[:max_train] if max_train else train
    train = implied_pairs(train, random.Random(seed))

    tokenizer = AutoTokenizer.from_pretrained(str(model_path()), local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(str(model_path()), num_labels=1,
                                                               local_files_only=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    # Batches of similar length: padding is most of the cost on a CPU.
    train.sort(key=lambda r: len(r["text_a"]) + len(r["text_b"]))
    batches = [train[i:i + batch_size] for i in range(0, len(train), batch_size)]
    steps = len(batches) * epochs
    # Linear warm-up over the first 5 % of steps, then linear decay to zero.
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (steps - step) / (steps - warmup))))
    model.train()
    for epoch in range(epochs):
        random.shuffle(batches)
        for i, batch in enumerate(batches):
            # Either order, at random: the cache asks (new, stored), and a pair means the same
            # either way round.
            pairs = [(r["text_a"], r["text_b"]) if random.random() < 0.5 else (r["text_b"], r["text_a"])
                     for r in batch]
            enc = tokenizer([a for a, _ in pairs], [b for _, b in pairs], padding=True,
                            truncation=True, max_length=MAX_PAIR_TOKENS, return_tensors="pt")
            logits = model(**enc).logits.squeeze(-1)
            labels = torch.tensor([float(r["label"]) for r in batch])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            progress("train", epoch * len(batches) + i + 1, steps)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return len(train)


def implied_pairs(rows: list[dict], rng: random.Random, per_question: int = 2) -> list[dict]:
    """`rows` plus the pairs their labels imply: "same question" is transitive, so questions
    linked by label-1 pairs form groups; two questions of one group are the same question,
    and a question labelled different from one member is different from the others. The
    amount of labelled data is what limits the verifier: on the QQP training part this adds
    about 4,000 pairs to 24,343. Large groups would crowd out the rest (QQP has one of 69
    paraphrases of a single question), so each question adds at most `per_question` pairs
    of each kind."""
    parent: dict[str, str] = {}

    def root(q: str) -> str:
        parent.setdefault(q, q)
        while parent[q] != q:
            parent[q] = parent[parent[q]]
            q = parent[q]
        return q

    for r in rows:
        if r["label"] == 1:
            parent[root(r["text_a"])] = root(r["text_b"])
    groups: dict[str, list[str]] = {}
    for q in sorted(parent):
        groups.setdefault(root(q), []).append(q)
    seen = {frozenset((r["text_a"], r["text_b"])) for r in rows}
    extra = []

    def add(a: str, b: str, label: int) -> None:
        key = frozenset((a, b))
        if a != b and key not in seen:
            seen.add(key)
            extra.append({"text_a": a, "text_b": b, "label": label})

    for members in groups.values():
        for q in members:
            for other in rng.sample(members, min(per_question + 1, len(members))):
                add(q, other, 1)
    for r in rows:
        if r["label"] == 0 and root(r["text_a"]) != root(r["text_b"]):
            for q, other in ((r["text_a"], r["text_b"]), (r["text_b"], r["text_a"])):
                group = groups.get(root(q), [q])
                for member in rng.sample(group, min(per_question, len(group))):
                    add(member, other, 0)
    return rows + extra


def calibrate_verifier(pairs_file: Path, out: Path, embed, *, min_cosine: float,
                       target_precision: float = 0.95, training: dict | None = None) -> dict:
    """Pick the verifier's threshold on the `calibrate` part, over the pairs that would reach
    it in the cache, then measure it once on the `test` part; write verifier.json and the
    manifest entry under `out`. The threshold depends on the embedder (the cosine gate), the
    rules and the scoring, so a change to those needs only this, not a new verifier."""
    from embassy.embeddings import ARTIFACT as EMBEDDER, ONNX_NAME

    meta_path = out / META_FILE
    old = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    training = training or old.get("training", {})
    embedder_sha = entry(EMBEDDER, ARTIFACTS_DIR)["files"][ONNX_NAME]["sha256"]
    meta = {"threshold": 0.5, "embedder_sha256": embedder_sha, "min_cosine": min_cosine,
            "target_precision": target_precision, "training": training}
    _write_meta(out, meta, training, {})  # the verifier loads only files its manifest vouches for
    verifier = PairVerifier(out)
    # Customs pairs first: the general figures on the held-out part count the customs pairs
    # in it (QQP has a few) at the customs threshold, as the cache would serve them.
    meta["customs"] = calibrate_customs(verifier, embed, min_cosine, target_precision)
    verifier.customs_threshold = meta["customs"]["threshold"]
    rows = read_jsonl(pairs_file)
    parts = {name: [r for i, r in enumerate(rows) if pair_split(i) == name] for name in ("calibrate", "test")}
    cal_probs, cal_labels, cal_positives = _reaching_scores(parts["calibrate"], verifier, embed, min_cosine,
                                                            route="general")
    meta["threshold"], meta["calibration"] = pick_threshold(cal_probs, cal_labels, cal_positives, target_precision)
    verifier.threshold = meta["threshold"]
    meta["held_out"] = _served_figures(parts["test"], verifier, embed, min_cosine)
    _write_meta(out, meta, training, {"threshold": meta["threshold"], "calibration": meta["calibration"],
                                      "held_out": meta["held_out"], "customs": meta["customs"]})
    return meta


def calibrate_customs(verifier: PairVerifier, embed, min_cosine: float, target_precision: float,
                      root: Path = CUSTOMS_PAIRS_DIR) -> dict:
    """The customs path's threshold, from the customs dev set's train and calibration parts
    together (the path fits nothing else; its slot rules were written against the train
    part), then its figures on the test part, which nothing here chooses from. The threshold
    is the lowest at which precision stays at `target_precision` with 95 % confidence (a
    few hundred pairs: at the bare target, one more wrong hit on new data would break it)."""
    fit = read_jsonl(root / "cache_train.jsonl") + read_jsonl(root / "cache_calibration.jsonl")
    probs, labels, positives = _reaching_scores(fit, verifier, embed, min_cosine, route="customs")
    threshold, figures = pick_threshold(probs, labels, positives, target_precision, confidence=0.95)
    verifier.customs_threshold = threshold
    test = read_jsonl(root / "cache_test.jsonl")
    return {"threshold": threshold, "calibration": figures,
            "held_out": _served_figures(test, verifier, embed, min_cosine)}


def _reaching_scores(rows: list[dict], verifier: PairVerifier, embed, min_cosine: float, route: str):
    """The verifier's probabilities over the pairs of one route ("general" or "customs")
    that pass the cosine gate and the rules (as a lookup asks: new question first), their
    labels, and the route's positives in the part."""
    a = embed([r["text_a"] for r in rows])
    b = embed([r["text_b"] for r in rows])
    routed = [(r, cos) for r, cos in zip(rows, (a * b).sum(1))
              if verifier.rule(r["text_b"], r["text_a"])[0] == (route == "customs")]
    reach = [r for r, cos in routed if cos >= min_cosine and verifier.rule(r["text_b"], r["text_a"])[1] is None]
    probs = verifier.probabilities([r["text_b"] for r in reach], [r["text_a"] for r in reach])
    return probs, np.array([r["label"] for r in reach]), int(sum(r["label"] for r, _ in routed))


def _served_figures(rows: list[dict], verifier: PairVerifier, embed, min_cosine: float) -> dict:
    """Precision and recall of what the cache would serve: cosine gate, then `verify`."""
    a = embed([r["text_a"] for r in rows])
    b = embed([r["text_b"] for r in rows])
    served = [r for r, cos in zip(rows, (a * b).sum(1))
              if cos >= min_cosine and verifier.verify(r["text_b"], [r["text_a"]])[0].accepted]
    true_pos = sum(r["label"] == 1 for r in served)
    return {"precision": round(true_pos / max(len(served), 1), 4),
            "recall": round(true_pos / max(sum(r["label"] == 1 for r in rows), 1), 4), "pairs": len(rows)}


def _write_meta(out: Path, meta: dict, training: dict, figures: dict) -> None:
    here = Path(__file__)
    (out / META_FILE).parent.mkdir(parents=True, exist_ok=True)
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    record(ARTIFACT, [ONNX_FILE, META_FILE], {
        "data": training.get("pairs_file_sha256", {}), "code": hash_files([here]),
        # What the threshold depends on besides the weights (calibrate again when one changes).
        "calibration": {"code": hash_files([here.with_name("verifier.py"), here.with_name("mismatch.py"),
                                             here.with_name("slots.py")]),
                        "embedder_sha256": meta["embedder_sha256"], "min_cosine": meta["min_cosine"],
                        "target_precision": meta["target_precision"]},
        "parameters": {k: training.get(k) for k in ("train_rows", "epochs", "seed", "max_train")}}, figures, out)


def pick_threshold(probs: np.ndarray, labels: np.ndarray, positives: int, target: float,
                   confidence: float | None = None) -> tuple[float, dict]:
    """The lowest threshold whose precision (over these pairs) is at least `target`; recall
    counts against every positive of the part (`positives`), as the eval does. With
    `confidence`, the precision's one-sided Clopper-Pearson lower bound must reach it."""
    from scipy.stats import beta

    order = np.argsort(-probs)
    tp = np.cumsum(labels[order])
    n = np.arange(1, len(order) + 1)
    precision = tp / n
    bound = precision if confidence is None else np.nan_to_num(beta.ppf(1 - confidence, tp, n - tp + 1))
    ok = np.nonzero(bound >= target)[0]
    if len(ok) == 0:
        return 0.999, {"precision": None, "recall": 0.0}
    j = ok[-1]
    return float(probs[order][j]), {"precision": round(float(precision[j]), 4),
                                    "recall": round(float(tp[j] / max(positives, 1)), 4), "pairs": int(len(probs))}
