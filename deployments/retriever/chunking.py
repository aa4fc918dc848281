"""Split a document into token-aware, overlapping chunks that never straddle a heading.

LangChain's text splitters do the work: `MarkdownHeaderTextSplitter` cuts at headings (the
loaders turn every format's headings into `#` lines), then a recursive splitter packs
paragraphs, then sentences, then words into chunks of at most `chunk_tokens` tokens of the
embedder's own tokenizer, neighbours sharing `chunk_overlap` tokens. Each chunk starts with
its heading path ("Germany > Import licences"), so both keyword and vector search see
which section a passage belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

HEADINGS = [("#", "h1"), ("##", "h2"), ("###", "h3"), ("####", "h4")]


@dataclass(frozen=True)
class TextChunk:
    heading: str
    text: str  # heading line, then the body


@lru_cache(maxsize=1)
def _tokenizer():
    from transformers import AutoTokenizer

    from embassy.embeddings import model_path

    return AutoTokenizer.from_pretrained(str(model_path()), local_files_only=True)


def count_tokens(text: str) -> int:
    return len(_tokenizer().tokenize(text))


def split(markdown: str, chunk_tokens: int, overlap: int) -> list[TextChunk]:
    from langchain_text_splitters import MarkdownHeaderTextSplitter, RecursiveCharacterTextSplitter

    sections = MarkdownHeaderTextSplitter(HEADINGS, strip_headers=True).split_text(markdown)
    chunks: list[TextChunk] = []
    for section in sections:
        heading = " > ".join(section.metadata[key] for _, key in HEADINGS if key in section.metadata)
        # The heading line rides in every chunk of its section; the body gets what is left.
        budget = max(32, chunk_tokens - (count_tokens(heading) + 1 if heading else 0))
        splitter = RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
            _tokenizer(), chunk_size=budget, chunk_overlap=min(overlap, budget // 2),
            separators=["\n\n", "\n", ". ", "; ", ", ", " ", ""], keep_separator="end")
        for body in splitter.split_text(section.page_content):
            body = body.strip()
            if body:
                chunks.append(TextChunk(heading, f"{heading}\n{body}" if heading else body))
    return chunks
