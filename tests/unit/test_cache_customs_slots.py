"""The cache's customs path: slots compared exactly (rules, no model), then the shipped
verifier at its customs threshold, measured on the customs dev set's test part (real
embedder and verifier)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deployments.cache.slots import customs_slots, is_customs, slot_difference

PARAPHRASES = [
    ("Exporting from South Korea: what documents are required?",
     "For an export shipment leaving South Korea, which documents must I prepare?"),
    ("Under CIF (Incoterms 2020), who pays the insurance?",
     "Who is responsible for the insurance when goods are sold CIF, Incoterms 2020?"),
    ("What is the import duty on e-bikes from Vietnam into Germany?",
     "How much duty is charged on e-bikes shipped from Vietnam to Germany?"),
    ("What paperwork do I need to import goods into India?",
     "For an import shipment arriving in India, which documents must I prepare?"),
]

NEAR_MISSES = [  # (a, b, the slot that differs)
    ("Exporting from South Korea: what documents are required?",
     "Importing into South Korea: what documents are required?", "direction"),
    ("What is the import duty on e-bikes from Vietnam into Germany?",
     "What is the import duty on e-bikes from Germany into Vietnam?", "swapped"),
    ("Which documents are needed when exporting goods from Japan?",
     "Which documents are needed when exporting goods from Brazil?", "countries"),
    ("What does HS code 8711.60 cover?", "What does HS code 8711.90 cover?", "numbers"),
    ("Do I need a permit to import more than 500 kg of coffee into India?",
     "Do I need a permit to import more than 5,000 kg of coffee into India?", "numbers"),
    ("Under FOB (Incoterms 2010), who pays the freight?", "Under FOB (Incoterms 2020), who pays the freight?",
     "numbers"),
    ("Under FOB (Incoterms 2020), who pays the freight?", "Under CIF (Incoterms 2020), who pays the freight?",
     "Incoterms"),
    ("Under DAP (Incoterms 2020), who pays the unloading charges?",
     "Under DAP (Incoterms 2020), who pays the import duties?", "cost"),
    ("Which goods can be imported into Chile without an import licence?",
     "Which goods can be imported into Chile with an import licence?", "negation"),
    ("Can I file the import declaration before the goods arrive in Canada?",
     "Can I file the import declaration after the goods arrive in Canada?", "before/after"),
    ("Is a certificate of origin required for toys exported to Egypt?",
     "Is an export licence required for toys exported to Egypt?", "subjects"),
    ("How long does clearance of an import take at Rotterdam?",
     "How long does clearance of an import take at Hamburg?", "ports"),
]


@pytest.mark.parametrize("a,b", PARAPHRASES)
def test_two_wordings_of_one_customs_question_fill_the_same_slots(a, b):
    assert is_customs(a) and is_customs(b)
    assert slot_difference(a, b) is None and slot_difference(b, a) is None


@pytest.mark.parametrize("a,b,slot", NEAR_MISSES)
def test_a_question_that_differs_in_one_slot_is_vetoed_by_that_slot(a, b, slot):
    reason = slot_difference(a, b)
    assert reason is not None and slot.lower() in reason.lower(), reason
    assert slot_difference(b, a) == reason


def test_origin_and_destination_are_read_from_the_wording():
    slots = customs_slots("For an export shipment leaving South Korea, which documents must I prepare?")
    assert slots.origins == {"south korea"} and slots.directions == {"export"}
    slots = customs_slots("Do solar panels made in India qualify for preferential duty in the UK?")
    assert slots.origins == {"india"} and slots.countries == {"india", "united kingdom"}


def test_a_question_without_a_customs_cue_takes_the_general_path():
    assert not is_customs("How do I lose weight fast?")
    assert slot_difference("How do I lose weight fast?", "How can I lose weight quickly?") is None


def test_customs_paraphrases_hit_and_one_slot_changes_do_not_on_the_held_out_pairs():
    """The issue's target on the customs dev set's test part (intents that neither the slot
    rules nor the threshold were chosen on): recall >= 0.50 at precision >= 0.95, through
    the cosine gate and the verifier as a lookup runs them."""
    from deployments.cache.training import _served_figures
    from deployments.cache.verifier import PairVerifier
    from deployments.guardrail.evaluation import read_jsonl
    from embassy.embeddings import shared_embedder
    from embassy.settings import CacheSettings

    rows = read_jsonl(Path(__file__).resolve().parents[1] / "data" / "customs_dev" / "cache_test.jsonl")
    verifier = PairVerifier()
    figures = _served_figures(rows, verifier, shared_embedder().embed, CacheSettings().min_cosine)
    assert figures["precision"] >= 0.95 and figures["recall"] >= 0.50, json.dumps(figures)
    assert verifier.customs_threshold < verifier.threshold


def test_an_operators_threshold_is_in_force_on_the_customs_path_too():
    """`cache.verifier_threshold` is one knob: a customs pair whose slots agree is served
    exactly when its probability reaches the operator's threshold, not the calibrated one."""
    from deployments.cache.verifier import PairVerifier

    q = "Which documents do I need to export machine parts to Germany?"
    paraphrase = "What documents are required to export machine parts to Germany?"
    calibrated = PairVerifier()
    assert calibrated.rule(q, paraphrase) == (True, None)  # the customs path, no slot veto
    score = float(calibrated.probabilities([paraphrase], [q])[0])
    strict = PairVerifier(calibrated.root, threshold=min(0.999, score + 0.01))
    lenient = PairVerifier(calibrated.root, threshold=score - 0.01)
    assert strict.customs_threshold == strict.threshold
    assert not strict.verify(paraphrase, [q])[0].accepted
    assert lenient.verify(paraphrase, [q])[0].accepted
