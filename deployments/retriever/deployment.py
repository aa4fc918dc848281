"""Ray Serve shim over the retriever core. `graphs/` turns it into a deployment."""

from __future__ import annotations

import asyncio

from deployments.retriever.core import CorpusRetriever
from deployments.retriever.store import VectorStore
from embassy.graph_types import GenerationRequest, Retrieval
from embassy.settings import EmbassySettings


def open_store(settings: EmbassySettings) -> VectorStore:
    """The region's store as configured (not yet started)."""
    r = settings.retriever
    if r.backend == "weaviate":
        from deployments.retriever.weaviate_store import WeaviateStore

        return WeaviateStore(r.weaviate, settings.region)
    from deployments.retriever.lancedb_store import LanceDBStore

    return LanceDBStore(settings.resolve(r.path), settings.region)


def build_retriever(settings: EmbassySettings) -> CorpusRetriever:
    from deployments.guardrail.injection import InjectionModel
    from deployments.retriever.screening import PassageScreen
    from embassy.embeddings import shared_embedder

    r = settings.retriever
    reranker = None
    if r.rerank_model is not None:
        from sentence_transformers import CrossEncoder

        reranker = CrossEncoder(str(settings.resolve(r.rerank_model)), device="cpu", local_files_only=True)
    embed = shared_embedder().embed
    screen = PassageScreen(InjectionModel.load(), embed, r.injection_threshold) if r.screen_injection else None
    return CorpusRetriever(open_store(settings), embed, r, screen, reranker)


class RetrieverDeployment:
    def __init__(self, settings: dict) -> None:
        self.core = build_retriever(EmbassySettings.model_validate(settings))
        self._starting: asyncio.Future | None = None

    async def retrieve(self, request: GenerationRequest) -> Retrieval:
        # Serve builds replicas synchronously; the store connects on first use, once.
        if self._starting is None:
            self._starting = asyncio.ensure_future(self.core.start())
        await asyncio.shield(self._starting)
        return await self.core.retrieve(request)

    async def ready(self) -> bool:
        return True
