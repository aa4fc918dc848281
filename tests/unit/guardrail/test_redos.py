"""Every pattern the guard runs scales linearly with its input: a backtracking pattern that
is quadratic on some input ("a-" * 4000 took 0.4 s, a 1 MB message hours) would let one
request stall a guard replica. Ratios of medians in one run, not absolute times."""

from __future__ import annotations

import time

import pytest

from benchmarks.adversarial_inputs import guard_modules, patterns_of, repeated_units

SMALL, LARGE = 2_000, 8_000  # 4x the input: linear work is 4x, quadratic 16x


def _median_s(pattern, text: str) -> float:
    runs = []
    for _ in range(3):
        t = time.perf_counter()
        sum(1 for _ in pattern.finditer(text))
        runs.append(time.perf_counter() - t)
    return sorted(runs)[1]


PATTERNS = patterns_of(*guard_modules())


def test_the_probe_finds_the_guard_patterns():
    assert len(PATTERNS) > 30 and "pii._ADDRESS" in PATTERNS and "injection.FEATURES[7]" in PATTERNS


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_pattern_is_linear_on_repeated_units(name):
    pattern = PATTERNS[name]
    large = repeated_units(LARGE)
    # The unit that costs this pattern most at the large size, then its growth from the small one.
    worst = max(large, key=lambda u: _median_s(pattern, large[u]))
    small_s, large_s = _median_s(pattern, repeated_units(SMALL)[worst]), _median_s(pattern, large[worst])
    if large_s < 0.002:  # too fast to be a stall, and too short to time reliably
        return
    assert large_s / small_s < 9, f"{name} on {worst!r}: {small_s * 1000:.1f} ms -> {large_s * 1000:.1f} ms"
