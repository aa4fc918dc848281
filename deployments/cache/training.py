"""Training and calibration of the cache's pair verifier (`embassy cache train-verifier`).

Fine-tunes all-MiniLM-L6-v2's weights as a cross-encoder (one logit: same question or not)
on the `train` part of a pairs file, then picks the threshold on the `calibrate` part:
the lowest probability at which the pairs that would reach the verifier in the cache
(cosine at least `min_cosine`, no rule veto) keep at least `target_precision`. The `test`
part is written beside the model for `embassy eval cache` and is used by neither step.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Callable

import numpy as np

from deployments.cache.mismatch import mismatch
from deployments.cache.verifier import MAX_PAIR_TOKENS, PairVerifier, pair_split
from deployments.guardrail.evaluation import read_jsonl
from models.prepare import sha256_file

Progress = Callable[[str, int, int], None]  # (phase, done, total)


def train_verifier(pairs_file: Path, out_dir: Path, embed, *, min_cosine: float, target_precision: float = 0.95,
                   max_train: int | None = None, epochs: int = 3, seed: int = 0,
                   progress: Progress = lambda *a: None) -> dict:
    """Train, calibrate, save to `out_dir` (model, tokenizer, verifier.json, test.jsonl)."""
    parts = {"train": [], "calibrate": [], "test": []}
    for i, r in enumerate(read_jsonl(pairs_file)):
        parts[pair_split(i)].append(r)
    started = time.monotonic()
    rows = train_model(parts["train"], out_dir, seed=seed, epochs=epochs, max_train=max_train, progress=progress)
    meta = {"threshold": 0.5, "pairs_file_sha256": sha256_file(pairs_file), "train_rows": rows,
            "epochs": epochs, "seed": seed, "min_cosine": min_cosine, "target_precision": target_precision,
            "train_seconds": round(time.monotonic() - started, 1)}
    (out_dir / "verifier.json").write_text(json.dumps(meta, indent=2))
    with (out_dir / "test.jsonl").open("w") as f:
        for r in parts["test"]:
            f.write(json.dumps({"text_a": r["text_a"], "text_b": r["text_b"], "label": r["label"]}) + "\n")
    return calibrate_verifier(pairs_file, out_dir, embed, min_cosine=min_cosine, target_precision=target_precision)


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


def calibrate_verifier(pairs_file: Path, out_dir: Path, embed, *, min_cosine: float,
                       target_precision: float = 0.95) -> dict:
    """Pick the trained verifier's threshold on the `calibrate` part, over the pairs that
    would reach it in the cache. It depends on the embedder (the cosine gate), so a new
    embedder needs only this, not a new verifier."""
    meta = json.loads((out_dir / "verifier.json").read_text())
    verifier = PairVerifier(out_dir)
    cal = [r for i, r in enumerate(read_jsonl(pairs_file)) if pair_split(i) == "calibrate"]
    a = embed([r["text_a"] for r in cal])
    b = embed([r["text_b"] for r in cal])
    reach = [r for r, cos in zip(cal, (a * b).sum(1)) if cos >= min_cosine and mismatch(r["text_b"], r["text_a"]) is None]
    probs = np.concatenate([verifier.probabilities([r["text_b"] for r in reach[i:i + 64]],
                                                   [r["text_a"] for r in reach[i:i + 64]])
                            for i in range(0, len(reach), 64)]) if reach else np.zeros(0)
    labels = np.array([r["label"] for r in reach])
    meta["threshold"], meta["calibration"] = pick_threshold(probs, labels, int(sum(r["label"] for r in cal)),
                                                            target_precision)
    meta.update(min_cosine=min_cosine, target_precision=target_precision)
    (out_dir / "verifier.json").write_text(json.dumps(meta, indent=2))
    return meta


def pick_threshold(probs: np.ndarray, labels: np.ndarray, positives: int, target: float) -> tuple[float, dict]:
    """The lowest threshold whose precision (over these pairs) is at least `target`; recall
    counts against every positive of the part (`positives`), as the eval does."""
    order = np.argsort(-probs)
    tp = np.cumsum(labels[order])
    n = np.arange(1, len(order) + 1)
    precision = tp / n
    ok = np.nonzero(precision >= target)[0]
    if len(ok) == 0:
        return 0.999, {"precision": None, "recall": 0.0}
    j = ok[-1]
    return float(probs[order][j]), {"precision": round(float(precision[j]), 4),
                                    "recall": round(float(tp[j] / max(positives, 1)), 4), "pairs": int(len(probs))}
