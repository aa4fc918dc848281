"""`embassy eval cache`: precision and recall of hits through the real cache path.

Each `text_a` is stored (answer: its row number) through `store`, each `text_b` looked up
through `lookup`, against a real Redis. A hit on a label-1 pair that returns that pair's
question is correct; any other hit is a wrong answer. Recall counts against every
label-1 pair. The curve replays each lookup's verified candidates at other thresholds.
"""

from __future__ import annotations

import time

import numpy as np

from deployments.cache.redis_cache import RedisSemanticCache
from embassy.graph_types import GenerationRequest, Message, RequestContext, SamplingOptions


def _request(text: str, region: str, model: str) -> GenerationRequest:
    return GenerationRequest(RequestContext("eval", "eval", region, "ZZ"), model, (Message("user", text),),
                             SamplingOptions(max_tokens=64, temperature=0.0))


async def eval_cache(rows: list[dict], cache: RedisSemanticCache, model: str,
                     thresholds=(0.5, 0.7, 0.8, 0.9, 0.95, 0.98), progress=lambda *a: None) -> dict:
    region = cache.region
    # Embed the stored questions in batches (the same model store() uses), so that loading
    # thousands of entries takes seconds; each still goes through store().
    texts = [r["text_a"] for r in rows]
    vectors = np.concatenate([cache.embed(texts[i:i + 256]) for i in range(0, len(texts), 256)])
    for i, (r, v) in enumerate(zip(rows, vectors)):
        request = _request(r["text_a"], region, model)
        cache._remember(cache.scope(request).entry_key(), v)
        if not await cache.store(request, f"pair:{i}", completion_tokens=64):
            raise RuntimeError("the cache did not store an entry (Redis down or too slow?)")
        progress("store", i + 1, len(rows))
    outcomes, latencies = [], []
    for i, r in enumerate(rows):
        t0 = time.perf_counter()
        detail = await cache.lookup_detail(_request(r["text_b"], region, model))
        latencies.append((time.perf_counter() - t0) * 1000)
        outcomes.append((r, detail))
        progress("lookup", i + 1, len(rows))

    def correct(r: dict, answer: str) -> bool:
        j = int(answer.split(":")[1])
        return r["label"] == 1 and rows[j]["text_a"] == r["text_a"]

    positives = sum(r["label"] == 1 for r in rows)
    hits = [(r, d.lookup.text) for r, d in outcomes if d.lookup.status == "hit"]
    good = sum(correct(r, a) for r, a in hits)
    curve = []
    for t in thresholds:
        served = []
        for r, d in outcomes:
            if d.lookup.reason == "exact":
                served.append((r, d.lookup.text))
                continue
            first = next((c for c, v in d.scored if v.reason is None and v.score >= t), None)
            if first is not None:
                served.append((r, first.answer))
        n_good = sum(correct(r, a) for r, a in served)
        curve.append({"threshold": t, "precision": round(n_good / len(served), 4) if served else None,
                      "recall": round(n_good / max(positives, 1), 4), "hits": len(served)})
    lat = np.array(latencies)
    return {"n": len(rows), "precision": round(good / len(hits), 4) if hits else None,
            "recall": round(good / max(positives, 1), 4), "hits": len(hits),
            "threshold": cache.verifier.threshold,
            "lookup_ms": {"p50": round(float(np.percentile(lat, 50)), 2),
                          "p99": round(float(np.percentile(lat, 99)), 2)} if len(lat) else None,
            "curve": curve}


def eval_settings(settings, redis_url: str):
    """The region's cache settings pointed at `redis_url`, with an index of the eval's own
    (never a live cache's) and a Redis deadline loose enough for bulk loading."""
    return settings.cache.model_copy(update={
        "redis_url": redis_url, "index": f"embassy-eval-{int(time.time())}",
        "timeout_ms": max(settings.cache.timeout_ms, 1000.0), "ttl_s": 3600})
