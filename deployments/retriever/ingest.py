"""Ingestion: files -> chunks -> embeddings -> the region's store, idempotently.

A document's id follows its source path; its content hash covers the bytes and everything
that shapes its chunks (chunk size, overlap, redaction policy), so re-ingesting an
unchanged file with unchanged settings touches nothing, and anything else replaces the
document's chunks. A file that cannot be read is reported with its reason; the rest go on.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from deployments.retriever.chunking import split
from deployments.retriever.loaders import SUFFIXES, UnreadableDocument, load
from deployments.retriever.store import Chunk, DocumentRecord, VectorStore, chunk_id, document_id_for
from embassy.settings import RetrieverSettings

Progress = Callable[[str, int], None]  # (event, count): "file" / "chunks" / "failed"


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)  # sources new to the corpus
    replaced: list[str] = field(default_factory=list)  # sources whose content changed
    unchanged: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)
    chunks_written: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"added": self.added, "replaced": self.replaced, "unchanged": self.unchanged,
                "failed": [{"source": s, "reason": r} for s, r in self.failed],
                "chunks_written": self.chunks_written, "seconds": round(self.seconds, 3)}


class DocumentRedactor:
    """The region's PII policy applied to documents: types the policy allows are kept, the
    others replaced by a bare label ([EMAIL]). Labels, not the guard's numbered placeholders:
    those are mapped back to the caller's own values in answers, and a document's must not be."""

    def __init__(self, detector, policy: dict[str, str]) -> None:
        self.detector = detector
        self.policy = policy

    @property
    def signature(self) -> str:
        return json.dumps([sorted(self.policy.items()), self.detector.use_ner])

    def __call__(self, text: str) -> str:
        from deployments.guardrail.normalize import normalize

        text = normalize(text)
        out, pos = [], 0
        for f in self.detector.find(text):
            if self.policy.get(f.type, "redact") == "allow" or f.start < pos:
                continue
            out += [text[pos:f.start], f"[{f.type}]"]
            pos = f.end
        out.append(text[pos:])
        return "".join(out)


def expand(paths: list[Path]) -> list[Path]:
    """Files named, and files of readable types found under folders named (sorted)."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUFFIXES)
        else:
            files.append(p)
    return files


def source_of(path: Path) -> str:
    """The path as the corpus names it: relative to the working directory when below it."""
    resolved = path.resolve()
    try:
        return os.path.relpath(resolved, Path.cwd()) if resolved.is_relative_to(Path.cwd()) else str(resolved)
    except ValueError:
        return str(resolved)


async def ingest(paths: list[Path], store: VectorStore, tenant: str, embed, settings: RetrieverSettings,
                 redact: DocumentRedactor | None = None, progress: Progress | None = None,
                 subject: str = "") -> IngestReport:
    """`subject`: the data subject these documents are about (`embassy erase` removes them)."""
    import time

    started = time.perf_counter()
    report = IngestReport()
    known = {d.document_id: d for d in await store.documents(tenant)}
    shape = f"{settings.chunk_tokens}/{settings.chunk_overlap}/{redact.signature if redact else 'keep'}/{subject}"
    for path in expand(paths):
        source = source_of(path)
        try:
            data = path.read_bytes()
            content_hash = hashlib.sha256(data + b"\x00" + shape.encode()).hexdigest()[:32]
            doc_id = document_id_for(tenant, source)
            previous = known.get(doc_id)
            if previous is not None and previous.content_hash == content_hash:
                report.unchanged.append(source)
                continue
            text = load(path)
            if redact is not None:
                text = redact(text)
            pieces = split(text, settings.chunk_tokens, settings.chunk_overlap)
            if not pieces:
                raise UnreadableDocument("no text in the file")
        except (UnreadableDocument, OSError) as exc:
            report.failed.append((source, getattr(exc, "message", None) or str(exc)))
            if progress:
                progress("failed", 1)
            continue
        vectors = embed([p.text for p in pieces])
        chunks = [Chunk(chunk_id(doc_id, i, p.text), doc_id, source, i, p.heading, p.text, v)
                  for i, (p, v) in enumerate(zip(pieces, vectors))]
        await store.replace_document(tenant, DocumentRecord(doc_id, source, content_hash, len(chunks), subject), chunks)
        (report.replaced if previous is not None else report.added).append(source)
        report.chunks_written += len(chunks)
        if progress:
            progress("file", 1)
            progress("chunks", len(chunks))
    if report.added or report.replaced:
        await store.optimize()
    report.seconds = time.perf_counter() - started
    return report
