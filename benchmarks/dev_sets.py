"""Shared by the customs development-set builders: a seeded train / calibration / test
split, and one JSON Lines file per split."""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "customs_dev"
SPLITS = (("train", 0.5), ("calibration", 0.2), ("test", 0.3))


def split(rows: list[dict], rng: random.Random) -> dict[str, list[dict]]:
    rows = list(rows)
    rng.shuffle(rows)
    out, start = {}, 0
    for name, share in SPLITS:
        end = len(rows) if name == SPLITS[-1][0] else start + round(share * len(rows))
        out[name] = rows[start:end]
        start = end
    return out


def write(task: str, splits: dict[str, list[dict]]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        with (OUT / f"{task}_{name}.jsonl").open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
