"""The embedded default backend: LanceDB on local disk, one database folder per region.

Two tables: `chunks` (text, vector and metadata; a full-text index for BM25 and, past
`VECTOR_INDEX_MIN_ROWS`, an HNSW vector index) and `documents` (one record per document).
Hybrid search is LanceDB's own: vector and full-text queries fused by reciprocal rank.
Reads check the folder for new versions every time (`read_consistency_interval=0`), so a
retriever replica sees what `embassy ingest` wrote from another process at once.
"""

from __future__ import annotations

import warnings
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from deployments.retriever.store import Candidate, Chunk, DocumentRecord, VectorStore

DIM = 384
VECTOR_INDEX_MIN_ROWS = 10_000  # below this a flat scan is as fast as an index and exact

CHUNKS = pa.schema([
    pa.field("id", pa.string()), pa.field("tenant", pa.string()), pa.field("document_id", pa.string()),
    pa.field("source", pa.string()), pa.field("position", pa.int32()), pa.field("heading", pa.string()),
    pa.field("text", pa.string()), pa.field("vector", pa.list_(pa.float32(), DIM)),
])
DOCUMENTS = pa.schema([
    pa.field("tenant", pa.string()), pa.field("document_id", pa.string()), pa.field("source", pa.string()),
    pa.field("content_hash", pa.string()), pa.field("chunks", pa.int32()), pa.field("subject", pa.string()),
])


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class LanceDBStore(VectorStore):
    def __init__(self, path: Path, region: str) -> None:
        self.path = Path(path) / region
        self.region = region
        self._db = self._chunks = self._documents = None

    async def start(self) -> None:
        import lancedb
        from lancedb.index import FTS

        self.path.mkdir(parents=True, exist_ok=True)
        self._db = await lancedb.connect_async(str(self.path), read_consistency_interval=timedelta(0))
        self._chunks = await self._db.create_table("chunks", schema=CHUNKS, exist_ok=True)
        self._documents = await self._db.create_table("documents", schema=DOCUMENTS, exist_ok=True)
        if not any(i.index_type == "FTS" for i in await self._chunks.list_indices()):
            await self._chunks.create_index("text", config=FTS(), replace=True)

    async def close(self) -> None:
        for table in (self._chunks, self._documents):
            if table is not None:
                table.close()
        self._chunks = self._documents = self._db = None

    async def documents(self, tenant: str) -> list[DocumentRecord]:
        rows = await (self._documents.query().where(f"tenant = {_quote(tenant)}")
                      .select(["document_id", "source", "content_hash", "chunks", "subject"]).to_list())
        return [DocumentRecord(r["document_id"], r["source"], r["content_hash"], r["chunks"], r["subject"] or "")
                for r in rows]

    async def tenants(self) -> list[str]:
        rows = await self._documents.query().select(["tenant"]).to_list()
        return sorted({r["tenant"] for r in rows})

    async def replace_document(self, tenant: str, record: DocumentRecord, chunks: list[Chunk]) -> None:
        where = f"tenant = {_quote(tenant)} AND document_id = {_quote(record.document_id)}"
        existing = {r["id"] for r in await self._chunks.query().where(where).select(["id"]).to_list()}
        wanted = {c.id for c in chunks}
        # New chunks go in before stale ones go, so a concurrent search never finds the
        # document missing; unchanged chunks (same id) are left alone.
        new = [self._row(tenant, c) for c in chunks if c.id not in existing]
        if new:
            await self._chunks.add(new)
        stale = existing - wanted
        if stale:
            await self._chunks.delete(f"{where} AND id IN ({', '.join(_quote(i) for i in sorted(stale))})")
        await (self._documents.merge_insert(["tenant", "document_id"]).when_matched_update_all()
               .when_not_matched_insert_all()
               .execute([{"tenant": tenant, "document_id": record.document_id, "source": record.source,
                          "content_hash": record.content_hash, "chunks": record.chunks,
                          "subject": record.subject}]))

    @staticmethod
    def _row(tenant: str, c: Chunk) -> dict:
        return {"id": c.id, "tenant": tenant, "document_id": c.document_id, "source": c.source,
                "position": c.position, "heading": c.heading, "text": c.text,
                "vector": np.asarray(c.vector, dtype=np.float32)}

    async def delete_document(self, tenant: str, document_id: str) -> int:
        return await self._delete(f"tenant = {_quote(tenant)} AND document_id = {_quote(document_id)}")

    async def delete_tenant(self, tenant: str) -> int:
        return await self._delete(f"tenant = {_quote(tenant)}")

    async def _delete(self, where: str) -> int:
        removed = await self._chunks.count_rows(where)
        if removed or await self._documents.count_rows(where):
            await self._chunks.delete(where)
            await self._documents.delete(where)
            # A delete only marks rows; older versions of the table still hold them on disk.
            # Compact and drop every older version, so deleted (or erased) text is gone. A
            # search running on an older version at that moment fails and gets a 503 (retry).
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # LanceDB's note saying just that
                for table in (self._chunks, self._documents):
                    await table.optimize(cleanup_older_than=timedelta(0), delete_unverified=True)
        return removed

    async def optimize(self) -> None:
        """After an ingest: fold new rows into the indexes (and build the vector index once
        the table is big enough for it to pay)."""
        from lancedb.index import HnswSq

        has_vector_index = any(i.index_type != "FTS" for i in await self._chunks.list_indices())
        if not has_vector_index and await self._chunks.count_rows() >= VECTOR_INDEX_MIN_ROWS:
            await self._chunks.create_index("vector", config=HnswSq(distance_type="cosine"))
        await self._chunks.optimize()
        await self._documents.optimize()

    async def search(self, tenant: str, text: str, vector: np.ndarray, limit: int, hybrid: bool = True,
                     document_ids: list[str] | None = None) -> list[Candidate]:
        from lancedb.rerankers import RRFReranker

        where = f"tenant = {_quote(tenant)}"
        if document_ids is not None:
            where += f" AND document_id IN ({', '.join(_quote(d) for d in document_ids) or _quote('')})"
        query = self._chunks.query().nearest_to(np.asarray(vector, dtype=np.float32)).distance_type("cosine")
        if hybrid and text.strip():
            query = query.nearest_to_text(text).rerank(RRFReranker())
        rows = await query.where(where).limit(limit).to_list()
        return [Candidate(Chunk(r["id"], r["document_id"], r["source"], r["position"], r["heading"], r["text"],
                                np.asarray(r["vector"], dtype=np.float32)), rank)
                for rank, r in enumerate(rows)]
