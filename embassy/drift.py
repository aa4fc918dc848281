"""Drift detection: is current traffic still like the reference traffic?

Signals: the prompt embedding (the guard's MiniLM vector of the last user message), answer
length, refusal (0/1) and groundedness score. A reference window (the first
`reference_size` requests, or after an alarm the window that raised it) is compared with
a sliding current window every `check_every` requests:
- embeddings by the maximum mean discrepancy (MMD, Gaussian kernel with the median
  distance as bandwidth) with a permutation test (500 permutations: p can go down to
  0.002, below `alpha`);
- each scalar signal by a two-sample Kolmogorov-Smirnov test (scipy).
A signal drifts when its p-value is below `alpha` on `confirm` checks in a row: one
check every 50 requests over 5,000 stationary requests is 100 tests, so a single
significant result is not enough to call an alarm.

Written here rather than taken from Evidently or alibi-detect: both pull in heavy
dependency trees (and alibi-detect, TensorFlow or torch backends) for one test of a
few lines of NumPy.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

SCALARS = ("answer_length", "refused", "groundedness")


@dataclass
class DriftCheck:
    signal: str
    statistic: float
    p_value: float
    drifted: bool


@dataclass
class DriftState:
    observed: int = 0
    alarms: list[DriftCheck] = field(default_factory=list)


def mmd_test(x: np.ndarray, y: np.ndarray, permutations: int = 500, seed: int = 0) -> tuple[float, float]:
    """(MMD², permutation p-value) of two samples of vectors.

    The biased MMD² is wᵀKw with w = +1/n on the first sample and -1/m on the second, so
    every permutation is one column of a matrix product: all of them in one K @ W.
    """
    z = np.vstack([x, y]).astype(np.float32)
    n, total = len(x), len(x) + len(y)
    sq = np.sum(z * z, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0)
    median = float(np.median(d2[np.triu_indices(total, 1)])) or 1.0
    k = np.exp(-d2 / median)
    base = np.where(np.arange(total) < n, 1.0 / n, -1.0 / (total - n)).astype(np.float32)
    rng = np.random.default_rng(seed)
    w = np.stack([base] + [rng.permutation(base) for _ in range(permutations)], axis=1)
    stats = np.einsum("ip,ip->p", w, k @ w)
    observed = float(stats[0])
    return observed, float((np.sum(stats[1:] >= observed) + 1) / (permutations + 1))


class DriftDetector:
    def __init__(self, reference_size: int = 300, window: int = 300, check_every: int = 50,
                 alpha: float = 0.005, confirm: int = 2, permutations: int = 500) -> None:
        self.reference_size = reference_size
        self.window = window
        self.check_every = check_every
        self.alpha = alpha
        self.confirm = confirm
        self.permutations = permutations
        self.reference: dict[str, list] = {s: [] for s in ("embedding", *SCALARS)}
        self.current: dict[str, deque] = {s: deque(maxlen=window) for s in ("embedding", *SCALARS)}
        self.state = DriftState()
        self._streak: dict[str, int] = {}
        self._since_check = 0

    def observe(self, embedding: np.ndarray | None = None, **scalars: float | None) -> list[DriftCheck]:
        """Add one request and run the check when one is due; returns the alarms raised."""
        if self.add(embedding, **scalars):
            return self.evaluate(self.snapshot())
        return []

    def add(self, embedding: np.ndarray | None = None, **scalars: float | None) -> bool:
        """Add one request; True when a check is due (the caller may run it in a thread:
        take `snapshot()` first, on the thread that adds)."""
        self.state.observed += 1
        values = {"embedding": embedding, **{s: scalars.get(s) for s in SCALARS}}
        filling = len(self.reference["embedding"]) < self.reference_size and embedding is not None
        for name, value in values.items():
            if value is None:
                continue
            if filling or (name != "embedding" and len(self.reference[name]) < self.reference_size):
                self.reference[name].append(value)
            else:
                self.current[name].append(value)
        self._since_check += 1
        if self._since_check < self.check_every:
            return False
        self._since_check = 0
        return True

    def snapshot(self) -> dict[str, tuple[list, list]]:
        return {name: (list(self.reference[name]), list(self.current[name])) for name in self.reference}

    def evaluate(self, snapshot: dict[str, tuple[list, list]]) -> list[DriftCheck]:
        from scipy.stats import ks_2samp

        alarms = []
        self.last: dict[str, DriftCheck] = {}
        for name in ("embedding", *SCALARS):
            ref, cur = snapshot[name]
            if len(ref) < self.reference_size or len(cur) < self.window:
                continue
            if name == "embedding":
                stat, p = mmd_test(np.asarray(ref), np.asarray(cur), self.permutations)
            else:
                result = ks_2samp(ref, list(cur))
                stat, p = float(result.statistic), float(result.pvalue)
            self._streak[name] = self._streak.get(name, 0) + 1 if p < self.alpha else 0
            self.last[name] = DriftCheck(name, stat, p, False)
            if self._streak[name] >= self.confirm:
                check = DriftCheck(name, stat, p, True)
                alarms.append(check)
                self.state.alarms.append(check)
                # The new traffic becomes the reference: one alarm per shift, not one per check.
                self.reference[name] = list(cur)
                self._streak[name] = 0
        return alarms
