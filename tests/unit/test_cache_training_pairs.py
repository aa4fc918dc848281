"""The verifier's training pairs implied by the labels (transitivity), on a small hand-made
set: pure logic, no model."""

from __future__ import annotations

import random

from deployments.cache.training import implied_pairs


def _row(a: str, b: str, label: int) -> dict:
    return {"text_a": a, "text_b": b, "label": label}


ROWS = [_row("A1", "A2", 1), _row("A2", "A3", 1), _row("A3", "X", 0), _row("B1", "B2", 1), _row("B1", "C", 0),
        _row("B2", "B1", 0)]  # the last contradicts the first B pair: it implies nothing


def _labels(rows: list[dict]) -> dict[frozenset, int]:
    return {frozenset((r["text_a"], r["text_b"])): r["label"] for r in rows}


def test_same_question_is_transitive_and_different_spreads_over_a_group():
    out = implied_pairs(ROWS, random.Random(0), per_question=5)
    labels = _labels(out)
    assert out[:len(ROWS)] == ROWS  # the labelled pairs come first, untouched
    assert labels[frozenset(("A1", "A3"))] == 1  # A1 = A2 = A3
    assert labels[frozenset(("A1", "X"))] == 0 and labels[frozenset(("A2", "X"))] == 0  # A3 != X
    assert labels[frozenset(("B2", "C"))] == 0
    extra = out[len(ROWS):]
    assert len(_labels(extra)) == len(extra) and not set(_labels(extra)) & set(_labels(ROWS))  # each pair once
    assert all(r["text_a"] != r["text_b"] for r in out)


def test_a_large_group_adds_a_bounded_number_of_pairs():
    chain = [_row(f"Q{i}", f"Q{i + 1}", 1) for i in range(60)]
    out = implied_pairs(chain, random.Random(0), per_question=2)
    assert 60 < len(out) <= 60 + 61 * 3  # not the 1,830 pairs of the whole group
    assert all(r["label"] == 1 for r in out)


def test_it_is_deterministic_for_a_seed():
    assert implied_pairs(ROWS, random.Random(3)) == implied_pairs(ROWS, random.Random(3))
