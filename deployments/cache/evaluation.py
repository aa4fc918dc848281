"""`embassy eval cache`: precision and recall of hits through the real cache path.

Each `text_a` is stored (answer: its row number) through `store`, each `text_b` looked up
through `lookup`, against a real Redis. A hit on a label-1 pair is correct and a hit on a
label-0 pair a wrong answer (`strict_precision` also requires the pair's own question).
Recall counts against every label-1 pair. The curve replays each lookup's candidates at
other thresholds.
"""

from __future__ import annotations

import time

import numpy as np

from deployments.cache.redis_cache import RedisSemanticCache
from deployments.guardrail.evaluation import latency_summary
from embassy.graph_types import GenerationRequest, Message, RequestContext, SamplingOptions


def _request(text: str, region: str, model: str, tenant: str = "eval") -> GenerationRequest:
    return GenerationRequest(RequestContext("eval", tenant, region, "ZZ"), model, (Message("user", text),),
                             SamplingOptions(max_tokens=64, temperature=0.0))


async def eval_cache(rows: list[dict], cache: RedisSemanticCache, model: str, shared: bool = False,
                     thresholds=(0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99), progress=lambda *a: None) -> dict:
    """`shared`: every pair in one scope, so a lookup may hit another pair's question. QQP
    repeats questions across pairs with different labels, so there a near-identical hit on
    another pair can count as wrong; by default each pair gets its own scope (a tenant),
    which is the pairwise question the labels answer."""
    region = cache.region

    def tenant(i: int) -> str:
        return "eval" if shared else f"pair-{i}"

    # Embed the stored questions in batches (the same model store() uses), so that loading
    # thousands of entries takes seconds; each still goes through store().
    texts = [r["text_a"] for r in rows]
    vectors = np.concatenate([cache.embed(texts[i:i + 256]) for i in range(0, len(texts), 256)])
    for i, (r, v) in enumerate(zip(rows, vectors)):
        request = _request(r["text_a"], region, model, tenant(i))
        cache._remember(cache.scope(request).entry_key(), v)
        if not await cache.store(request, f"pair:{i}", completion_tokens=64):
            raise RuntimeError("the cache did not store an entry (Redis down or too slow?)")
        progress("store", i + 1, len(rows))
    outcomes, latencies = [], []
    for i, r in enumerate(rows):
        t0 = time.perf_counter()
        detail = await cache.lookup_detail(_request(r["text_b"], region, model, tenant(i)))
        latencies.append(time.perf_counter() - t0)
        outcomes.append((r, detail))
        progress("lookup", i + 1, len(rows))

    def same_entry(r: dict, answer: str) -> bool:
        return rows[int(answer.split(":")[1])]["text_a"] == r["text_a"]

    def score(served: list[tuple[dict, str]]) -> dict:
        # As specified: a hit on a label-1 pair is correct, on a label-0 pair a wrong answer.
        # "strict" also asks that the hit be the pair's own stored question (with every
        # pair's question in one index, a paraphrase may hit another pair's near-duplicate).
        good = sum(r["label"] == 1 for r, _ in served)
        strict = sum(r["label"] == 1 and same_entry(r, a) for r, a in served)
        return {"precision": round(good / len(served), 4) if served else None,
                "recall": round(good / max(positives, 1), 4), "hits": len(served),
                "strict_precision": round(strict / len(served), 4) if served else None}

    positives = sum(r["label"] == 1 for r in rows)
    curve = []
    for t in thresholds:
        served = []
        for r, d in outcomes:
            if d.lookup.reason == "exact":
                served.append((r, d.lookup.text))
                continue
            # Rule vetoes stand; the classifier's verdict is replayed at threshold t.
            first = next((c for c, v in d.scored if v.reason in (None, "classifier") and v.score >= t), None)
            if first is not None:
                served.append((r, first.answer))
        curve.append({"threshold": t, **score(served)})
    hits = [(r, d.lookup.text) for r, d in outcomes if d.lookup.status == "hit"]
    return {"n": len(rows), **score(hits), "threshold": cache.verifier.threshold,
            "scopes": "shared" if shared else "per pair",
            "lookup_ms": latency_summary(latencies) if latencies else None,
            "curve": curve}


def eval_settings(settings, redis_url: str):
    """The region's cache settings pointed at `redis_url`, with an index of the eval's own
    (never a live cache's) and a Redis deadline loose enough for bulk loading."""
    return settings.cache.model_copy(update={
        "redis_url": redis_url, "index": f"embassy-eval-{int(time.time())}",
        "timeout_ms": max(settings.cache.timeout_ms, 1000.0), "ttl_s": 3600})
