"""Drift detection on CLINC150 traffic (clinc/oos-eval, CC-BY-3.0; pass its folder with --data), prompt embeddings only.

1. Stationary: 5,000 requests drawn at random from one fixed mixture (all ten CLINC
   domains), after a 300-request reference from the same mixture: every alarm is false.
2. Shift: 600 requests of one domain (the reference is its first 300), then traffic
   switches to another domain: the delay in requests from the switch to the alarm.
Several seeds and domain pairs; medians and worst cases. Baseline in the same run: the
same detector with single-check alarms (confirm=1), to show what the confirmation costs
in delay and saves in false alarms.

    .venv/bin/python benchmarks/drift.py [--seeds 3] [--pairs 6]

Targets (issue 7): a shift detected within 500 requests; no alarm in 5,000 stationary ones.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from embassy.drift import DriftDetector  # noqa: E402
from embassy.embeddings import shared_embedder  # noqa: E402



def load(folder: Path) -> dict[str, list[str]]:
    data = json.loads((folder / "clinc_data_full.json").read_text())
    domains = json.loads((folder / "clinc_domains.json").read_text())
    intent_domain = {intent: d for d, intents in domains.items() for intent in intents} \
        if isinstance(next(iter(domains.values())), list) else domains
    by_domain: dict[str, list[str]] = {}
    for split in ("train", "val", "test"):
        for text, intent in data[split]:
            by_domain.setdefault(intent_domain[intent], []).append(text)
    return by_domain


def run(detector: DriftDetector, vectors: np.ndarray) -> list[int]:
    """Indices (1-based request numbers) at which alarms were raised."""
    alarms = []
    for i, v in enumerate(vectors, 1):
        if any(a.signal == "embedding" for a in detector.observe(v)):
            alarms.append(i)
    return alarms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True,
                        help="folder with CLINC150's clinc_data_full.json and clinc_domains.json")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--stationary", type=int, default=5000)
    args = parser.parse_args()
    by_domain = load(args.data)
    names = sorted(by_domain)
    embed = shared_embedder().embed
    texts = sorted({t for ts in by_domain.values() for t in ts})
    t0 = time.perf_counter()
    index = {t: i for i, t in enumerate(texts)}
    matrix = embed(texts)
    print(f"{len(texts)} CLINC prompts in {len(names)} domains embedded in {time.perf_counter() - t0:.0f} s")

    for label, confirm in (("detector (confirm=2)", 2), ("baseline (confirm=1)", 1)):
        false_alarms, delays, check_ms = [], [], []
        for seed in range(args.seeds):
            rng = random.Random(seed)
            mixture = [rng.choice(by_domain[rng.choice(names)]) for _ in range(300 + args.stationary)]
            d = DriftDetector(confirm=confirm)
            t1 = time.perf_counter()
            alarms = run(d, matrix[[index[t] for t in mixture]])
            check_ms.append((time.perf_counter() - t1) * 1000 / max(1, (300 + args.stationary) // 50))
            false_alarms.append(len(alarms))
            for _ in range(args.pairs):
                a, b = rng.sample(names, 2)
                stream = [rng.choice(by_domain[a]) for _ in range(600)] + [rng.choice(by_domain[b]) for _ in range(1000)]
                alarms = [i for i in run(DriftDetector(confirm=confirm), matrix[[index[t] for t in stream]]) if i > 600]
                delays.append(alarms[0] - 600 if alarms else None)
        detected = [x for x in delays if x is not None]
        print(f"\n{label}")
        print(f"  stationary: {sum(false_alarms)} false alarm(s) in {args.seeds} x {args.stationary} requests "
              f"(per run: {false_alarms}); one check (MMD, 500 permutations, 300 vs 300) {statistics.median(check_ms):.0f} ms")
        print(f"  shift: detected {len(detected)}/{len(delays)}; delay median {statistics.median(detected) if detected else '-'}"
              f", worst {max(detected) if detected else '-'} requests after the switch")


if __name__ == "__main__":
    main()
