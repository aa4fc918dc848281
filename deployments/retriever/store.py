"""The vector-store contract every retriever backend meets, and the values it trades in.

A store holds one region's documents; every call names a tenant, and no call can read or
change another tenant's rows. Each store keeps a record per document (its content hash and
chunk count) beside the chunks, so that re-ingesting an unchanged file is a no-op and the
corpus version is cheap to compute.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

EMPTY_CORPUS = "empty"


@dataclass(frozen=True)
class Chunk:
    """One piece of a document as stored. `id` is a hash of the document id, the chunk's
    position and its text, so an unchanged chunk keeps its id across ingests."""

    id: str
    document_id: str
    source: str
    position: int
    heading: str
    text: str
    vector: np.ndarray


@dataclass(frozen=True)
class DocumentRecord:
    document_id: str
    source: str
    content_hash: str
    chunks: int
    subject: str = ""  # the data subject the document is about, if any (erasure finds it)


@dataclass(frozen=True)
class Candidate:
    """A chunk a search returned, in the backend's fused order, with its vector so the
    retriever can score every candidate the same way whatever found it."""

    chunk: Chunk
    rank: int


def corpus_version(documents: list[DocumentRecord]) -> str:
    """A digest of what the tenant's corpus holds: changes whenever a document is added,
    changed or removed; the same content gives the same version on every backend."""
    if not documents:
        return EMPTY_CORPUS
    digest = hashlib.sha256()
    for d in sorted(documents, key=lambda d: d.document_id):
        digest.update(f"{d.document_id}:{d.content_hash}\n".encode())
    return digest.hexdigest()[:16]


class VectorStore(ABC):
    """One region's chunks and document records. Async; `start()` connects, `close()` lets go."""

    region: str

    async def start(self) -> None:
        """Connect and create what is missing (tables, collections, indexes)."""

    async def close(self) -> None:
        """Release connections this store opened."""

    async def optimize(self) -> None:
        """After an ingest: fold new rows into the indexes (where the backend needs it)."""

    @abstractmethod
    async def documents(self, tenant: str) -> list[DocumentRecord]:
        """The tenant's document records (empty for an unknown tenant)."""

    @abstractmethod
    async def replace_document(self, tenant: str, record: DocumentRecord, chunks: list[Chunk]) -> None:
        """Make `chunks` the document's only chunks and store its record. Chunks of an
        earlier version that are not in `chunks` are removed."""

    @abstractmethod
    async def delete_document(self, tenant: str, document_id: str) -> int:
        """Remove a document's chunks and record; returns the chunks removed (0: unknown)."""

    @abstractmethod
    async def delete_tenant(self, tenant: str) -> int:
        """Remove all of a tenant's documents in this region; returns the chunks removed."""

    async def delete_subject(self, subject: str, tenant: str | None = None) -> list[DocumentRecord]:
        """Remove the documents about a data subject (of one tenant, or of all); returns them."""
        removed = []
        for t in ([tenant] if tenant else await self.tenants()):
            for d in await self.documents(t):
                if d.subject == subject:
                    await self.delete_document(t, d.document_id)
                    removed.append(d)
        return removed

    async def delete_region(self) -> int:
        """Remove every tenant's documents in this region; returns the chunks removed."""
        removed = 0
        for tenant in await self.tenants():
            removed += await self.delete_tenant(tenant)
        return removed

    @abstractmethod
    async def search(self, tenant: str, text: str, vector: np.ndarray, limit: int, hybrid: bool = True,
                     document_ids: list[str] | None = None) -> list[Candidate]:
        """The tenant's best chunks for a query, best first, at most `limit`.

        hybrid: fuse keyword (BM25) and vector search; else vector search only.
        document_ids: a metadata filter; only these documents are searched.
        """

    async def corpus_version(self, tenant: str) -> str:
        return corpus_version(await self.documents(tenant))

    async def stats(self) -> dict[str, dict]:
        """Tenant -> documents, chunks and corpus version, for every tenant in this region."""
        out = {}
        for tenant in await self.tenants():
            docs = await self.documents(tenant)
            out[tenant] = {"documents": len(docs), "chunks": sum(d.chunks for d in docs),
                           "corpus_version": corpus_version(docs)}
        return out

    @abstractmethod
    async def tenants(self) -> list[str]:
        """Tenants with at least one document here."""


def chunk_id(document_id: str, position: int, text: str) -> str:
    return hashlib.sha256(f"{document_id}\x00{position}\x00{text}".encode()).hexdigest()[:32]


def document_id_for(tenant: str, source: str) -> str:
    """A document's id follows its source (a changed file keeps its id and replaces its
    chunks); the tenant is part of it so the same path in two tenants never collides."""
    return hashlib.sha256(f"{tenant}\x00{source}".encode()).hexdigest()[:16]
