"""Read a file into Markdown-like text: headings as `#` lines, so one splitter handles all.

Plain text and Markdown are read as UTF-8; HTML through BeautifulSoup (h1-h6 become `#`
headings, scripts and styles dropped); PDF through pypdf, page by page. Anything else, or
a file that cannot be read as its type, raises `UnreadableDocument` with the reason.
"""

from __future__ import annotations

from pathlib import Path

from embassy.errors import EmbassyError

SUFFIXES = {".txt": "text", ".text": "text", ".md": "markdown", ".markdown": "markdown",
            ".html": "html", ".htm": "html", ".pdf": "pdf"}


class UnreadableDocument(EmbassyError):
    """A file that is corrupt, empty or of a type ingestion does not read."""


def load(path: Path) -> str:
    """The file's text, headings marked with `#`.

    Raises:
        UnreadableDocument: unsupported type, undecodable or corrupt content, or no text.
    """
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise UnreadableDocument(f"unsupported file type {path.suffix or '(none)'!r}; "
                                 f"ingest reads {', '.join(sorted(SUFFIXES))}")
    data = path.read_bytes()
    text = _pdf(data) if kind == "pdf" else _decode(data)
    if kind == "html":
        text = _html(text)
    if not text.strip():
        raise UnreadableDocument("no text in the file")
    return text


def _decode(data: bytes) -> str:
    if b"\x00" in data:
        raise UnreadableDocument("binary content (NUL bytes) in a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableDocument(f"not UTF-8 text (byte {exc.start})") from None


def _html(markup: str) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(markup, "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    for level in range(1, 7):
        for h in soup.find_all(f"h{level}"):
            h.replace_with(f"\n\n{'#' * level} {h.get_text(' ', strip=True)}\n\n")
    for block in soup.find_all(["p", "li", "tr", "div", "br"]):
        block.insert_after("\n")
    lines = (" ".join(line.split()) for line in soup.get_text().splitlines())
    return "\n".join(lines)


def _pdf(data: bytes) -> str:
    import io

    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise UnreadableDocument(f"corrupt PDF: {exc}") from None
    except Exception as exc:  # pypdf raises more than it documents on hostile files
        raise UnreadableDocument(f"unreadable PDF ({type(exc).__name__})") from None
    return "\n\n".join(pages)
