"""Measures the guard on JSON Lines files (formats of models/training/README.md).

PII scoring is span-level: a prediction is right when it overlaps a labelled span of the
same type; a labelled span is found when a prediction of its type overlaps it. A data set
labelled in Presidio's names (presidio-research) is scored on the eight types both share
(SCORED_PII); one labelled in Embassy's own names (tests/data/customs_dev) on every type
the detector claims.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable

# Embassy's type -> the name the Presidio-research data set uses.
SCORED_PII = {"PERSON": "PERSON", "ADDRESS": "STREET_ADDRESS", "PHONE": "PHONE_NUMBER",
              "EMAIL": "EMAIL_ADDRESS", "CREDIT_CARD": "CREDIT_CARD", "IBAN": "IBAN_CODE",
              "US_SSN": "US_SSN", "IP_ADDRESS": "IP_ADDRESS"}


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSON Lines file (gzipped when its name ends in .gz)."""
    import gzip

    rows = []
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    raise ValueError(f"{path}:{n}: not a JSON object") from None
    return rows


def latency_summary(samples_s: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples_s)
    return {"p50": round(statistics.median(ms), 3), "p99": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 3)}


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def pii_names(rows: list[dict]) -> dict[str, str]:
    """Embassy's type -> the data set's name for it, for the types to score."""
    from deployments.guardrail.pii import PII_TYPES

    labelled = {s["type"] for row in rows for s in row["spans"]}
    if labelled & (set(SCORED_PII.values()) - set(PII_TYPES)):
        return SCORED_PII
    return {t: t for t in PII_TYPES}


def eval_pii(rows: list[dict], find: Callable[[str], list]) -> dict[str, Any]:
    names = pii_names(rows)
    per = {t: {"tp_pred": 0, "pred": 0, "found": 0, "support": 0} for t in names.values()}
    latencies = []
    for row in rows:
        findings, seconds = timed(lambda: find(row["text"]))
        latencies.append(seconds)
        gold = [(s["type"], (s["start"], s["end"])) for s in row["spans"] if s["type"] in per]
        preds = [(names[f.type], (f.start, f.end)) for f in findings if f.type in names]
        for kind, span in preds:
            per[kind]["pred"] += 1
            per[kind]["tp_pred"] += any(k == kind and _overlaps(span, g) for k, g in gold)
        for kind, span in gold:
            per[kind]["support"] += 1
            per[kind]["found"] += any(k == kind and _overlaps(span, p) for k, p in preds)
    tp = sum(v["tp_pred"] for v in per.values())
    pred = sum(v["pred"] for v in per.values())
    found = sum(v["found"] for v in per.values())
    support = sum(v["support"] for v in per.values())
    precision = tp / pred if pred else 0.0
    recall = found / support if support else 0.0
    return {
        "n": len(rows),
        "precision": round(precision, 4), "recall": round(recall, 4),
        "f1": round(2 * precision * recall / (precision + recall), 4) if precision + recall else 0.0,
        "per_type": {k: {"precision": round(v["tp_pred"] / v["pred"], 4) if v["pred"] else None,
                         "recall": round(v["found"] / v["support"], 4) if v["support"] else None,
                         "support": v["support"]} for k, v in per.items()},
        "latency_ms": latency_summary(latencies),
    }


def eval_binary(rows: list[dict], flagged: Callable[[str], bool], positive: str) -> dict[str, Any]:
    tp = fp = pos = neg = 0
    latencies = []
    for row in rows:
        hit, seconds = timed(lambda: flagged(row["text"]))
        latencies.append(seconds)
        if row["label"] == positive:
            pos += 1
            tp += hit
        else:
            neg += 1
            fp += hit
    return {"n": len(rows), "tpr": round(tp / pos, 4) if pos else None,
            "fpr": round(fp / neg, 4) if neg else None, "latency_ms": latency_summary(latencies)}
