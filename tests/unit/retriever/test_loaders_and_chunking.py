"""Reading files into text and splitting it into chunks (the embedder's real tokenizer)."""

from __future__ import annotations

import pytest

from deployments.retriever.chunking import count_tokens, split
from deployments.retriever.loaders import UnreadableDocument, load
from tests.pdf_fixture import write_pdf


def test_html_headings_become_markdown_and_scripts_are_dropped(tmp_path):
    page = tmp_path / "p.html"
    page.write_text("<html><head><script>var secret = 1;</script><style>p{}</style></head><body>"
                    "<h1>Kenya</h1><p>Declarations go through iCMS.</p><h2>Duty</h2><p>Duty is 25 percent.</p>"
                    "</body></html>")
    text = load(page)
    assert "# Kenya" in text and "## Duty" in text and "iCMS" in text
    assert "secret" not in text and "p{}" not in text


def test_pdf_text_is_extracted(tmp_path):
    pdf = write_pdf(tmp_path / "guide.pdf", ["Chile requires a DIN declaration.", "Duty is 6 percent."])
    text = load(pdf)
    assert "Chile requires a DIN declaration." in text and "6 percent" in text


@pytest.mark.parametrize("name,data,reason", [
    ("broken.pdf", b"%PDF-1.4\nthis is not a pdf body", "corrupt PDF"),
    ("blob.txt", b"abc\x00\x01\x02def", "binary content"),
    ("latin1.md", "Zölle".encode("latin-1"), "not UTF-8"),
    ("sheet.xlsx", b"PK\x03\x04", "unsupported file type"),
    ("empty.txt", b"   \n", "no text"),
])
def test_unreadable_files_name_their_reason(tmp_path, name, data, reason):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(UnreadableDocument, match=reason):
        load(path)


def test_chunks_respect_headings_token_budget_and_overlap():
    body = " ".join(f"Rule {i} says the declarant keeps record {i} for audit." for i in range(80))
    markdown = f"# Norway\n{body}\n\n## Licences\nLicences are issued by the Norwegian customs service.\n"
    chunks = split(markdown, chunk_tokens=120, overlap=30)
    norway = [c for c in chunks if c.heading == "Norway"]
    licences = [c for c in chunks if c.heading == "Norway > Licences"]
    assert len(norway) > 3 and len(licences) == 1
    assert all(count_tokens(c.text) <= 120 for c in chunks)
    # No chunk straddles the heading: the licence text is only in its own section's chunk.
    assert not any("Licences are issued" in c.text for c in norway)
    assert all(c.text.startswith(c.heading + "\n") for c in chunks)
    # Neighbours share text (the overlap): the tail of one chunk opens the next.
    first, second = (c.text.split("\n", 1)[1] for c in norway[:2])
    assert first.split()[-3:] == second.split()[:3] or first[-40:] in second
