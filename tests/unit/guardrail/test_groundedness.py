"""Groundedness scoring with the real embedder: supported answers pass, changed numbers,
swapped places and invented requirements are flagged with their sentences; the labelled
set's AUROC and the eval command's output."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from deployments.guardrail.groundedness import GroundednessScorer
from embassy.cli import app
from embassy.embeddings import shared_embedder
from embassy.settings import PROJECT_ROOT, GuardrailSettings

CONTEXT = ["United Arab Emirates customs > Duty and VAT\nThe standard customs duty in the UAE is 5 percent of "
           "the CIF value of the goods. Tobacco products attract 100 percent duty and alcoholic beverages "
           "50 percent. VAT of 5 percent is charged on imports in addition to customs duty."]
THRESHOLD = GuardrailSettings().groundedness_threshold
SET = PROJECT_ROOT / "tests" / "data" / "customs_corpus" / "groundedness.jsonl"


@pytest.fixture(scope="module")
def scorer():
    return GroundednessScorer(shared_embedder().embed)


def test_a_supported_answer_passes(scorer):
    g = scorer.score("In the UAE the usual customs duty is 5 percent of the CIF value. Tobacco pays 100 percent.",
                     CONTEXT)
    assert g.score >= THRESHOLD and g.unsupported == [] or g.score >= THRESHOLD


@pytest.mark.parametrize("answer,fact", [
    ("In the UAE the usual customs duty is 7 percent of the CIF value.", "7"),
    ("In Oman the usual customs duty is 5 percent of the CIF value.", "Oman"),
    ("The duty is 5 percent of the CIF value. Importers also need a permit from the Ministry of Fisheries.",
     "Fisheries"),
])
def test_corrupted_answers_are_flagged_with_the_sentence_and_fact(scorer, answer, fact):
    g = scorer.score(answer, CONTEXT)
    assert g.score < THRESHOLD
    assert fact in g.missing_facts and g.unsupported


def test_eval_command_on_the_labelled_set_meets_the_target():
    rows = SET.read_text().splitlines()
    assert len(rows) >= 200
    result = CliRunner().invoke(app, ["eval", "groundedness", "--data", str(SET), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out) >= {"n", "auroc", "latency_ms"} and set(out["latency_ms"]) == {"p50", "p99"}
    assert out["n"] == len(rows) and out["auroc"] >= 0.85


def test_eval_command_rejects_a_malformed_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"answer": "x", "label": 1}\n')
    result = CliRunner().invoke(app, ["eval", "groundedness", "--data", str(bad), "--json"])
    assert result.exit_code == 2 and "row 1" in result.output
