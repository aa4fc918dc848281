"""Ray Serve shim over the semantic-cache core. `graphs/` turns it into a deployment."""

from __future__ import annotations

import asyncio
import logging

from deployments.cache.core import PassThroughCache, SemanticCache
from embassy.errors import ConfigError
from embassy.graph_types import CacheLookup, GenerationRequest
from embassy.settings import EmbassySettings

log = logging.getLogger("embassy.cache")
EVICTION_POLL_S = 10.0


def build_cache(settings: EmbassySettings) -> SemanticCache:
    """The region's cache: Redis when enabled, the pass-through otherwise.

    Raises:
        RuntimeError: enabled with no Redis URL.
        ArtifactError: the shipped verifier is missing or corrupt.
    """
    if not settings.cache.enabled:
        return PassThroughCache()
    if not settings.cache.redis_url:
        raise RuntimeError("cache.redis_url is not set (`embassy serve` starts a Redis and sets it)")
    from embassy.topology import redis_url_problem

    if problem := redis_url_problem(settings.cache.redis_url):
        raise ConfigError(f"cache.redis_url: {problem}")
    from deployments.cache.redis_cache import RedisSemanticCache
    from deployments.cache.verifier import PairVerifier
    from embassy.embeddings import shared_embedder

    registry = settings.registry()
    versions = {m: registry[m].version for m in settings.models}
    verifier = PairVerifier(threshold=settings.cache.verifier_threshold)
    return RedisSemanticCache(settings.cache, settings.region, versions, shared_embedder().embed, verifier)


class CacheDeployment:
    def __init__(self, settings: dict) -> None:
        self.core = build_cache(EmbassySettings.model_validate(settings))
        self._poller = None

    async def lookup(self, request: GenerationRequest, corpus_version: str | None = None) -> CacheLookup:
        self._start_polling()
        return await self.core.lookup(request, corpus_version)

    async def store(self, request: GenerationRequest, answer: str, completion_tokens: int = 0,
                    corpus_version: str = "none") -> bool:
        return await self.core.store(request, answer, completion_tokens, corpus_version)

    async def invalidate(self, match: dict[str, str]) -> int:
        return await self.core.invalidate(**match)

    def _start_polling(self) -> None:
        if self._poller is None and hasattr(self.core, "count_evictions"):
            self._poller = asyncio.get_running_loop().create_task(self._poll_evictions())

    async def _poll_evictions(self) -> None:
        while True:
            try:
                await self.core.count_evictions()
            except Exception:  # Redis away: the lookups already say so
                pass
            await asyncio.sleep(EVICTION_POLL_S)

    async def ready(self) -> bool:
        return True
