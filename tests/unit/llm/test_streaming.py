"""Delta coalescing logic, driven by a deterministic fake token source (no engine)."""

from __future__ import annotations

import asyncio
import time

import pytest

from deployments.llm.streaming import coalesce
from embassy.graph_types import GenerationDelta


def delta(text: str, finish: str | None = None) -> GenerationDelta:
    return GenerationDelta(text=text, completion_tokens=1, prompt_tokens=7, finish_reason=finish)


async def fake_source(gaps_s: list[float], events: list[str] | None = None):
    """Yields one token after each gap; records its own cleanup in `events`."""
    try:
        for i, gap in enumerate(gaps_s):
            await asyncio.sleep(gap)
            yield delta(f"t{i} ", "length" if i == len(gaps_s) - 1 else None)
    finally:
        if events is not None:
            events.append("closed")


async def collect(source, interval_s: float) -> list[tuple[float, GenerationDelta]]:
    t0 = time.monotonic()
    return [(time.monotonic() - t0, d) async for d in coalesce(source, interval_s)]


def test_zero_interval_passes_every_delta_through():
    out = asyncio.run(collect(fake_source([0.0] * 5), 0))
    assert [d.text for _, d in out] == ["t0 ", "t1 ", "t2 ", "t3 ", "t4 "]


def test_fast_tokens_are_merged_and_nothing_is_lost():
    out = asyncio.run(collect(fake_source([0.002] * 40), 0.05))
    deltas = [d for _, d in out]
    assert "".join(d.text for d in deltas) == "".join(f"t{i} " for i in range(40))
    assert sum(d.completion_tokens for d in deltas) == 40
    assert all(d.prompt_tokens == 7 for d in deltas)
    assert deltas[0].text == "t0 "  # the first token is not held back
    assert deltas[-1].finish_reason == "length"
    assert [d.finish_reason for d in deltas[:-1]] == [None] * (len(deltas) - 1)
    assert len(deltas) < 10


def test_a_held_token_waits_at_most_one_interval():
    # Two quick tokens, then the source stalls for 0.5 s: the second must not wait for the stall.
    out = asyncio.run(collect(fake_source([0.0, 0.001, 0.5]), 0.05))
    assert [d.text for _, d in out] == ["t0 ", "t1 ", "t2 "]
    assert out[1][0] < 0.3


def test_finishing_delta_is_sent_at_once():
    out = asyncio.run(collect(fake_source([0.0, 0.001, 0.001]), 10.0))
    assert out[-1][1].finish_reason == "length" and out[-1][0] < 1.0
    assert "".join(d.text for _, d in out) == "t0 t1 t2 "


def test_closing_the_consumer_closes_the_source():
    events: list[str] = []

    async def consume_two():
        stream = coalesce(fake_source([0.01] * 100, events), 0.0001)
        got = [await stream.__anext__(), await stream.__anext__()]
        await stream.aclose()
        return got

    assert len(asyncio.run(consume_two())) == 2
    assert events == ["closed"]


def test_cancelling_the_consumer_closes_the_source():
    events: list[str] = []

    async def consume_then_cancel():
        async def run():
            async for _ in coalesce(fake_source([0.0, 5.0], events), 0.01):
                pass
        task = asyncio.create_task(run())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(consume_then_cancel())
    assert events == ["closed"]
