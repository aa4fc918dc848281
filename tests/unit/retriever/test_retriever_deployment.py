"""The retriever's Serve shim around a store that fails (a deterministic fake store: the
logic under test is the shim's error mapping, not the store)."""

from __future__ import annotations

import asyncio

import pytest

from deployments.retriever.core import CorpusRetriever
from deployments.retriever.deployment import RetrieverDeployment
from deployments.retriever.evaluation import question_request
from deployments.retriever.store import VectorStore
from embassy.errors import ServiceUnavailable
from embassy.settings import RetrieverSettings


class FailingFakeStore(VectorStore):
    region = "eu"

    def __init__(self, fail_start: int) -> None:
        self.fail_start = fail_start
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1
        if self.starts <= self.fail_start:
            raise ConnectionError("connection refused")

    async def documents(self, tenant):
        raise TimeoutError("read timed out")

    async def replace_document(self, tenant, record, chunks): ...
    async def delete_document(self, tenant, document_id): return 0
    async def delete_tenant(self, tenant): return 0
    async def search(self, *a, **kw): return []
    async def tenants(self): return []


def _shim(store) -> RetrieverDeployment:
    shim = RetrieverDeployment.__new__(RetrieverDeployment)
    shim.core = CorpusRetriever(store, lambda texts: None, RetrieverSettings())
    shim._starting = None
    return shim


def test_a_store_that_cannot_connect_gives_503_and_is_retried_on_the_next_request():
    store = FailingFakeStore(fail_start=1)
    shim = _shim(store)

    async def run():
        with pytest.raises(ServiceUnavailable) as first:
            await shim.retrieve(question_request("q", "acme", "eu"))
        assert first.value.status == 503 and first.value.headers["retry-after"] == "5"
        assert "document store" in first.value.message and "refused" not in first.value.message
        with pytest.raises(ServiceUnavailable):  # connects now, then the read fails
            await shim.retrieve(question_request("q", "acme", "eu"))
        assert store.starts == 2
    asyncio.run(run())
