"""Retrieval in the real graph: documents ingested with `embassy ingest` into the running
stack's region, answered through Ray Serve and vLLM with citations."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from deployments.retriever.store import document_id_for
from embassy.cli import app
from embassy.tenants import create_key
from tests.conftest import DEFAULT_MODEL
from tests.integration.test_api import metric, post
from tests.integration.test_retriever import CORPUS

pytestmark = pytest.mark.e2e
NO_CACHE = {"Cache-Control": "no-cache, no-store"}


@pytest.fixture(scope="module")
def docs_key(live) -> str:
    """Tenant `docs` gets the customs corpus, ingested while the stack runs."""
    result = CliRunner().invoke(app, ["ingest", str(CORPUS / "docs"), "--tenant", "docs",
                                      "--config", str(live.config_path), "--json"])
    assert result.exit_code == 0, result.output
    return create_key(live.settings.keys_path, "docs")


def ask(text: str, **kw) -> dict:
    return {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 24,
            "temperature": 0, **kw}


@pytest.mark.parametrize("question,source", [
    ("Which system are French import declarations lodged in?", "eu_customs_procedures.md"),
    ("What is the minimum amount of a continuous customs bond in the US?", "us_import_requirements.md"),
    ("Through which portal are Bills of Entry filed in India?", "india_import_export.html"),
])
def test_answers_cite_the_document_that_holds_them(live, docs_key, question, source):
    grounded = post(live, ask(question), key=docs_key, headers=NO_CACHE)
    assert grounded.status_code == 200, grounded.text
    body = grounded.json()
    embassy = body["embassy"]
    assert embassy["grounding"]["status"] == "grounded" and embassy["grounding"]["answered_by"] == "model"
    cited = embassy["citations"][0]
    assert Path(cited["source"]).name == source
    assert cited["document_id"] == document_id_for("docs", cited["source"])
    assert set(cited) == {"document_id", "chunk_id", "source", "score", "snippet"} and 0 < cited["score"] <= 1
    assert body["choices"][0]["message"]["content"]
    # The passages were in the model's prompt: the same question without a corpus costs far fewer tokens.
    bare = post(live, ask(question), headers=NO_CACHE).json()
    assert body["usage"]["prompt_tokens"] > bare["usage"]["prompt_tokens"] + 100


def test_an_empty_corpus_answers_without_citations_flagged(live):
    r = post(live, ask("What documents does a customs declaration need?"), headers=NO_CACHE)
    assert r.status_code == 200
    embassy = r.json()["embassy"]
    assert embassy["citations"] == []
    assert embassy["grounding"] == {"status": "no_corpus", "corpus_version": "empty", "screened_injections": 0,
                                    "score": None, "flagged": False, "unsupported": [], "answered_by": "model"}
    assert r.json()["usage"]["completion_tokens"] > 0


def test_nothing_relevant_says_so_instead_of_inventing(live, docs_key):
    question = "Which vaccines do horses need for export?"
    r = post(live, ask(question), key=docs_key)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["message"]["content"] == live.settings.retriever.no_answer_text
    assert body["embassy"]["grounding"]["status"] == "nothing_relevant"
    assert body["embassy"]["grounding"]["answered_by"] == "no_answer_text"
    assert body["embassy"]["citations"] == [] and body["usage"]["completion_tokens"] == 0
    # Streaming gets the same text as chunks.
    with httpx.stream("POST", f"{live.url}/v1/chat/completions", json=ask(question, stream=True), timeout=60,
                      headers={"Authorization": f"Bearer {docs_key}"}) as s:
        events = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices"))
    assert text == live.settings.retriever.no_answer_text
    assert metric(live, "embassy_retrievals_total", status="nothing_relevant") >= 2


def test_a_cached_grounded_answer_is_dropped_when_the_corpus_changes(live, docs_key, tmp_path):
    # One token: too short to be judged ungrounded (a flagged answer is never cached).
    body = ask("How many years must Singapore traders keep their trade documents?", max_tokens=1)
    first = post(live, body, key=docs_key).json()
    assert first["embassy"]["cache"]["status"] != "hit", first["embassy"]["cache"]
    deadline = time.monotonic() + 20
    while (hit := post(live, body, key=docs_key).json())["embassy"]["cache"]["status"] != "hit":
        assert time.monotonic() < deadline, "the answer was never stored"
        time.sleep(0.2)
    assert hit["embassy"]["citations"], "a hit keeps its citations"
    note = tmp_path / "singapore_update.md"
    note.write_text("# Singapore record keeping\nFrom 2027 Meridian keeps Singapore trade records for seven years.\n")
    result = CliRunner().invoke(app, ["ingest", str(note), "--tenant", "docs", "--config", str(live.config_path)])
    assert result.exit_code == 0, result.output
    after = post(live, body, key=docs_key).json()
    assert after["embassy"]["cache"]["status"] != "hit", after["embassy"]["cache"]
    assert after["embassy"]["grounding"]["corpus_version"] != hit["embassy"]["grounding"]["corpus_version"]


def test_groundedness_through_the_real_graph(live, docs_key):
    passage = ("United Arab Emirates customs > Duty and VAT\nThe standard customs duty in the UAE is 5 percent of the "
               "CIF value of the goods. Tobacco products attract 100 percent duty.")
    threshold = live.settings.guardrail.groundedness_threshold

    def check(answer: str) -> dict:
        r = httpx.post(f"{live.url}/v1/guard", timeout=30, headers={"Authorization": f"Bearer {docs_key}"},
                       json={"text": answer, "direction": "output", "context": [passage]})
        assert r.status_code == 200, r.text
        return r.json()
    supported = check("The UAE charges 5 percent customs duty on the CIF value; tobacco pays 100 percent.")
    assert supported["scores"]["groundedness"] >= threshold and supported["unsupported"] == []
    corrupted = check("The UAE charges 12 percent customs duty on the CIF value, payable to the Ministry of Fisheries.")
    assert corrupted["scores"]["groundedness"] < threshold
    assert corrupted["categories"] == ["ungrounded"] and corrupted["unsupported"]
    # A grounded chat answer carries its score.
    body = post(live, ask("What is the standard customs duty rate in the UAE?"), key=docs_key, headers=NO_CACHE).json()
    assert isinstance(body["embassy"]["grounding"]["score"], float)
    assert body["embassy"]["grounding"]["flagged"] == (body["embassy"]["grounding"]["score"] < threshold)
