"""Ray Serve shim over the semantic-cache core. `graphs/` turns it into a deployment."""

from __future__ import annotations

from deployments.cache.core import PassThroughCache
from embassy.graph_types import CacheLookup, GenerationRequest


class CacheDeployment:
    def __init__(self, settings: dict) -> None:
        self.core = PassThroughCache()

    async def lookup(self, request: GenerationRequest) -> CacheLookup:
        return await self.core.lookup(request)

    async def store(self, request: GenerationRequest, answer: str) -> None:
        await self.core.store(request, answer)

    async def ready(self) -> bool:
        return True
