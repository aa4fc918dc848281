"""Ray Serve shim over the retriever core. `graphs/` turns it into a deployment."""

from __future__ import annotations

from deployments.retriever.core import PassThroughRetriever
from embassy.graph_types import GenerationRequest, Retrieval


class RetrieverDeployment:
    def __init__(self, settings: dict) -> None:
        self.core = PassThroughRetriever()

    async def retrieve(self, request: GenerationRequest) -> Retrieval:
        return await self.core.retrieve(request)

    async def ready(self) -> bool:
        return True
