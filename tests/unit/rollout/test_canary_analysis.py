"""The canary verdict on synthetic per-request samples (seeded): no verdict before the
minimum, no false rollback of a healthy canary, a rollback for each kind of regression."""

from __future__ import annotations

import numpy as np
import pytest

from embassy.canary import Sample, judge

SETTINGS = dict(min_requests=200, alpha=0.01, latency_tolerance=0.25, rate_tolerance=0.02)


def samples(n, rng, ttft=0.1, itl=0.04, error=0.0, refused=0.0, flagged=0.0):
    return [Sample(ok=rng.random() >= error, ttft_s=float(rng.lognormal(np.log(ttft), 0.3)),
                   itl_s=float(rng.lognormal(np.log(itl), 0.2)), refused=rng.random() < refused,
                   flagged=rng.random() < flagged) for _ in range(n)]


def test_no_verdict_from_a_few_requests_however_bad_they_are():
    rng = np.random.default_rng(0)
    verdict = judge(samples(500, rng), samples(5, rng, error=1.0, ttft=5.0), **SETTINGS)
    assert verdict.decision == "wait" and "canary 5" in verdict.reason


def test_a_healthy_canary_is_not_rolled_back_at_low_or_high_traffic():
    rollbacks = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        n = 200 if seed % 2 else 1000
        verdict = judge(samples(n * 5, rng, error=0.01), samples(n, rng, error=0.01), **SETTINGS)
        rollbacks += verdict.decision == "rollback"
    assert rollbacks == 0


@pytest.mark.parametrize("regression, signal", [
    (dict(ttft=0.2), "p95_ttft_s"), (dict(itl=0.08), "p95_inter_token_s"), (dict(error=0.08), "error_rate"),
    (dict(refused=0.1), "refusal_rate"), (dict(flagged=0.1), "ungrounded_rate")])
def test_each_kind_of_regression_rolls_back_and_says_why(regression, signal):
    rng = np.random.default_rng(1)
    verdict = judge(samples(1000, rng), samples(300, rng, **regression), **SETTINGS)
    assert verdict.decision == "rollback" and signal in verdict.reason
    assert [c.signal for c in verdict.checks if c.worse] == [signal]


def test_a_significant_but_tolerated_slowdown_is_promoted():
    rng = np.random.default_rng(2)
    verdict = judge(samples(3000, rng), samples(3000, rng, ttft=0.11), **SETTINGS)  # +10 % < 25 %
    assert verdict.decision == "promote"
    ttft = next(c for c in verdict.checks if c.signal == "p95_ttft_s")
    assert ttft.p_value < 0.01 and not ttft.worse


def test_cache_hits_without_model_timings_are_judged_on_rates_only():
    rng = np.random.default_rng(3)
    hits = [Sample(ok=True) for _ in range(300)]
    verdict = judge(samples(1000, rng), hits, **SETTINGS)
    assert verdict.decision == "promote" and {c.signal for c in verdict.checks} == {
        "error_rate", "refusal_rate", "ungrounded_rate"}
