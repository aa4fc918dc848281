"""The semantic cache on Redis: exact tier, then meaning tier with verification.

RedisVL's index API, not its `SemanticCache`: that class extends an entry's TTL on every
hit, and here the TTL is a bound on staleness (a hit must not keep an answer alive), and
an entry's scope is several exact fields plus a verifier, not one distance threshold.

Lookup: the exact tier reads the entry stored under this scope and this very text (one
HGETALL, no embedding); otherwise the meaning tier embeds the last user message, takes
the nearest entries of the same scope (TAG filter) above `min_cosine`, and serves the
first that the verifier accepts. Every Redis call has a deadline (`timeout_ms`); a failure
or a timeout bypasses the cache for `retry_after_s`, then the next request tries again,
so the cache comes back by itself when Redis does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from deployments.cache.core import SemanticCache
from deployments.cache.scope import CacheScope, scope_of, uncacheable_reason
from deployments.cache.verifier import PairVerifier, Verdict
from embassy import metrics
from embassy.graph_types import CacheLookup, GenerationRequest
from embassy.settings import CacheSettings

log = logging.getLogger("embassy.cache")

DIMS = 384  # all-MiniLM-L6-v2
TAGS = ("scope", "tenant", "region", "model", "model_version", "corpus_version", "subject")
NO_SUBJECT = "-"  # entries from requests that named no data subject


def index_schema(name: str) -> dict:
    return {
        "index": {"name": name, "prefix": name, "storage_type": "hash"},
        "fields": [*({"name": t, "type": "tag"} for t in TAGS),
                   {"name": "embedding", "type": "vector",
                    "attrs": {"dims": DIMS, "distance_metric": "cosine", "algorithm": "hnsw",
                              "datatype": "float32"}}],
    }


class RedisUnavailable(Exception):
    pass


@dataclass(frozen=True)
class Candidate:
    key: str
    query: str
    answer: str
    cosine: float
    corpus_version: str
    completion_tokens: int


@dataclass(frozen=True)
class Detail:
    """A lookup's full outcome, for the eval command: every candidate with its verdict,
    nearest first."""

    lookup: CacheLookup
    scored: tuple[tuple[Candidate, Verdict], ...] = ()


class RedisSemanticCache(SemanticCache):
    def __init__(self, settings: CacheSettings, region: str, model_versions: dict[str, str],
                 embed, verifier: PairVerifier) -> None:
        """`embed(list[str]) -> np.ndarray` gives unit-length rows (the guard's embedder)."""
        from redis.asyncio import Redis
        from redisvl.index import AsyncSearchIndex

        self.settings = settings
        self.region = region
        self.model_versions = model_versions
        self.embed = embed
        self.verifier = verifier
        timeout = settings.timeout_ms / 1000
        self.client = Redis.from_url(settings.redis_url, socket_timeout=max(timeout, 0.5),
                                     socket_connect_timeout=max(timeout, 0.5))
        self.index = AsyncSearchIndex.from_dict(index_schema(settings.index), redis_client=self.client)
        self._down_until = 0.0
        self._index_ready = False
        self._evicted_seen: int | None = None
        # Embeddings of recent misses, so storing their answer does not embed again.
        self._recent: OrderedDict[str, np.ndarray] = OrderedDict()

    # -- plumbing ---------------------------------------------------------------------

    async def _ensure_index(self) -> None:
        """Create the index once at start and after an outage (Redis may come back empty).
        FT.CREATE can take longer than a lookup's deadline on a busy host: it gets its own."""
        if not self._index_ready:
            async with asyncio.timeout(max(1.0, self.settings.timeout_ms / 1000)):
                await self.index.create(overwrite=False)
                await self._upgrade_index()
            self._index_ready = True

    async def _upgrade_index(self) -> None:
        """An index made by an older version may lack a field this one filters on (such as
        `subject`): redefine it in place. Entries stay (RediSearch re-indexes the hashes)."""
        def name(attribute) -> str:
            value = attribute[attribute.index("identifier") + 1]
            return value.decode() if isinstance(value, bytes) else value
        present = {name(a) for a in (await self.index.info())["attributes"]}
        missing = sorted(set(TAGS) - present)
        if missing:
            log.warning("cache index %s lacks %s: redefining it (entries are kept)", self.settings.index, missing)
            await self.index.create(overwrite=True, drop=False)

    def _key(self, scope: CacheScope) -> str:
        return f"{self.settings.index}:{scope.entry_key()}"

    async def _redis(self, awaitable):
        """Run one Redis call under the deadline; turn any failure into RedisUnavailable."""
        try:
            await self._ensure_index()
            async with asyncio.timeout(self.settings.timeout_ms / 1000):
                return await awaitable
        except TimeoutError:
            self._trip("timeout")
            raise RedisUnavailable("timeout") from None
        except Exception as exc:  # redis errors, connection refused, a half-open socket
            self._trip(type(exc).__name__)
            raise RedisUnavailable(str(exc)) from None
        finally:
            if asyncio.iscoroutine(awaitable):
                awaitable.close()  # not awaited when the index could not be made; no-op otherwise

    def _trip(self, why: str) -> None:
        if time.monotonic() >= self._down_until:
            log.warning("cache: Redis unavailable (%s); bypassing the cache for %.1fs",
                        why, self.settings.retry_after_s)
        self._down_until = time.monotonic() + self.settings.retry_after_s
        self._index_ready = False  # Redis may come back empty: create the index again

    def _bypass(self, reason: str, label: str) -> CacheLookup:
        metrics.CACHE_LOOKUPS.labels(self.region, "bypass", "none").inc()
        metrics.CACHE_BYPASS.labels(self.region, label).inc()
        return CacheLookup("bypass", reason=reason)

    def scope(self, request: GenerationRequest) -> CacheScope:
        return scope_of(request, request.model_version or self.model_versions.get(request.model, "unknown"))

    def _remember(self, key: str, vector: np.ndarray) -> None:
        self._recent[key] = vector
        if len(self._recent) > 1024:
            self._recent.popitem(last=False)

    # -- lookup -----------------------------------------------------------------------

    async def lookup(self, request: GenerationRequest, corpus_version: str | None = None) -> CacheLookup:
        return (await self.lookup_detail(request, corpus_version)).lookup

    async def lookup_detail(self, request: GenerationRequest, corpus_version: str | None = None) -> Detail:
        """`corpus_version`: the version the retriever last reported for this tenant; entries
        of another version are not candidates (the ingress re-checks the served one)."""
        if reason := uncacheable_reason(request, self.settings.max_temperature):
            return Detail(self._bypass(reason, "uncacheable"))
        if time.monotonic() < self._down_until:
            return Detail(self._bypass("cache unavailable (Redis down or slow)", "redis_unavailable"))
        t0 = time.perf_counter()
        scope = self.scope(request)
        try:
            exact = await self._redis(self.client.hgetall(self._key(scope)))
            if exact and (corpus_version is None or exact[b"corpus_version"].decode() == corpus_version):
                return Detail(self._hit(request, _decode(exact), "exact", t0))
            vector = await asyncio.to_thread(lambda: self.embed([scope.query])[0])
            self._remember(scope.entry_key(), vector)
            candidates = await self._redis(self._nearest(scope, vector, corpus_version))
        except RedisUnavailable:
            return Detail(self._bypass("cache unavailable (Redis down or slow)", "redis_unavailable"))
        if not candidates:
            return Detail(self._miss("no similar entry"))
        verdicts = await asyncio.to_thread(self.verifier.verify, scope.query, [c.query for c in candidates])
        scored = tuple(zip(candidates, verdicts))
        for c, v in scored:
            if v.accepted:
                return Detail(self._hit(request, c.__dict__, "semantic", t0), scored)
            metrics.CACHE_REJECTED.labels(self.region, "classifier" if v.reason == "classifier" else "rule").inc()
        return Detail(self._miss(f"{len(candidates)} similar entries failed verification"), scored)

    async def _nearest(self, scope: CacheScope, vector: np.ndarray, corpus_version: str | None) -> list[Candidate]:
        from redisvl.query import VectorRangeQuery
        from redisvl.query.filter import Tag

        filt = Tag("scope") == scope.key
        if corpus_version is not None:
            filt = filt & (Tag("corpus_version") == corpus_version)
        query = VectorRangeQuery(
            vector=vector.astype(np.float32).tolist(), vector_field_name="embedding",
            distance_threshold=1 - self.settings.min_cosine, num_results=self.settings.candidates,
            return_fields=["query", "answer", "corpus_version", "completion_tokens", "vector_distance"],
            filter_expression=filt)
        rows = sorted(await self.index.query(query), key=lambda r: float(r["vector_distance"]))
        return [Candidate(r["id"], r["query"], r["answer"], 1 - float(r["vector_distance"]), r["corpus_version"],
                          int(r.get("completion_tokens") or 0)) for r in rows]

    def _hit(self, request: GenerationRequest, entry: dict, tier: str, t0: float) -> CacheLookup:
        metrics.CACHE_LOOKUPS.labels(self.region, "hit", tier).inc()
        metrics.CACHE_HIT_LATENCY.labels(self.region, tier).observe(time.perf_counter() - t0)
        tokens = int(entry.get("completion_tokens") or 0)
        metrics.CACHE_TOKENS_SAVED.labels(self.region, request.model, request.ctx.tenant).inc(tokens)
        return CacheLookup("hit", text=entry["answer"], reason=tier, corpus_version=entry["corpus_version"],
                           completion_tokens=tokens)

    def _miss(self, reason: str) -> CacheLookup:
        metrics.CACHE_LOOKUPS.labels(self.region, "miss", "none").inc()
        return CacheLookup("miss", reason=reason)

    # -- store ------------------------------------------------------------------------

    async def store(self, request: GenerationRequest, answer: str, completion_tokens: int = 0,
                    corpus_version: str = "none") -> bool:
        """Keep an answer that the ingress found fit to cache (screened, finished, allowed)."""
        if uncacheable_reason(request, self.settings.max_temperature):
            metrics.CACHE_STORES.labels(self.region, "uncacheable").inc()
            return False
        if time.monotonic() < self._down_until:
            metrics.CACHE_STORES.labels(self.region, "redis_unavailable").inc()
            return False
        scope = self.scope(request)
        vector = self._recent.pop(scope.entry_key(), None)
        if vector is None:
            vector = await asyncio.to_thread(lambda: self.embed([scope.query])[0])
        entry = {"query": scope.query, "answer": answer, "completion_tokens": completion_tokens,
                 "created_at": time.time(), "scope": scope.key, "tenant": scope.tenant,
                 "region": scope.region, "model": scope.model, "model_version": scope.model_version,
                 "corpus_version": corpus_version, "subject": request.ctx.subject or NO_SUBJECT,
                 "embedding": vector.astype(np.float32).tobytes()}
        try:
            await self._redis(self.index.load([entry], keys=[self._key(scope)], ttl=self.settings.ttl_s))
        except RedisUnavailable:
            metrics.CACHE_STORES.labels(self.region, "redis_unavailable").inc()
            return False
        metrics.CACHE_STORES.labels(self.region, "stored").inc()
        return True

    # -- administration ---------------------------------------------------------------

    async def invalidate(self, **match: str) -> int:
        """Remove every entry whose tags equal all of `match` (tenant, region, model,
        model_version, corpus_version); at least one is required. Returns the count."""
        from redisvl.query.filter import Tag

        unknown = set(match) - set(TAGS)
        if unknown or not match:
            raise ValueError(f"invalidate by one or more of {TAGS[1:]}; got {sorted(match) or 'none'}")
        filt = None
        for name, value in sorted(match.items()):
            f = Tag(name) == value
            filt = f if filt is None else filt & f
        await self._ensure_index()
        result = await self.index.drop_by_filter(filt)
        metrics.CACHE_INVALIDATED.labels(self.region).inc(result.processed)
        return result.processed

    async def count_evictions(self) -> int:
        """Move Redis's evicted-keys counter into the metric; return Redis's total."""
        stats = await self._redis(self.client.info("stats"))
        total = int(stats.get("evicted_keys", 0))
        if self._evicted_seen is not None and total >= self._evicted_seen:
            metrics.CACHE_EVICTIONS.labels(self.region).inc(total - self._evicted_seen)
        self._evicted_seen = total
        return total

    async def close(self) -> None:
        await self.client.aclose()


def _decode(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items() if k != b"embedding"}
