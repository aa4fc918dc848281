"""The embedded store (LanceDB) at scale, and ingestion throughput, measured in one run.

1. Retrieval latency at 10k and 100k chunks: one tenant's corpus of synthetic customs
   sentences (templated: countries, goods, HS codes, procedures; 5,000 distinct texts
   embedded for real, the rest reuse those vectors with small noise so that building a
   100k corpus does not take the embedder 5 minutes). For each size: p50/p99 of
   `store.search` (hybrid and vector-only, 20 candidates) and of a full
   `CorpusRetriever.retrieve` (question embedding, search, floor, screening), over 200
   questions. Baseline in the same run: an exact brute-force cosine top-20 in NumPy over
   the same vectors; the ratio says what the store costs over a plain scan, and the
   overlap of its vector-only top-10 with the exact one what the index (HNSW, built from
   10k rows up) gives up.
2. Ingestion: the customs test corpus copied N times under distinct names (so each copy is
   a new document), ingested with `ingest()` as `embassy ingest` does: read, redact, chunk,
   embed, upsert; chunks/s with redaction on (the default) and off, median of 3 runs.

    .venv/bin/python benchmarks/retrieval.py [--sizes 10000 100000] [--copies 10]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deployments.retriever.core import CorpusRetriever  # noqa: E402
from deployments.retriever.evaluation import question_request  # noqa: E402
from deployments.retriever.ingest import DocumentRedactor, ingest  # noqa: E402
from deployments.retriever.lancedb_store import LanceDBStore  # noqa: E402
from deployments.retriever.screening import PassageScreen  # noqa: E402
from deployments.retriever.store import Chunk, DocumentRecord, chunk_id  # noqa: E402
from embassy.embeddings import shared_embedder  # noqa: E402
from embassy.settings import PROJECT_ROOT, RetrieverSettings  # noqa: E402

COUNTRIES = ["Germany", "France", "Kenya", "Chile", "Japan", "India", "Brazil", "Norway", "Vietnam", "Canada",
             "Mexico", "Turkey", "Egypt", "Peru", "Poland", "Ghana", "Spain", "Italy", "Korea", "Oman"]
GOODS = ["cotton shirts", "brake pads", "ceramic tiles", "lithium batteries", "steel bolts", "wooden chairs",
         "printed books", "olive oil", "laptops", "bicycle frames", "frozen fish", "solar panels", "wine",
         "medical masks", "tyres", "coffee beans", "toys", "perfume", "glass bottles", "copper wire"]
FACTS = ["needs an import licence from the ministry of trade", "pays {d} percent duty on the CIF value",
         "must carry a certificate of origin", "is inspected at the border in {d} percent of cases",
         "needs a declaration filed {d} hours before arrival", "falls under HS heading {h}",
         "requires a phytosanitary certificate", "is cleared under procedure code {p}",
         "must be labelled in the local language", "can be stored duty-free for {d} months"]


def synthetic_texts(n: int, rng: random.Random) -> list[str]:
    out = []
    for _ in range(n):
        fact = rng.choice(FACTS).format(d=rng.randint(2, 60), h=f"{rng.randint(1, 97):02d}{rng.randint(1, 99):02d}",
                                        p=rng.choice(["4000", "7100", "5100", "3151"]))
        out.append(f"In {rng.choice(COUNTRIES)}, an import of {rng.choice(GOODS)} {fact}.")
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


async def build_corpus(root: Path, size: int, base_texts: list[str], base_vectors: np.ndarray,
                       rng: np.random.Generator) -> LanceDBStore:
    store = LanceDBStore(root, f"scale{size}")
    await store.start()
    batch = 5_000
    for start in range(0, size, batch):
        doc_id = f"doc{start // batch}"
        chunks = []
        for i in range(start, min(size, start + batch)):
            j = i % len(base_texts)
            v = base_vectors[j] if i < len(base_texts) else base_vectors[j] + rng.normal(0, 0.02, 384)
            v = (v / np.linalg.norm(v)).astype(np.float32)
            text = base_texts[j]
            chunks.append(Chunk(chunk_id(doc_id, i, text), doc_id, f"synthetic/{doc_id}.md", i, "", text, v))
        await store.replace_document("bench", DocumentRecord(doc_id, f"synthetic/{doc_id}.md", doc_id, len(chunks)),
                                     chunks)
    await store.optimize()
    return store


async def scale(sizes: list[int], queries: int) -> None:
    embed = shared_embedder().embed
    rng = random.Random(0)
    base_texts = synthetic_texts(5_000, rng)
    t0 = time.perf_counter()
    base_vectors = embed(base_texts)
    print(f"embedded {len(base_texts)} distinct texts in {time.perf_counter() - t0:.1f} s")
    questions = [f"What does {rng.choice(COUNTRIES)} require for {rng.choice(GOODS)}?" for _ in range(queries)]
    qvecs = embed(questions)
    settings = RetrieverSettings(min_score=-1)
    from deployments.guardrail.injection import InjectionModel

    screen = PassageScreen(InjectionModel.load(), shared_embedder().encode)
    for size in sizes:
        root = Path(tempfile.mkdtemp(prefix="embassy-bench-"))
        try:
            t0 = time.perf_counter()
            store = await build_corpus(root, size, base_texts, base_vectors, np.random.default_rng(0))
            build_s = time.perf_counter() - t0
            rows = await store._chunks.query().select(["vector"]).to_arrow()
            matrix = np.stack(rows.column("vector").to_numpy(zero_copy_only=False)).astype(np.float32)
            timings: dict[str, list[float]] = {"hybrid": [], "vector": [], "numpy_exact": [], "retrieve": []}
            overlap = []
            retriever = CorpusRetriever(store, embed, settings, screen)
            for q, v in zip(questions, qvecs):
                t = time.perf_counter()
                await store.search("bench", q, v, 20, hybrid=True)
                timings["hybrid"].append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                got = await store.search("bench", q, v, 20, hybrid=False)
                timings["vector"].append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                exact = np.argpartition(-(matrix @ v), 20)[:20]
                timings["numpy_exact"].append((time.perf_counter() - t) * 1000)
                exact_top = sorted(exact, key=lambda i: -float(matrix[i] @ v))[:10]
                exact_scores = {round(float(matrix[i] @ v), 5) for i in exact_top}
                got_scores = {round(float(np.dot(c.chunk.vector, v)), 5) for c in got[:10]}
                overlap.append(len(exact_scores & got_scores) / len(exact_scores))
                t = time.perf_counter()
                await retriever.retrieve(question_request(q, "bench", store.region))
                timings["retrieve"].append((time.perf_counter() - t) * 1000)
            base = statistics.median(timings["numpy_exact"])
            print(f"\n{size:,} chunks (built in {build_s:.0f} s; vector index: "
                  f"{any(i.index_type != 'FTS' for i in await store._chunks.list_indices())})")
            for name, xs in timings.items():
                print(f"  {name:12s} p50 {statistics.median(xs):7.2f} ms  p99 {pct(xs, 99):7.2f} ms  "
                      f"x{statistics.median(xs) / base:5.1f} of the NumPy scan")
            print(f"  vector-only top-10 overlap with exact: {statistics.mean(overlap):.3f}")
            await store.close()
        finally:
            shutil.rmtree(root, ignore_errors=True)


async def ingestion(copies: int) -> None:
    from deployments.guardrail.pii import PiiDetector

    embed = shared_embedder().embed
    settings = RetrieverSettings()
    src = PROJECT_ROOT / "tests" / "data" / "customs_corpus" / "docs"
    for label, redact in (("redaction on", DocumentRedactor(PiiDetector(ner=False), {})), ("redaction off", None)):
        rates = []
        for run in range(3):
            root = Path(tempfile.mkdtemp(prefix="embassy-ingest-"))
            try:
                docs = root / "docs"
                docs.mkdir()
                for c in range(copies):
                    for f in src.iterdir():
                        # A copy per name, with a line of its own so its content (and ids) differ.
                        (docs / f"{f.stem}_{c}{f.suffix}").write_text(f.read_text() + f"\n\nCopy {c}.\n")
                store = LanceDBStore(root / "vectors", "eu")
                await store.start()
                report = await ingest([docs], store, "bench", embed, settings, redact)
                rates.append(report.chunks_written / report.seconds)
                await store.close()
            finally:
                shutil.rmtree(root, ignore_errors=True)
        print(f"ingestion ({label}): {report.chunks_written} chunks from {copies * 8} files; "
              f"median {statistics.median(rates):.0f} chunks/s over 3 runs ({', '.join(f'{r:.0f}' for r in rates)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--copies", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(ingestion(args.copies))
    asyncio.run(scale(args.sizes, args.queries))


if __name__ == "__main__":
    main()
