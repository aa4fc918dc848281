"""Automatic canary analysis: is the canary version worse than the stable one?

Each finished request of either version leaves a `Sample`. `judge` compares the two on
five signals, each with a one-sided test that the canary is worse and a tolerance that
the difference must also exceed (a significant but negligible slow-down is no reason to
roll back):

- error rate (5xx, a stream cut by a failure), refusal rate (the output guard's
  `content_filter`), groundedness-flag rate: Fisher's exact test on the 2x2 counts;
- p95 time to first token and p95 inter-token latency: the Mann-Whitney U test on the
  samples, and the canary's p95 above the stable's by more than `latency_tolerance`.

No verdict comes before both versions have `min_requests` samples: at low traffic the
analysis waits instead of judging five requests. The five tests share `alpha`
(Bonferroni), so a healthy canary is falsely rolled back at most `alpha` of the time.
Why not Kayenta or Flagger: both need a metrics server and judge fixed windows of
aggregates; this reads the per-request samples the region already keeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np


@dataclass(frozen=True)
class Sample:
    ok: bool  # answered without a server-side failure
    ttft_s: float | None = None
    itl_s: float | None = None
    refused: bool = False
    flagged: bool = False

    def to_fields(self) -> dict[str, str]:
        return {"ok": str(int(self.ok)), "ttft": "" if self.ttft_s is None else f"{self.ttft_s:.6f}",
                "itl": "" if self.itl_s is None else f"{self.itl_s:.6f}",
                "refused": str(int(self.refused)), "flagged": str(int(self.flagged))}

    @classmethod
    def from_fields(cls, f: dict) -> "Sample":
        def num(key):
            value = f.get(key, "")
            return float(value) if value not in ("", None) else None
        return cls(ok=f.get("ok") == "1", ttft_s=num("ttft"), itl_s=num("itl"),
                   refused=f.get("refused") == "1", flagged=f.get("flagged") == "1")


@dataclass(frozen=True)
class Check:
    signal: str
    stable: float
    canary: float
    p_value: float | None
    worse: bool

    def describe(self) -> str:
        p = "n/a" if self.p_value is None else f"{self.p_value:.2g}"
        return f"{self.signal}: canary {self.canary:.4g} vs stable {self.stable:.4g} (p={p})"


@dataclass(frozen=True)
class Verdict:
    decision: Literal["wait", "promote", "rollback"]
    reason: str
    stable_n: int
    canary_n: int
    checks: list[Check] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"decision": self.decision, "reason": self.reason, "stable_requests": self.stable_n,
                "canary_requests": self.canary_n,
                "checks": [{"signal": c.signal, "stable": c.stable, "canary": c.canary, "p_value": c.p_value,
                            "worse": c.worse} for c in self.checks]}


def _rate_check(signal: str, stable: Sequence[bool], canary: Sequence[bool], alpha: float,
                tolerance: float) -> Check:
    from scipy.stats import fisher_exact

    s, c = float(np.mean(stable)), float(np.mean(canary))
    table = [[sum(canary), len(canary) - sum(canary)], [sum(stable), len(stable) - sum(stable)]]
    p = float(fisher_exact(table, alternative="greater").pvalue)
    return Check(signal, s, c, p, p < alpha and c - s > tolerance)


def _latency_check(signal: str, stable: Sequence[float], canary: Sequence[float], alpha: float,
                   tolerance: float, min_n: int) -> Check | None:
    from scipy.stats import mannwhitneyu

    if len(stable) < min_n or len(canary) < min_n:
        return None  # e.g. every request a cache hit: too few model timings to judge
    s, c = float(np.percentile(stable, 95)), float(np.percentile(canary, 95))
    p = float(mannwhitneyu(canary, stable, alternative="greater").pvalue)
    return Check(signal, s, c, p, p < alpha and c > s * (1 + tolerance))


def judge(stable: Sequence[Sample], canary: Sequence[Sample], *, min_requests: int, alpha: float,
          latency_tolerance: float, rate_tolerance: float) -> Verdict:
    n_s, n_c = len(stable), len(canary)
    if n_s < min_requests or n_c < min_requests:
        return Verdict("wait", f"need {min_requests} requests of each version (stable {n_s}, canary {n_c})",
                       n_s, n_c)
    each = alpha / 5
    checks = [
        _rate_check("error_rate", [not x.ok for x in stable], [not x.ok for x in canary], each, rate_tolerance),
        _rate_check("refusal_rate", [x.refused for x in stable], [x.refused for x in canary], each, rate_tolerance),
        _rate_check("ungrounded_rate", [x.flagged for x in stable], [x.flagged for x in canary], each,
                    rate_tolerance),
    ]
    for signal, attr in (("p95_ttft_s", "ttft_s"), ("p95_inter_token_s", "itl_s")):
        check = _latency_check(signal, [getattr(x, attr) for x in stable if getattr(x, attr) is not None],
                               [getattr(x, attr) for x in canary if getattr(x, attr) is not None],
                               each, latency_tolerance, min_requests // 2)
        if check is not None:
            checks.append(check)
    worse = [c for c in checks if c.worse]
    if worse:
        return Verdict("rollback", "canary worse on " + "; ".join(c.describe() for c in worse), n_s, n_c, checks)
    return Verdict("promote", f"no signal worse over {n_c} canary and {n_s} stable requests", n_s, n_c, checks)
