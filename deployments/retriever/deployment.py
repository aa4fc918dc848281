"""Ray Serve shim over the retriever core. `graphs/` turns it into a deployment."""

from __future__ import annotations

import asyncio
import logging

from deployments.retriever.core import CorpusRetriever
from deployments.retriever.store import VectorStore
from embassy.errors import EmbassyError, ServiceUnavailable
from embassy.graph_types import GenerationRequest, Retrieval
from embassy.settings import EmbassySettings

log = logging.getLogger("embassy.retriever")


def open_store(settings: EmbassySettings) -> VectorStore:
    """The region's store as configured (not yet started)."""
    r = settings.retriever
    if r.backend == "weaviate":
        from deployments.retriever.weaviate_store import WeaviateStore

        return WeaviateStore(r.weaviate, settings.region)
    from deployments.retriever.lancedb_store import LanceDBStore

    return LanceDBStore(settings.vectors_path, settings.region)


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
    screen = PassageScreen(InjectionModel.load(), shared_embedder().encode, r.injection_threshold) if r.screen_injection else None
    return CorpusRetriever(open_store(settings), embed, r, screen, reranker)


class RetrieverDeployment:
    def __init__(self, settings: dict) -> None:
        self.core = build_retriever(EmbassySettings.model_validate(settings))
        self._starting: asyncio.Future | None = None

    async def retrieve(self, request: GenerationRequest) -> Retrieval:
        try:
            await self._started()
            return await self.core.retrieve(request)
        except EmbassyError:
            raise
        except Exception as exc:  # a store that cannot answer: the caller may retry, nothing is invented
            if self._starting is not None and self._starting.done() and self._starting.exception():
                self._starting = None  # connect again on the next request
            log.error("request %s: document store failed: %s: %s", request.ctx.request_id,
                      type(exc).__name__, exc)
            raise ServiceUnavailable("The document store of this region is unavailable. Please retry.",
                                     headers={"retry-after": "5"}) from None

    async def corpus_version(self, tenant: str) -> str | None:
        """The tenant's corpus version now; None when the store cannot say (then `retrieve`,
        which reports the store's failure properly, is asked as usual)."""
        try:
            await self._started()
            return await self.core.store.corpus_version(tenant)
        except Exception:  # noqa: BLE001 - the retrieve call that follows reports it
            return None

    async def _started(self) -> None:
        """Serve builds replicas synchronously; the store connects on first use, once."""
        if self._starting is None:
            self._starting = asyncio.ensure_future(self.core.start())
        await asyncio.shield(self._starting)

    async def erase(self, subject: str, tenant: str | None = None) -> list[dict]:
        await self._started()
        removed = await self.core.store.delete_subject(subject, tenant)
        return [{"document_id": d.document_id, "source": d.source, "chunks": d.chunks} for d in removed]

    async def ready(self) -> bool:
        return True
