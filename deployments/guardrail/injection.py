"""Prompt-injection and jailbreak scoring.

The classifier reads the shared encoder's own hidden states. The first four layers of
all-MiniLM-L6-v2 run once per prompt (the same pass embeds it for the topic check and the
cache); a copy of the last two layers, fine-tuned for this task, reads their output; a
logistic head takes the mean-pooled result and hand-built features (instruction override,
role-play framing, prompt extraction, delimiter and system-prompt spoofing, encoded
payloads) in English and German as the training data is.

Why fine-tuned layers: on 113 rows written later and held out from training (attacks of
kinds the training data lacks, and customs requests that look like attacks: "forget the
earlier HS code, it is 8471.30"), logistic regression over the sentence embedding and hand
features scored AUROC 0.83, with hashed character and word n-grams 0.90, the fine-tuned
layers alone 0.955. They cost two encoder layers more per prompt (2.6 ms for 200 tokens).

Trained per machine at install (`embassy guard train-injection`, about 4 minutes on 2
cores) only on ../shared/data/injection/deepset_train.jsonl plus
models/guard/injection_extra.jsonl, prompts written for Embassy's own domain (customs
requests, pasted documents, attacks dressed as shipment notes, attacks in other styles
and languages). The threshold is chosen on out-of-fold scores (each fold fine-tuned from
the same start, scored through the same int8 graph that serves) so that the false positive
rate on deepset_train's benign prompts stays within `target_fpr` with 95 % confidence.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embassy.embeddings import onnx_session
from embassy.settings import PROJECT_ROOT

_I = re.IGNORECASE
FEATURES: tuple[tuple[str, re.Pattern], ...] = (
    ("override_en", re.compile(
        r"\b(ignore|forget|disregard|abandon|skip|override|drop|stop following)\b.{0,40}\b"
        r"(previous|prior|above|preceding|earlier|all|everything|any|your|the)\b.{0,30}"
        r"\b(instructions?|tasks?|assignments?|orders?|rules|prompts?|directions|guidelines|"
        r"said|before|context|thoughts|information)\b", _I)),
    ("override_short_en", re.compile(r"\b(ignore|forget)\s+(all|everything|that|this|about)\b", _I)),
    ("override_de", re.compile(
        r"\b(vergiss|vergessen|ignorier\w*|missachte\w*|abweichend)\b.{0,50}\b(alle[sn]?|vorherig\w*|"
        r"bisherig\w*|davor|zuvor|anweisung\w*|aufträge|aufgaben|instruktion\w*|informationen)\b", _I)),
    ("new_task", re.compile(
        r"\b(new|next|real|actual|different)\s+(task|instruction|assignment|challenge|role|rule)s?\b"
        r"|\b(neue|nächste|eigentliche)\s+(aufgabe|anweisung|herausforderung|rolle)\b"
        r"|\bnow (focus|concentrate|listen|answer|write|say|tell)\b|\bjetzt\s+(konzentriere|schreib|sag)\w*", _I)),
    ("roleplay", re.compile(
        r"\b(you are now|you're now|act as|pretend (to be|you are)|imagine you are|role[- ]?play|"
        r"from now on|you will now|stell dir vor|du bist (jetzt|nun|ein|eine|kein)|tu so als|"
        r"ich möchte, dass sie als|i want you to act)\b", _I)),
    ("prompt_extraction", re.compile(
        r"\b(system prompt|your prompt|prompt text|initial (prompt|instructions)|your instructions|"
        r"reveal|show (me )?(all )?your|print (your|the) (prompt|instructions)|repeat after me|"
        r"(sentences?|text|words) before|spell[- ]?check)\b", _I)),
    ("jailbreak", re.compile(r"\b(jailbreak|DAN|do anything now|developer mode|no restrictions|"
                             r"unfiltered|uncensored|without (any )?(limits|restrictions|filters))\b", _I)),
    ("spoofed_delimiter", re.compile(
        r"(<\|im_start\|>|<\|system\|>|\[/?INST\]|<<SYS>>|^\s*(system|assistant)\s*:|###\s*(system|instruction)"
        r"|```\s*system|</?(system|instructions?)>)", _I | re.MULTILINE)),
    ("praise_then_pivot", re.compile(
        r"\b(well done|great job|that was (ok|good|great)|fantastic|excellent|sehr gut|gut gemacht|"
        r"das war schon mal)\b.{0,80}\b(but|now|jetzt|aber|nun)\b", _I)),
    ("shouting", re.compile(r"\b[A-ZÄÖÜ]{3,}(\s+[A-ZÄÖÜ]{2,}){3,}\b")),
    ("persona", re.compile(
        r"(^|[.!?]\s*)(you are|you're|du bist|nun bist du|jetzt bist du|be an?|sei eine?)\s+\w+"
        r"|\b(your|deiner?) (role|rolle)\b", _I)),
    ("attention_stop", re.compile(r"\b(attention|achtung|stop|stopp)\b\W{0,5}\b(stop|stopp|achtung)\b", _I)),
    ("override_de_after", re.compile(
        r"\b(obigen|vorherigen|bisherigen|alles davor|alle)\b.{0,40}\b(ignorieren|vergessen|vergiss)\b", _I)),
    ("assert_this", re.compile(r"\b(state|say|claim|sag|sage|behaupte)\s+(that|dass)\b"
                               r"|\bmake (something|it|stuff) up\b|\berfinde\b", _I)),
    ("spaced_letters", re.compile(r"\b(?:\w ){6,}\w\b")),
)
_BASE64 = re.compile(r"[A-Za-z0-9+/]{24,}={0,2}")


def _encoded_payload(text: str) -> float:
    """1 when the text carries a base64 blob that decodes to readable text."""
    for blob in _BASE64.findall(text):
        try:
            decoded = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=False)
        except (binascii.Error, ValueError):
            continue
        if len(decoded) >= 12 and sum(32 <= b < 127 for b in decoded) / len(decoded) > 0.9:
            return 1.0
    return 0.0


def hand_features(text: str) -> np.ndarray:
    values = [1.0 if rx.search(text) else 0.0 for _, rx in FEATURES]
    values.append(_encoded_payload(text))
    return np.asarray(values, dtype=np.float32)


# No length feature: the training injections run longer than its benign prompts, and a
# length feature learned to flag any long document (an invoice pasted in) as an attack.
FEATURE_NAMES = [name for name, _ in FEATURES] + ["encoded_payload"]
ARTIFACT_DIR = PROJECT_ROOT / ".embassy" / "models" / "injection"
HEAD_FILE, META_FILE = "head.int8.onnx", "injection.json"
_SCALE = 10.0  # unit-length pooled vector times this: logits in a range the head learns fast


@dataclass(frozen=True)
class InjectionModel:
    session: Any  # onnxruntime session of the fine-tuned layers and the head
    threshold: float
    meta: dict

    def score(self, text: str, trunk: np.ndarray) -> float:
        """Probability that `text` is an injection; `trunk` is its hidden state from
        `Embedder.encode` (the shared encoder's first layers)."""
        logit = self.session.run(None, {"trunk": trunk[None].astype(np.float32),
                                        "hand": hand_features(text)[None]})[0]
        return float(1.0 / (1.0 + np.exp(-float(logit.reshape(-1)[0]))))

    @classmethod
    def load(cls, folder: Path = ARTIFACT_DIR) -> "InjectionModel":
        if not (folder / META_FILE).exists():
            raise FileNotFoundError(f"no injection classifier in {folder}: run `embassy guard train-injection` "
                                    "(scripts/install.sh does)")
        meta = json.loads((folder / META_FILE).read_text())
        return cls(onnx_session(folder / HEAD_FILE), float(meta["threshold"]), meta)


def _head_module():
    """The trainable part: copies of the encoder's layers after the trunk, and the head."""
    import copy

    import torch
    from transformers import AutoModel

    from embassy.embeddings import TRUNK_LAYERS, model_path

    encoder = AutoModel.from_pretrained(str(model_path()), local_files_only=True, attn_implementation="eager")

    class Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = torch.nn.ModuleList(copy.deepcopy(encoder.encoder.layer[TRUNK_LAYERS:]))
            self.out = torch.nn.Linear(384 + len(FEATURE_NAMES), 1)

        def forward(self, trunk, hand, mask=None):
            additive = None if mask is None else (1.0 - mask[:, None, None, :]) * -1e4
            h = trunk
            for layer in self.layers:
                h = layer(h, additive)
            pooled = h.mean(1) if mask is None else (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            pooled = torch.nn.functional.normalize(pooled, dim=-1) * _SCALE
            return self.out(torch.cat([pooled, hand], -1)).squeeze(-1)

    return Head()


def _fit(trunks: list[np.ndarray], hand: np.ndarray, y: np.ndarray, rows: np.ndarray, epochs: int, seed: int):
    import torch

    torch.manual_seed(seed)
    head = _head_module()
    params = [{"params": head.layers.parameters(), "lr": 4e-5}, {"params": head.out.parameters(), "lr": 1e-3}]
    opt = torch.optim.AdamW(params, weight_decay=0.01)
    target = torch.tensor(y, dtype=torch.float32)
    pos_weight = (target[rows] == 0).sum() / (target[rows] == 1).sum()  # classes weighted equally
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        head.train()
        order = rng.permutation(rows)
        for start in range(0, len(order), 16):
            batch = order[start:start + 16]
            width = max(len(trunks[i]) for i in batch)
            x = torch.zeros((len(batch), width, 384))
            mask = torch.zeros((len(batch), width))
            for j, i in enumerate(batch):
                x[j, :len(trunks[i])] = torch.from_numpy(trunks[i])
                mask[j, :len(trunks[i])] = 1
            logits = head(x, torch.from_numpy(hand[batch]), mask)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target[batch], pos_weight=pos_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head.eval()


def _export(head, target: Path) -> Path:
    """ONNX (one text, no padding, as it serves), then int8 like the encoder."""
    import tempfile

    import onnx
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        plain = Path(tmp) / "head.onnx"
        example = (torch.zeros((1, 5, 384)), torch.zeros((1, len(FEATURE_NAMES))))
        with torch.no_grad():
            torch.onnx.export(head, example, str(plain), input_names=["trunk", "hand"], output_names=["logit"],
                              opset_version=17, dynamo=False, dynamic_axes={"trunk": {1: "tokens"}})
        quantize_dynamic(str(plain), str(Path(tmp) / target.name), weight_type=QuantType.QInt8, per_channel=True,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        (Path(tmp) / target.name).replace(target)
    return target


def calibrated_threshold(benign_scores: np.ndarray, target_fpr: float, confidence: float = 0.95) -> float:
    """The lowest threshold at which the false positive rate, judged from these benign
    scores, stays within `target_fpr` with `confidence` (one-sided Clopper-Pearson bound).
    Calibrating at the target itself exceeds it on new data about half the time (the first
    model calibrated that way flagged 3 of 56 benign test prompts, 5.4 %)."""
    from scipy.stats import beta

    ranked = np.sort(benign_scores)[::-1]
    n, flagged = len(ranked), 0
    while flagged + 1 < n and beta.ppf(confidence, flagged + 2, n - flagged - 1) <= target_fpr:
        flagged += 1  # one more benign score may lie above the threshold
    return float(ranked[flagged])


def train(rows: list[dict], encode, sources: dict[str, str], target_fpr: float = 0.05, epochs: int = 3,
          folds: int = 5, seed: int = 0, out: Path = ARTIFACT_DIR, calibrate_on: str | None = None) -> InjectionModel:
    """Fine-tune on labelled rows ({"text", "label": "injection"|"benign", "source"}) and
    write the model to `out`, with a threshold from out-of-fold scores
    (`calibrated_threshold`) of the benign rows from `calibrate_on` (a source; all when None).

    Calibrate on rows like the traffic to expect: written near-misses ("forget the earlier
    HS code") are there to teach the model the boundary, and being hard by design they
    would set the operating point for rarer prompts than most traffic holds. The meta
    reports the out-of-fold rates per source at the chosen threshold."""
    from sklearn.model_selection import StratifiedKFold

    texts = [r["text"] for r in rows]
    y = np.asarray([r["label"] == "injection" for r in rows], dtype=int)
    _, trunks = encode(texts)  # from the int8 graph that serves: trained on what it will read
    hand = np.vstack([hand_features(t) for t in texts])

    def scores(head, which) -> np.ndarray:
        model = InjectionModel(onnx_session(_export(head, out / f"fold.{HEAD_FILE}")), 0.0, {})
        return np.asarray([model.score(texts[i], trunks[i]) for i in which])

    oof = np.zeros(len(rows))
    for fit_rows, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(texts, y):
        oof[held] = scores(_fit(trunks, hand, y, fit_rows, epochs, seed), held)
    (out / f"fold.{HEAD_FILE}").unlink()
    source = np.asarray([r.get("source", "") for r in rows])
    calibration = (y == 0) & ((source == calibrate_on) if calibrate_on else True)
    threshold = calibrated_threshold(oof[calibration], target_fpr)
    per_source = {name: {"tpr": round(float((oof[(source == name) & (y == 1)] > threshold).mean()), 4)
                         if ((source == name) & (y == 1)).any() else None,
                         "fpr": round(float((oof[(source == name) & (y == 0)] > threshold).mean()), 4)
                         if ((source == name) & (y == 0)).any() else None}
                  for name in sorted(set(source))}
    _export(_fit(trunks, hand, y, np.arange(len(rows)), epochs, seed), out / HEAD_FILE)
    meta = {"encoder": "all-MiniLM-L6-v2, last 2 of 6 layers fine-tuned", "features": FEATURE_NAMES,
            "threshold": threshold, "train_rows": len(rows), "train_sha256": sources, "epochs": epochs,
            "target_fpr": target_fpr, "calibrated_on": calibrate_on or "all benign rows",
            "out_of_fold_tpr_at_threshold": round(float((oof[y == 1] > threshold).mean()), 4),
            "out_of_fold_by_source": per_source}
    (out / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    return InjectionModel.load(out)
