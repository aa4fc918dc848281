"""Semantic-cache node core: the contract, and the pass-through used when the cache is off."""

from __future__ import annotations

from abc import ABC, abstractmethod

from embassy.graph_types import CacheLookup, GenerationRequest


class SemanticCache(ABC):
    @abstractmethod
    async def lookup(self, request: GenerationRequest, corpus_version: str | None = None) -> CacheLookup:
        """A hit with its answer, a miss, or a bypass (with the reason) for this screened request.
        `corpus_version`, when known, restricts hits to answers given under that corpus."""

    @abstractmethod
    async def store(self, request: GenerationRequest, answer: str, completion_tokens: int = 0,
                    corpus_version: str = "none") -> bool:
        """Offer a screened answer; the cache decides whether it may be kept. True when kept."""

    @abstractmethod
    async def invalidate(self, **match: str) -> int:
        """Remove the entries whose tags equal all of `match`; return how many."""

    async def close(self) -> None:
        return None


class PassThroughCache(SemanticCache):
    """Never hits, stores nothing (`cache.enabled: false`)."""

    async def lookup(self, request: GenerationRequest, corpus_version: str | None = None) -> CacheLookup:
        return CacheLookup(status="bypass", reason="cache disabled")

    async def store(self, request: GenerationRequest, answer: str, completion_tokens: int = 0,
                    corpus_version: str = "none") -> bool:
        return False

    async def invalidate(self, **match: str) -> int:
        return 0
