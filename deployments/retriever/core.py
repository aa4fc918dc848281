"""Retriever node core: the contract, and the pass-through used until RAG lands."""

from __future__ import annotations

from abc import ABC, abstractmethod

from embassy.graph_types import GenerationRequest, Retrieval


class Retriever(ABC):
    @abstractmethod
    async def retrieve(self, request: GenerationRequest) -> Retrieval:
        """Passages for this request, best first, from the tenant's corpus in this region
        only, with that corpus's version."""


class PassThroughRetriever(Retriever):
    """Pass-through: retrieves nothing. Stands in the graph so that the hop's cost is
    measured from day one; the retriever issue replaces it."""

    async def retrieve(self, request: GenerationRequest) -> Retrieval:
        return Retrieval()
