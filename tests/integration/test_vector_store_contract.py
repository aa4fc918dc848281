"""One contract, every backend: LanceDB (embedded, always) and Weaviate (when WEAVIATE_URL
points at a server; none can be installed on the development machines).

Run against Weaviate:  WEAVIATE_URL=http://127.0.0.1:8080 WEAVIATE_GRPC_PORT=50051 make test
Each run uses its own collection prefix and deletes its collections afterwards.
"""

from __future__ import annotations

import os
import uuid

import pytest

from deployments.retriever.store import EMPTY_CORPUS, Chunk, DocumentRecord, chunk_id, corpus_version
from embassy.embeddings import shared_embedder

WEAVIATE_URL = os.environ.get("WEAVIATE_URL")
BACKENDS = ["lancedb", pytest.param("weaviate", marks=pytest.mark.skipif(
    not WEAVIATE_URL, reason="WEAVIATE_URL is not set: no Weaviate server can be installed on this machine; "
                             "set WEAVIATE_URL (and WEAVIATE_GRPC_PORT) to run this suite against one"))]


def _make_store(backend: str, tmp_path, region: str, prefix: str):
    if backend == "lancedb":
        from deployments.retriever.lancedb_store import LanceDBStore

        return LanceDBStore(tmp_path / "vectors", region)
    from deployments.retriever.weaviate_store import WeaviateStore
    from embassy.settings import WeaviateSettings

    settings = WeaviateSettings(url=WEAVIATE_URL, grpc_port=int(os.environ.get("WEAVIATE_GRPC_PORT", "50051")),
                                collection_prefix=prefix)
    return WeaviateStore(settings, region)


async def _drop(store) -> None:
    if hasattr(store, "chunks_name"):  # Weaviate: remove this run's collections
        for name in (store.chunks_name, store.documents_name):
            await store._client.collections.delete(name)


@pytest.fixture(params=BACKENDS)
async def stores(request, tmp_path):
    """Two regions of one backend, side by side."""
    prefix = "T" + uuid.uuid4().hex[:10]
    made = [_make_store(request.param, tmp_path, region, prefix) for region in ("eu", "us")]
    for s in made:
        await s.start()
    yield made
    for s in made:
        await _drop(s)
        await s.close()


def _doc(tenant: str, name: str, texts: list[str], version: str = "v1"):
    embed = shared_embedder().embed
    doc_id = f"{tenant}-{name}"
    vectors = embed(texts)
    chunks = [Chunk(chunk_id(doc_id, i, t), doc_id, f"docs/{name}", i, name, t, v)
              for i, (t, v) in enumerate(zip(texts, vectors))]
    return DocumentRecord(doc_id, f"docs/{name}", f"{name}-{version}", len(chunks)), chunks


async def _search(store, tenant, text, **kw):
    vector = shared_embedder().embed([text])[0]
    return await store.search(tenant, text, vector, 10, **kw)


BALTIC = ["Latvian customs declarations are lodged in the EMDAS system.",
          "Estonian importers use procedure code 7100 for customs warehousing."]
ANDES = ["Peruvian importers need a SUNAT registration before clearance.",
         "Chilean customs require a DIN declaration for every import."]


async def test_upsert_search_and_corpus_version(stores):
    eu, _ = stores
    assert await eu.corpus_version("acme") == EMPTY_CORPUS
    record, chunks = _doc("acme", "baltic.md", BALTIC)
    await eu.replace_document("acme", record, chunks)
    assert await eu.documents("acme") == [record]
    assert await eu.corpus_version("acme") == corpus_version([record]) != EMPTY_CORPUS
    hits = await _search(eu, "acme", "Which system takes Latvian declarations?")
    assert hits[0].chunk.text == BALTIC[0] and hits[0].chunk.document_id == record.document_id
    assert hits[0].chunk.vector.shape == (384,)


