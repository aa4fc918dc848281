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
    """Files named, and files of readable types found under folders named (sorted). Links
    are kept here and judged by `_refusal`: one leading out of its tree is reported, not read."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir() and not p.is_symlink():
            # os.walk never descends through a linked folder (followlinks=False)
            found = sorted(Path(folder) / n for folder, _, names in os.walk(p) for n in names
                           if Path(n).suffix.lower() in SUFFIXES)
        else:
            found = [p]
        files += [f for f in found if f not in files]
    return files


def _below(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _refusal(path: Path, roots: list[Path], max_bytes: int) -> str | None:
    """Why a file is not read, if it is not: a link out of the tree it was found in (or, for
    a file named itself, out of its folder), or a file over the size limit."""
    if path.is_symlink() or any(part.is_symlink() for part in path.parents):
        target = path.resolve()
        root = next(r for r in roots if _below(path, r))
        tree = (root if root.is_dir() and not root.is_symlink() else root.parent).resolve()
        if not target.is_relative_to(tree):
            return "a symbolic link out of the folder being ingested; not followed"
    try:
        size = path.stat().st_size
    except OSError as exc:
        return exc.strerror or str(exc)
    if size > max_bytes:
        return f"{size / 2**20:.1f} MB, over the limit of {max_bytes / 2**20:.0f} MB (retriever.max_file_mb)"
    return None


def source_of(path: Path) -> str:
    """The path as the corpus names it: relative to the working directory when below it.
    Made absolute without following links: a link is named as itself."""
    resolved = Path(os.path.abspath(path))
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
    max_bytes = int(settings.max_file_mb * 2**20)
    for path in expand(paths):
        source = source_of(path)
        try:
            if (reason := _refusal(path, paths, max_bytes)) is not None:
                raise UnreadableDocument(reason)
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
        except Exception as exc:  # one bad file is reported with its reason; the rest go on
            reason = exc.message if isinstance(exc, UnreadableDocument) else \
                (exc.strerror or str(exc)) if isinstance(exc, OSError) else f"could not be read ({type(exc).__name__})"
            report.failed.append((source, reason))
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
