"""Prompt-injection and jailbreak scoring: logistic regression over a sentence embedding,
hand-built features (instruction override, role-play framing, prompt extraction, delimiter
and system-prompt spoofing, encoded payloads) in English and German as the training data is,
and hashed character 3-5-grams (which carry the German and obfuscated attacks that the
English-only embedding misses: cross-validated TPR at 5 % FPR 0.94 without them, 0.98 with).

Trained only on ../shared/data/injection/deepset_train.jsonl plus models/guard/injection_extra.jsonl,
prompts written for Embassy's own domain (customs requests, pasted documents, and attacks
dressed as shipment notes), without which every imperative business request looked like an
attack to a model that had seen no customs text (`embassy guard train-injection`);
the weights ship in models/guard/injection.json, so serving needs neither the data nor sklearn's
training at start. The threshold is chosen on cross-validated training scores for a false
positive rate of at most `target_fpr` there.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from embassy.settings import PROJECT_ROOT

ARTIFACT = PROJECT_ROOT / "models" / "guard" / "injection.json"

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
CHAR_NGRAM_FEATURES = 2 ** 16


def char_ngrams():
    """Stateless (hashed) character n-grams: nothing to store but the weights."""
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(analyzer="char_wb", ngram_range=(3, 5), n_features=CHAR_NGRAM_FEATURES,
                             alternate_sign=False, norm="l2", lowercase=True)


@lru_cache(maxsize=1)
def _hasher():
    return char_ngrams()


def _char_vector(text: str):
    return _hasher().transform([text])


@dataclass(frozen=True)
class InjectionModel:
    coef: np.ndarray  # embedding and hand features
    char_coef: np.ndarray  # hashed character n-grams
    intercept: float
    threshold: float
    meta: dict

    def score(self, text: str, embedding: np.ndarray) -> float:
        x = np.concatenate([embedding, hand_features(text)])
        chars = _char_vector(text)
        z = x @ self.coef + float(chars.data @ self.char_coef[chars.indices]) + self.intercept
        return float(1.0 / (1.0 + np.exp(-z)))

    @classmethod
    def load(cls, path: Path = ARTIFACT) -> "InjectionModel":
        data = json.loads(path.read_text())
        char_coef = np.zeros(CHAR_NGRAM_FEATURES, dtype=np.float32)
        for index, value in data["char_coef"].items():
            char_coef[int(index)] = value
        return cls(np.asarray(data["coef"], dtype=np.float32), char_coef, float(data["intercept"]),
                   float(data["threshold"]), data["meta"])

    def save(self, path: Path = ARTIFACT) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Only n-gram buckets seen in training have weights; the rest stay zero.
        sparse = {str(i): round(float(v), 5) for i, v in enumerate(self.char_coef) if abs(v) >= 1e-5}
        path.write_text(json.dumps({"coef": [round(float(c), 6) for c in self.coef], "char_coef": sparse,
                                    "intercept": self.intercept, "threshold": self.threshold,
                                    "meta": self.meta}) + "\n")


def train(rows: list[dict], embed, sources: dict[str, str], target_fpr: float = 0.05) -> InjectionModel:
    """Fit on labelled rows ({"text", "label": "injection"|"benign"}); choose the threshold
    on 5-fold cross-validated scores so that at most `target_fpr` of benign rows are flagged."""
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    texts = [r["text"] for r in rows]
    y = np.asarray([r["label"] == "injection" for r in rows], dtype=int)
    dense = np.hstack([embed(texts), np.vstack([hand_features(t) for t in texts])])
    x = sp.hstack([sp.csr_matrix(dense), char_ngrams().transform(texts)]).tocsr()
    clf = LogisticRegression(C=4.0, class_weight="balanced", max_iter=2000)
    cv = cross_val_predict(clf, x, y, cv=StratifiedKFold(5, shuffle=True, random_state=0),
                           method="predict_proba")[:, 1]
    benign = np.sort(cv[y == 0])
    threshold = float(benign[int(np.ceil((1 - target_fpr) * len(benign))) - 1])
    cv_tpr = float((cv[y == 1] > threshold).mean())
    clf.fit(x, y)
    meta = {"embedder": "all-MiniLM-L6-v2", "features": FEATURE_NAMES,
            "char_ngrams": "char_wb 3-5, 2**16 hashed", "train_rows": len(rows), "train_sha256": sources,
            "target_fpr": target_fpr, "cv_tpr_at_threshold": round(cv_tpr, 4)}
    coef = clf.coef_[0].astype(np.float32)
    return InjectionModel(coef[:dense.shape[1]], coef[dense.shape[1]:], float(clf.intercept_[0]), threshold, meta)

