"""Coalescing of streamed deltas before they cross a Ray hop.

Every item a streaming replica yields is one gRPC message to the ingress, and on a small
CPU host those messages compete with the engine for the same core. Ray Serve LLM batches
its stream for the same reason (`stream_batching_interval_ms`, 50 ms by default); Embassy
differs in two ways: the first delta and the last one go out at once (time to first token
and the end of a stream are never delayed), and a held delta waits at most `interval_s`,
not a full interval after every message.

Written here rather than reusing Ray's `Batcher`, which is internal to `ray.llm` and
delays the first token by a whole interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import AsyncIterator

from embassy.graph_types import GenerationDelta


def merge(a: GenerationDelta, b: GenerationDelta) -> GenerationDelta:
    return GenerationDelta(text=a.text + b.text,
                           completion_tokens=a.completion_tokens + b.completion_tokens,
                           prompt_tokens=b.prompt_tokens or a.prompt_tokens,
                           finish_reason=b.finish_reason)


async def coalesce(deltas: AsyncIterator[GenerationDelta], interval_s: float
                   ) -> AsyncIterator[GenerationDelta]:
    """Yield `deltas` merged so that at most one message leaves per `interval_s`.

    No delta is held longer than `interval_s` after it arrived; the first and the
    finishing delta are never held. `interval_s <= 0` passes every delta through.
    """
    if interval_s <= 0:
        async for delta in deltas:
            yield delta
        return
    iterator = deltas.__aiter__()
    pending: GenerationDelta | None = None
    next_item: asyncio.Task | None = None
    last_sent = float("-inf")
    try:
        while True:
            if next_item is None:
                next_item = asyncio.ensure_future(iterator.__anext__())
            if pending is None:
                await asyncio.wait({next_item})
            else:
                left = last_sent + interval_s - time.monotonic()
                done, _ = await asyncio.wait({next_item}, timeout=max(left, 0))
                if not done:  # the interval is up while the engine is still working
                    yield pending
                    pending, last_sent = None, time.monotonic()
                    continue
            try:
                delta = next_item.result()
            except StopAsyncIteration:
                break
            finally:
                next_item = None
            pending = delta if pending is None else merge(pending, delta)
            if delta.finish_reason is not None or time.monotonic() - last_sent >= interval_s:
                yield pending
                pending, last_sent = None, time.monotonic()
        if pending is not None:
            yield pending
    finally:
        # Cancelled (client gone) or done: stop pulling, so the source's own cleanup
        # (the engine abort) runs now, not when the garbage collector gets to it.
        if next_item is not None:
            next_item.cancel()
            with contextlib.suppress(BaseException):
                await next_item
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()
