"""Retriever node core: the contract and `CorpusRetriever` (RAG).

For each request: embed the last user message, search the tenant's chunks in this region
(hybrid keyword + vector by default), drop candidates below the cosine floor, optionally
rerank, screen what is left for indirect prompt injection (`screening.py`: sentences
carrying instructions to the model are removed, and counted; a passage with nothing else
left is dropped), keep the top k.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from typing import Callable

import numpy as np

from deployments.retriever.screening import PassageScreen, has_content
from deployments.retriever.store import EMPTY_CORPUS, Candidate, VectorStore
from embassy import metrics
from embassy.graph_types import GenerationRequest, Passage, Retrieval
from embassy.settings import RetrieverSettings

log = logging.getLogger("embassy.retriever")


class Retriever(ABC):
    @abstractmethod
    async def retrieve(self, request: GenerationRequest) -> Retrieval:
        """Passages for this request, best first, from the tenant's corpus in this region
        only, with that corpus's version. `status` says whether the answer can be grounded:
        `grounded` (passages found), `nothing_relevant` (the tenant has documents, none
        relevant enough) or `no_corpus` (the tenant has none here)."""


def question_of(request: GenerationRequest) -> str:
    users = [m.content for m in request.messages if m.role == "user"]
    return users[-1] if users else ""


class CorpusRetriever(Retriever):
    """RAG over a `VectorStore`. `embed` is the shared sentence embedder; `screen` a
    `PassageScreen` (None: passages are not screened); `reranker` anything with
    sentence-transformers' `CrossEncoder.predict`."""

    def __init__(self, store: VectorStore, embed: Callable, settings: RetrieverSettings,
                 screen: PassageScreen | None = None, reranker=None) -> None:
        self.store = store
        self.embed = embed
        self.settings = settings
        self.screen = screen
        self.reranker = reranker

    async def start(self) -> None:
        await self.store.start()

    async def retrieve(self, request: GenerationRequest) -> Retrieval:
        s, tenant, region = self.settings, request.ctx.tenant, self.store.region
        question = question_of(request)
        version = await self.store.corpus_version(tenant)
        if version == EMPTY_CORPUS:
            return Retrieval(corpus_version=version, status="no_corpus")
        # Embedding is CPU-bound; off the event loop so other requests' I/O keeps moving.
        vector = (await asyncio.to_thread(self.embed, [question]))[0]
        candidates = await self.store.search(tenant, question, vector, s.candidates, hybrid=s.hybrid)
        scored = [(c, float(np.dot(vector, c.chunk.vector))) for c in candidates]
        relevant = [(c, score) for c, score in scored if score >= s.min_score]
        if self.reranker is not None and relevant:
            relevant = self._rerank(question, relevant)
        passages, screened = [], 0
        for c, score in relevant:
            if len(passages) == s.top_k:
                break
            text = c.chunk.text
            if self.screen is not None:
                text, flagged = await asyncio.to_thread(self.screen.screen, text)
                if flagged:
                    screened += 1
                    action = "neutralized" if has_content(text, c.chunk.heading) else "dropped"
                    metrics.RETRIEVER_INJECTIONS.labels(region, action).inc()
                    log.warning("request %s: %s a retrieved passage of document %s carrying %d "
                                "instruction(s) to the model", request.ctx.request_id, action,
                                c.chunk.document_id, flagged)
                    if action == "dropped":
                        continue
            passages.append(Passage(c.chunk.document_id, c.chunk.id, c.chunk.source, round(score, 4), text))
        status = "grounded" if passages else "nothing_relevant"
        metrics.RETRIEVALS.labels(region, status).inc()
        return Retrieval(tuple(passages), version, status=status, screened_injections=screened)

    def _rerank(self, question: str, relevant: list[tuple[Candidate, float]]) -> list[tuple[Candidate, float]]:
        scores = self.reranker.predict([(question, c.chunk.text) for c, _ in relevant])
        order = np.argsort(-np.asarray(scores), kind="stable")
        return [relevant[i] for i in order]