async def test_keyword_leg_of_hybrid_search_finds_an_exact_code(stores):
    eu, _ = stores
    for name, texts in (("baltic.md", BALTIC), ("andes.md", ANDES)):
        await eu.replace_document("acme", *_doc("acme", name, texts))
    hits = await _search(eu, "acme", "7100", hybrid=True)
    assert hits and "7100" in hits[0].chunk.text


async def test_tenants_never_see_each_other(stores):
    eu, _ = stores
    await eu.replace_document("acme", *_doc("acme", "baltic.md", BALTIC))
    await eu.replace_document("globex", *_doc("globex", "andes.md", ANDES))
    acme = await _search(eu, "acme", "Chilean DIN declaration")
    assert acme and all(c.chunk.document_id.startswith("acme-") for c in acme)
    assert await _search(eu, "nobody", "Chilean DIN declaration") == []
    assert await eu.tenants() == ["acme", "globex"]


async def test_regions_are_separate_stores(stores):
    eu, us = stores
    await eu.replace_document("acme", *_doc("acme", "baltic.md", BALTIC))
    assert await _search(us, "acme", "Latvian customs EMDAS") == []
    assert await us.corpus_version("acme") == EMPTY_CORPUS


async def test_metadata_filter_by_document(stores):
    eu, _ = stores
    baltic, andes = _doc("acme", "baltic.md", BALTIC), _doc("acme", "andes.md", ANDES)
    for record, chunks in (baltic, andes):
        await eu.replace_document("acme", record, chunks)
    hits = await _search(eu, "acme", "customs", document_ids=[andes[0].document_id])
    assert hits and {c.chunk.document_id for c in hits} == {andes[0].document_id}


async def test_replacing_a_document_removes_its_old_chunks_and_changes_the_version(stores):
    eu, _ = stores
    await eu.replace_document("acme", *_doc("acme", "baltic.md", BALTIC))
    before = await eu.corpus_version("acme")
    changed = ["Latvian customs declarations moved to the new EMDAS 2 platform.", BALTIC[1]]
    record, chunks = _doc("acme", "baltic.md", changed, version="v2")
    await eu.replace_document("acme", record, chunks)
    texts = {c.chunk.text for c in await _search(eu, "acme", "Latvian declarations EMDAS")}
    assert texts == set(changed)
    assert await eu.corpus_version("acme") != before
    # Same content again: same version (ids and version come from content).
    await eu.replace_document("acme", record, chunks)
    assert len(await _search(eu, "acme", "Latvian declarations EMDAS")) == 2


async def test_delete_by_document_and_by_tenant(stores):
    eu, _ = stores
    baltic, andes = _doc("acme", "baltic.md", BALTIC), _doc("acme", "andes.md", ANDES)
    for record, chunks in (baltic, andes):
        await eu.replace_document("acme", record, chunks)
    await eu.replace_document("globex", *_doc("globex", "andes.md", ANDES))
    assert await eu.delete_document("acme", baltic[0].document_id) == 2
    assert await eu.delete_document("acme", baltic[0].document_id) == 0
    assert [d.document_id for d in await eu.documents("acme")] == [andes[0].document_id]
    assert await eu.delete_tenant("acme") == 2
    assert await eu.corpus_version("acme") == EMPTY_CORPUS
    assert await _search(eu, "acme", "Chilean DIN") == []
    assert (await eu.stats())["globex"]["chunks"] == 2


async def test_delete_a_whole_region(stores):
    eu, us = stores
    await eu.replace_document("acme", *_doc("acme", "baltic.md", BALTIC))
    await eu.replace_document("globex", *_doc("globex", "andes.md", ANDES))
    await us.replace_document("acme", *_doc("acme", "andes.md", ANDES))
    assert await eu.delete_region() == 4
    assert await eu.stats() == {} and await eu.tenants() == []
    assert (await us.stats())["acme"]["chunks"] == 2  # another region is untouched
