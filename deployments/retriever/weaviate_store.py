"""The production backend: Weaviate through weaviate-client v4's async API.

Per region two collections, `<Prefix>Chunks_<Region>` and `<Prefix>Documents_<Region>`,
both with Weaviate multi-tenancy: each Embassy tenant is a Weaviate tenant, so a query
physically reads one tenant's shard. Vectors are ours (self-provided, the same local
embedder as the cache); hybrid search is Weaviate's own (BM25 + vector, relative-score
fusion); upserts go through `insert_many` (one gRPC batch per `batch_size` objects) with
deterministic UUIDs from the chunk ids, so a retried ingest overwrites instead of
duplicating.

No Weaviate server can be installed on the development machines: this module is written
against the client's documented API and exercised by the contract suite
(`tests/integration/test_vector_store_contract.py`) whenever `WEAVIATE_URL` is set.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlparse

import numpy as np

from deployments.retriever.store import Candidate, Chunk, DocumentRecord, VectorStore
from embassy.errors import ConfigError
from embassy.settings import WeaviateSettings

_TENANT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CHUNK_PROPS = ["chunk_id", "document_id", "source", "position", "heading", "text"]


def _class_suffix(region: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", region).capitalize()


def _tenant_name(tenant: str) -> str:
    if not _TENANT.match(tenant):
        raise ConfigError(f"tenant {tenant!r} is not a valid Weaviate tenant name (letters, digits, _ and -)")
    return tenant


class WeaviateStore(VectorStore):
    def __init__(self, settings: WeaviateSettings, region: str) -> None:
        self.settings = settings
        self.region = region
        suffix = _class_suffix(region)
        self.chunks_name = f"{settings.collection_prefix}Chunks_{suffix}"
        self.documents_name = f"{settings.collection_prefix}Documents_{suffix}"
        self._client = None

    async def start(self) -> None:
        import weaviate
        from weaviate.classes.config import Configure, DataType, Property
        from weaviate.classes.init import AdditionalConfig, Auth, Timeout

        s = self.settings
        url = urlparse(s.url)
        key = os.environ.get(s.api_key_env) if s.api_key_env else None
        secure = url.scheme == "https"
        self._client = weaviate.use_async_with_custom(
            http_host=url.hostname or "127.0.0.1", http_port=url.port or (443 if secure else 80),
            http_secure=secure, grpc_host=url.hostname or "127.0.0.1", grpc_port=s.grpc_port, grpc_secure=secure,
            auth_credentials=Auth.api_key(key) if key else None,
            additional_config=AdditionalConfig(timeout=Timeout(init=s.timeout_s, query=s.timeout_s,
                                                               insert=s.timeout_s)))
        await self._client.connect()
        tenancy = Configure.multi_tenancy(enabled=True, auto_tenant_creation=True, auto_tenant_activation=True)
        text = [Property(name="document_id", data_type=DataType.TEXT, skip_vectorization=True),
                Property(name="source", data_type=DataType.TEXT, skip_vectorization=True)]
        if not await self._client.collections.exists(self.chunks_name):
            await self._client.collections.create(
                self.chunks_name, multi_tenancy_config=tenancy, vector_config=Configure.Vectors.self_provided(),
                properties=[*text, Property(name="chunk_id", data_type=DataType.TEXT),
                            Property(name="position", data_type=DataType.INT),
                            Property(name="heading", data_type=DataType.TEXT),
                            Property(name="text", data_type=DataType.TEXT)])
        if not await self._client.collections.exists(self.documents_name):
            await self._client.collections.create(
                self.documents_name, multi_tenancy_config=tenancy, vector_config=Configure.Vectors.self_provided(),
                properties=[*text, Property(name="content_hash", data_type=DataType.TEXT),
                            Property(name="chunks", data_type=DataType.INT),
                            Property(name="subject", data_type=DataType.TEXT, skip_vectorization=True)])

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def _chunks(self, tenant: str):
        return self._client.collections.use(self.chunks_name).with_tenant(_tenant_name(tenant))

    def _documents(self, tenant: str):
        return self._client.collections.use(self.documents_name).with_tenant(_tenant_name(tenant))

    async def tenants(self) -> list[str]:
        names = await self._client.collections.use(self.documents_name).tenants.get()
        return sorted(names)

    async def documents(self, tenant: str) -> list[DocumentRecord]:
        if tenant not in await self.tenants():
            return []
        out = []
        async for obj in self._documents(tenant).iterator(
                return_properties=["document_id", "source", "content_hash", "chunks", "subject"]):
            p = obj.properties
            out.append(DocumentRecord(p["document_id"], p["source"], p["content_hash"], int(p["chunks"]),
                                      p.get("subject") or ""))
        return out

    async def replace_document(self, tenant: str, record: DocumentRecord, chunks: list[Chunk]) -> None:
        from weaviate.classes.data import DataObject
        from weaviate.classes.query import Filter
        from weaviate.util import generate_uuid5

        col = self._chunks(tenant)
        objects = [DataObject(properties={"chunk_id": c.id, "document_id": c.document_id, "source": c.source,
                                          "position": c.position, "heading": c.heading, "text": c.text},
                              uuid=generate_uuid5(c.id), vector=np.asarray(c.vector, dtype=float).tolist())
                   for c in chunks]
        size = self.settings.batch_size
        for i in range(0, len(objects), size):
            result = await col.data.insert_many(objects[i:i + size])
            if result.has_errors:
                first = next(iter(result.errors.values()))
                raise RuntimeError(f"Weaviate batch insert failed: {first.message}")
        # Upserted first, then chunks of the document that are no longer part of it removed.
        where = Filter.by_property("document_id").equal(record.document_id)
        if chunks:
            where = where & Filter.by_property("chunk_id").contains_none([c.id for c in chunks])
        await col.data.delete_many(where=where)
        await self._documents(tenant).data.insert_many([DataObject(
            properties={"document_id": record.document_id, "source": record.source,
                        "content_hash": record.content_hash, "chunks": record.chunks,
                        "subject": record.subject},
            uuid=generate_uuid5(record.document_id))])

    async def delete_document(self, tenant: str, document_id: str) -> int:
        from weaviate.classes.query import Filter

        if tenant not in await self.tenants():
            return 0
        where = Filter.by_property("document_id").equal(document_id)
        result = await self._chunks(tenant).data.delete_many(where=where)
        await self._documents(tenant).data.delete_many(where=where)
        return int(result.successful)

    async def delete_tenant(self, tenant: str) -> int:
        if tenant not in await self.tenants():
            return 0
        removed = sum(d.chunks for d in await self.documents(tenant))
        name = _tenant_name(tenant)
        for collection in (self.chunks_name, self.documents_name):
            await self._client.collections.use(collection).tenants.remove([name])
        return removed

    async def search(self, tenant: str, text: str, vector: np.ndarray, limit: int, hybrid: bool = True,
                     document_ids: list[str] | None = None) -> list[Candidate]:
        from weaviate.classes.query import Filter, HybridFusion

        if tenant not in await self.tenants():
            return []
        col = self._chunks(tenant)
        filters = Filter.by_property("document_id").contains_any(document_ids) if document_ids is not None else None
        if document_ids == []:
            return []
        vec = np.asarray(vector, dtype=float).tolist()
        if hybrid and text.strip():
            res = await col.query.hybrid(query=text, vector=vec, alpha=0.5, fusion_type=HybridFusion.RELATIVE_SCORE,
                                         limit=limit, filters=filters, include_vector=True,
                                         return_properties=_CHUNK_PROPS)
        else:
            res = await col.query.near_vector(near_vector=vec, limit=limit, filters=filters, include_vector=True,
                                              return_properties=_CHUNK_PROPS)
        out = []
        for rank, obj in enumerate(res.objects):
            p = obj.properties
            v = obj.vector.get("default") if isinstance(obj.vector, dict) else obj.vector
            out.append(Candidate(Chunk(p["chunk_id"], p["document_id"], p["source"], int(p["position"]),
                                       p["heading"], p["text"], np.asarray(v, dtype=np.float32)), rank))
        return out
