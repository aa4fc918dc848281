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

Shipped trained in models/artifacts/injection/ (training: injection_training.py,
`embassy train injection`, about 4 minutes on 2 cores) on models/training/deepset_train.jsonl
plus models/guard/injection_extra.jsonl, prompts written for Embassy's own domain (customs
requests, pasted documents, attacks dressed as shipment notes, attacks in other styles
and languages), plus the train part of the customs dev set
(tests/data/customs_dev/injection_train.jsonl: customs requests in an attacker's words,
with small suffixes). The written rows together weigh half as much as deepset's in the loss. The threshold is chosen on out-of-fold scores (each fold fine-tuned from
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

from embassy.embeddings import ARTIFACT as EMBEDDER_ARTIFACT, ONNX_NAME as EMBEDDER_ONNX, onnx_session
from models.artifacts import ARTIFACTS_DIR, ArtifactError, artifact_file, entry, text_hash

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
        r"(<\|im_start\|>|<\|system\|>|\[/?INST\]|<<SYS>>|^[ \t]{0,8}(system|assistant)[ \t]{0,8}:"
        r"|###\s{0,8}(system|instruction)|```\s{0,8}system|</?(system|instructions?)>)", _I | re.MULTILINE)),
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
ARTIFACT = "injection"  # its entry in models/artifacts/manifest.json
HEAD_FILE, META_FILE = "injection/head.int8.onnx", "injection/injection.json"
SCALE = 10.0  # unit-length pooled vector times this: logits in a range the head learns fast


def feature_signature() -> str:
    """What the head was trained to read besides the encoder: names, patterns and flags of
    the hand features. A trained head is only valid for the same signature."""
    return text_hash(json.dumps([[n, rx.pattern, rx.flags] for n, rx in FEATURES] + [_BASE64.pattern]))


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
    def load(cls, root: Path = ARTIFACTS_DIR) -> "InjectionModel":
        """The classifier shipped in `root` (models/artifacts), checked against its manifest
        and against this code: the features it reads and the encoder whose trunk it reads.

        Raises:
            ArtifactError: missing, corrupt, or made for other features or another encoder.
        """
        meta_path = artifact_file(ARTIFACT, META_FILE, root)
        meta = json.loads(meta_path.read_text())
        if meta.get("feature_signature") != feature_signature():
            raise ArtifactError(f"{meta_path}: trained for other hand features than "
                                "deployments/guardrail/injection.py defines; retrain it with "
                                "`embassy train injection`")
        encoder = entry(EMBEDDER_ARTIFACT, ARTIFACTS_DIR)["files"][EMBEDDER_ONNX]["sha256"]
        if meta.get("embedder_sha256") != encoder:
            raise ArtifactError(f"{meta_path}: trained on another encoder than {EMBEDDER_ONNX}; "
                                "retrain it with `embassy train injection`")
        return cls(onnx_session(artifact_file(ARTIFACT, HEAD_FILE, root)), float(meta["threshold"]), meta)
