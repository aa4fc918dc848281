"""Semantic-cache node core: the contract, and the pass-through used until Redis lands."""

from __future__ import annotations

from abc import ABC, abstractmethod

from embassy.graph_types import CacheLookup, GenerationRequest


class SemanticCache(ABC):
    @abstractmethod
    async def lookup(self, request: GenerationRequest) -> CacheLookup:
        """Return a hit with its answer, a miss, or a bypass (with the reason) for this request."""

    @abstractmethod
    async def store(self, request: GenerationRequest, answer: str) -> None:
        """Offer an answer for storage; the cache decides whether it may be kept."""


class PassThroughCache(SemanticCache):
    """Pass-through: never hits, stores nothing. Stands in the graph so that the hop's cost
    is measured from day one; the semantic-cache issue replaces it."""

    async def lookup(self, request: GenerationRequest) -> CacheLookup:
        return CacheLookup(status="bypass", reason="cache not configured")

    async def store(self, request: GenerationRequest, answer: str) -> None:
        return None
