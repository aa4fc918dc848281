"""The semantic cache against a real Redis (Redis 8 + RediSearch from PyPI wheels, started
on a free loopback port), with the real embedder and the trained verifier."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis

from deployments.cache.redis_cache import RedisSemanticCache
from deployments.cache.verifier import PairVerifier
from embassy import metrics
from embassy.embeddings import shared_embedder
from embassy.graph_types import GenerationRequest, Message, RequestContext, SamplingOptions
from embassy.redis_server import start_redis
from embassy.settings import CacheSettings

MODEL = "smollm2-135m-instruct"
Q = "Which documents do I need to export machine parts to Germany?"
PARAPHRASE = "What documents are required to export machine parts to Germany?"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = start_redis(tmp_path_factory.mktemp("redis"), maxmemory_mb=64)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def verifier():
    return PairVerifier()


def make_cache(url: str, verifier, index: str | None = None, version: str = "1", **over) -> RedisSemanticCache:
    settings = CacheSettings(redis_url=url, index=index or f"t-{uuid.uuid4().hex[:8]}", **over)
    return RedisSemanticCache(settings, "eu", {MODEL: version}, shared_embedder().embed, verifier)


@pytest.fixture
async def cache(redis_server, verifier):
    c = make_cache(redis_server.url, verifier)
    yield c
    try:
        await c.index.delete(drop=True)
    finally:
        await c.close()


def req(text: str, tenant: str = "acme", region: str = "eu", system: str | None = None,
        history: tuple[Message, ...] = (), temperature: float = 0.0, model: str = MODEL,
        max_tokens: int = 64) -> GenerationRequest:
    msgs = ((Message("system", system),) if system else ()) + history + (Message("user", text),)
    return GenerationRequest(RequestContext(uuid.uuid4().hex, tenant, region, "EU"), model, msgs,
                             SamplingOptions(max_tokens=max_tokens, temperature=temperature))


async def test_exact_hit_folds_case_and_punctuation(cache):
    assert (await cache.lookup(req(Q))).status == "miss"
    assert await cache.store(req(Q), "An EX-1 export declaration and a commercial invoice.", 12)
    for text in (Q, Q.lower().rstrip("?"), f"  {Q} "):
        exact = await cache.lookup(req(text))
        assert (exact.status, exact.reason, exact.completion_tokens) == ("hit", "exact", 12), text


async def test_a_paraphrase_is_served_only_when_the_verifier_accepts_it(redis_server, verifier):
    """The meaning tier serves a paraphrase exactly when the verifier's probability reaches
    the threshold in force (calibrated by default; an operator may set another)."""
    score = float(verifier.probabilities([PARAPHRASE], [Q])[0])
    below = make_cache(redis_server.url, PairVerifier(verifier.root, threshold=min(0.999, score + 0.01)))
    above = make_cache(redis_server.url, PairVerifier(verifier.root, threshold=score - 0.01),
                       index=below.settings.index)
    try:
        await below.store(req(Q), "An EX-1 export declaration and a commercial invoice.", 12)
        missed = await below.lookup(req(PARAPHRASE))
        assert missed.status == "miss" and "failed verification" in missed.reason
        hit = await above.lookup(req(PARAPHRASE))
        assert (hit.status, hit.reason) == ("hit", "semantic")
        assert hit.text == "An EX-1 export declaration and a commercial invoice."
    finally:
        await below.index.delete(drop=True)
        await below.close()
        await above.close()


@pytest.mark.parametrize("other", [
    dict(tenant="globex"), dict(region="us"), dict(system="You answer in French."),
    dict(history=(Message("user", "We ship from Poland."), Message("assistant", "Noted."))),
    dict(max_tokens=16),
], ids=["tenant", "region", "system_prompt", "conversation", "max_tokens"])
async def test_entries_never_cross_their_scope(cache, other):
    await cache.store(req(Q), "answer for acme in eu", 5)
    for text in (Q, PARAPHRASE):
        got = await cache.lookup(req(text, **other))
        assert got.status == "miss", (other, text, got)


async def test_another_model_version_misses(cache, redis_server, verifier):
    await cache.store(req(Q), "answer of version 1", 5)
    newer = make_cache(redis_server.url, verifier, index=cache.settings.index, version="2")
    try:
        assert (await newer.lookup(req(Q))).status == "miss"
        assert (await newer.lookup(req(PARAPHRASE))).status == "miss"
    finally:
        await newer.close()


async def test_another_corpus_version_misses(cache):
    await cache.store(req(Q), "answer from corpus c1", 5, corpus_version="c1")
    assert (await cache.lookup(req(Q), corpus_version="c1")).status == "hit"
    assert (await cache.lookup(req(Q), corpus_version="c2")).status == "miss"
    assert (await cache.lookup(req(PARAPHRASE), corpus_version="c2")).status == "miss"


async def test_hot_sampling_is_neither_stored_nor_served(cache):
    assert not await cache.store(req(Q, temperature=0.7), "a sampled answer", 5)
    assert (await cache.lookup(req(Q))).status == "miss"
    await cache.store(req(Q), "the answer", 5)
    got = await cache.lookup(req(Q, temperature=0.7))
    assert got.status == "bypass" and "temperature 0.7" in got.reason


@pytest.mark.parametrize("stored, asked", [
    ("How do I export goods to Germany?", "How do I import goods from Germany?"),
    ("What is the duty on shipments under 150 EUR?", "What is the duty on shipments under 1500 EUR?"),
    ("Is a certificate of origin required for HS code 8471.30?",
     "Is a certificate of origin required for HS code 8471.41?"),
    ("Do I need an import licence for textiles?", "Do I not need an import licence for textiles?"),
    ("Can I ship lithium batteries to France?", "Can I ship lithium batteries to Spain?"),
], ids=["direction", "number", "code", "negation", "place"])
async def test_meaning_mismatches_miss(cache, stored, asked):
    await cache.store(req(stored), "an answer to the stored question", 5)
    got = await cache.lookup(req(asked))
    assert got.status == "miss", got


async def test_ttl_expires_and_a_hit_does_not_extend_it(redis_server, verifier):
    c = make_cache(redis_server.url, verifier, ttl_s=2)
    try:
        await c.store(req(Q), "short-lived", 5)
        key = f"{c.settings.index}:{c.scope(req(Q)).entry_key()}"
        ttl_before = await c.client.pttl(key)
        await asyncio.sleep(0.5)
        assert (await c.lookup(req(Q))).status == "hit"
        assert await c.client.pttl(key) < ttl_before - 400  # still counting down from the store
        await asyncio.sleep(2)
        assert (await c.lookup(req(Q))).status == "miss"
    finally:
        await c.index.delete(drop=True)
        await c.close()


async def test_invalidation_by_tenant_model_version_corpus_and_region(cache):
    await cache.store(req(Q), "a", 1, corpus_version="c1")
    await cache.store(req(Q, tenant="globex"), "b", 1, corpus_version="c1")
    await cache.store(req(PARAPHRASE, tenant="globex"), "c", 1, corpus_version="c2")
    assert await cache.invalidate(tenant="acme") == 1
    assert (await cache.lookup(req(Q))).status == "miss"
    assert await cache.invalidate(corpus_version="c2") == 1
    assert await cache.invalidate(model_version="2") == 0
    assert await cache.invalidate(model=MODEL, model_version="1") == 1
    await cache.store(req(Q), "a", 1)
    assert await cache.invalidate(region="eu") == 1
    with pytest.raises(ValueError):
        await cache.invalidate()
    with pytest.raises(ValueError):
        await cache.invalidate(colour="red")


async def test_redis_down_bypasses_and_the_cache_recovers(tmp_path, verifier):
    server = start_redis(tmp_path / "r1")
    c = make_cache(server.url, verifier, retry_after_s=0.5)
    try:
        await c.store(req(Q), "before the outage", 5)
        server.stop()
        t0 = time.perf_counter()
        got = await c.lookup(req(Q))
        assert got.status == "bypass" and "unavailable" in got.reason
        assert time.perf_counter() - t0 < 1.0
        assert not await c.store(req(Q), "during the outage", 5)
        server = start_redis(tmp_path / "r2", port=server.port)  # back, and empty
        await asyncio.sleep(0.6)
        assert (await c.lookup(req(Q))).status == "miss"  # tries Redis again by itself
        assert await c.store(req(Q), "after the outage", 5)
        assert (await c.lookup(req(Q))).text == "after the outage"
    finally:
        await c.close()
        server.stop()


BUSY_LOOP = """local t = redis.call('TIME'); local start = t[1] * 1e6 + t[2]
repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] - start > 1000000
return 1"""


async def test_slow_redis_is_bypassed_within_the_timeout(redis_server, verifier):
    c = make_cache(redis_server.url, verifier, timeout_ms=50, retry_after_s=0.2)
    # The blocking client waits as long as the script runs, however slow the machine is
    # (redis-py's default 5 s read timeout cut it off once under load).
    blocker = redis.Redis.from_url(redis_server.url, socket_timeout=60)
    try:
        await c.store(req(Q), "x", 1)
        # A script that spins for 1 s: Redis serves no one else meanwhile.
        task = asyncio.get_running_loop().run_in_executor(None, blocker.eval, BUSY_LOOP, 0)
        probe = redis.Redis.from_url(redis_server.url, socket_timeout=0.03)
        while True:  # until Redis stops answering: the script is running
            try:
                probe.ping()
                await asyncio.sleep(0.01)
            except redis.TimeoutError:
                break
        probe.close()
        t0 = time.perf_counter()
        got = await c.lookup(req(Q))
        elapsed = time.perf_counter() - t0
        await task  # before any assertion: the clean-up needs Redis back
        assert got.status == "bypass" and "unavailable" in got.reason
        assert elapsed < 0.5  # the 50 ms deadline, not the 1 s stall
    finally:
        blocker.close()
        await c.index.delete(drop=True)
        await c.close()


async def test_evictions_are_counted(tmp_path, verifier):
    server = start_redis(tmp_path / "small", maxmemory_mb=2, eviction_policy="allkeys-lru")
    c = make_cache(server.url, verifier, timeout_ms=2000)
    try:
        before = metrics.CACHE_EVICTIONS.labels("eu")._value.get()
        await c.count_evictions()
        filler = "x" * 20_000
        for i in range(300):  # ~6 MB into a 2 MB Redis
            await c.store(req(f"question number {i}"), filler, 1)
        evicted = await c.count_evictions()
        assert evicted > 0
        assert metrics.CACHE_EVICTIONS.labels("eu")._value.get() - before == evicted
    finally:
        await c.close()
        server.stop()


def test_eval_cache_command_starts_its_own_redis_and_prints_one_json_object(tmp_path):
    import json
    import subprocess
    import sys

    rows = [{"text_a": "How do I get an EORI number?", "text_b": "How can I obtain an EORI number?", "label": 1},
            {"text_a": "How do I export goods to Germany?", "text_b": "How do I import goods from Germany?",
             "label": 0},
            {"text_a": "What is a bill of lading?", "text_b": "What is a bill of lading?", "label": 1}]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = subprocess.run([sys.executable, "-m", "embassy.cli", "eval", "cache", "--pairs", str(pairs), "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert {"n", "precision", "recall", "lookup_ms", "curve"} <= set(result)
    assert result["n"] == 3 and result["precision"] == 1.0  # the direction pair never hits
    assert result["recall"] >= 0.5  # the identical pair hits at least
    assert set(result["lookup_ms"]) == {"p50", "p99"}


async def test_an_index_from_an_older_version_is_upgraded_in_place(redis_server, verifier):
    """An index without the `subject` tag (made before erasure existed) gets it; its
    entries stay and can be erased by subject."""
    from redisvl.index import AsyncSearchIndex

    from deployments.cache.redis_cache import index_schema

    name = f"t-{uuid.uuid4().hex[:8]}"
    old = index_schema(name)
    old["fields"] = [f for f in old["fields"] if f["name"] != "subject"]
    client = redis.asyncio.Redis.from_url(redis_server.url)
    await AsyncSearchIndex.from_dict(old, redis_client=client).create()
    c = make_cache(redis_server.url, verifier, index=name)
    try:
        from dataclasses import replace

        from embassy.graph_types import RequestContext

        request = req(Q)
        assert await c.store(replace(request, ctx=RequestContext("r1", "acme", "eu", "EU", "cust-9")), "x", 1)
        assert (await c.lookup(req(Q))).status == "hit"
        assert await c.invalidate(subject="cust-9") == 1
        assert (await c.lookup(req(Q))).status == "miss"
    finally:
        await c.index.delete(drop=True)
        await c.close()
        await client.aclose()
