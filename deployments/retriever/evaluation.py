"""Recall@k of the retriever on questions labelled with the chunk that answers them.

A question is `{"question", "source", "evidence"}`: it counts as found when one of the top
k passages comes from a file named `source` and contains `evidence` (whitespace folded).
The passages are those the graph would put in the prompt (after the floor and screening).
"""

from __future__ import annotations

import re
import time
import uuid
from pathlib import PurePath

from deployments.retriever.core import Retriever
from embassy.graph_types import GenerationRequest, Message, RequestContext


def _fold(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def answers(passage, row: dict) -> bool:
    return PurePath(passage.source).name == row["source"] and _fold(row["evidence"]) in _fold(passage.text)


def question_request(question: str, tenant: str, region: str, model: str = "eval") -> GenerationRequest:
    ctx = RequestContext(uuid.uuid4().hex, tenant, region, "EU")
    return GenerationRequest(ctx=ctx, model=model, messages=(Message("user", question),))


async def recall_at_k(rows: list[dict], retriever: Retriever, tenant: str, region: str, k: int = 3) -> dict:
    """{"recall": ..., "found": n, "questions": n, "misses": [...], "latency_ms": [...]}"""
    found, misses, latencies = 0, [], []
    for row in rows:
        t0 = time.perf_counter()
        retrieval = await retriever.retrieve(question_request(row["question"], tenant, region))
        latencies.append((time.perf_counter() - t0) * 1000)
        top = retrieval.passages[:k]
        if any(answers(p, row) for p in top):
            found += 1
        else:
            misses.append({"question": row["question"], "expected": row["source"],
                           "got": [PurePath(p.source).name for p in top]})
    return {"recall": round(found / len(rows), 4) if rows else 0.0, "found": found, "questions": len(rows),
            "k": k, "misses": misses, "latency_ms": latencies}
