"""PII on customs traffic (real spaCy model): the trade's codes, reference numbers, ports,
vessels and companies are not PII; identifiers of every claimed type are found in several
national formats and through obfuscations; `embassy eval guard --task pii` scores every
type on the customs development set (tests/data/customs_dev)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deployments.guardrail.normalize import normalize
from deployments.guardrail.pii import PII_TYPES, PiiDetector
from embassy.cli import app

DEV = Path(__file__).resolve().parents[2] / "data" / "customs_dev"


@pytest.fixture(scope="module")
def detector() -> PiiDetector:
    return PiiDetector()


@pytest.mark.parametrize("text", [
    "Goods classified under HTS 8504.40.9580 and HS 8711.60, CN 8517 62 00.",
    "Tariff heading 8471 30 01 applies; reclassify 9403.60.80 to 9403 60 10.",
    "Invoice No. INV-2024-00173 and PO 4500123456 for USD 12,450.00, ETD 12.03.2025.",
    "B/L No. MAEU123456789, AWB 176-12345675, container MSKU 123456-7, booking 245291973.",
    "Port of discharge: Nhava Sheva\nPlace of delivery: Tuas\nCarton 12 of 40",
    "Job 2024/117 ready.\nJan shipments through Jebel Ali cleared on 4 Feb 2025.",
    "Hanse Logistics GmbH ships via Genoa on the MSC Anna, FOB Santos (Incoterms 2020).",
    "Sheva Freight LLP books the Maersk Elba, CIF Valencia.",
    # Countries that are first names in some locale's name list: places here.
    "What documents are needed to export wine from France to Japan?",
    "Is a certificate of origin needed for tea from Kenya, Chad or Oman into Ireland?",
])
def test_trade_look_alikes_are_not_pii(detector, text):
    assert detector.find(normalize(text)) == [], [(f.type, f.text) for f in detector.find(normalize(text))]


@pytest.mark.parametrize("kind,text,value", [
    ("US_SSN", "SSN 330323134 for the bond.", "330323134"),
    ("US_SSN", "SSN 6 6 3 2 4 7 8 0 5 on file.", "6 6 3 2 4 7 8 0 5"),
    ("US_SSN", "social security number 557.64.1651 here.", "557.64.1651"),
    ("PASSPORT", "passport no. C99TV1V66 issued in Berlin.", "C99TV1V66"),
    ("PASSPORT", "Passport Number: 12AB34567 (France).", "12AB34567"),
    ("PASSPORT", "pasaporte PAA123456 del viajero.", "PAA123456"),
    ("AADHAAR", "Aadhaar 7283   1012   7972 verified.", "7283   1012   7972"),
    ("AADHAAR", "Aadhaar no. 6866.1826.0887 verified.", "6866.1826.0887"),
    ("EMIRATES_ID", "Emirates ID 784.1988.8877180.9 attached.", "784.1988.8877180.9"),
    ("IBAN", "Beneficiary IBAN: ES76 4086 9432 5171 7597 4041 for the release.", "ES76 4086 9432 5171 7597 4041"),
    ("IBAN", "Pay to N L 7 0 A B N A 0 9 6 8 2 6 2 2 2 4 today.", "N L 7 0 A B N A 0 9 6 8 2 6 2 2 2 4"),
    ("PHONE", "call + 6 5 9 1 2 1 3 2 4 9 after nine.", "+ 6 5 9 1 2 1 3 2 4 9"),
    ("PHONE", "Tel: (719)   201   0572 after nine.", "(719)   201   0572"),
    ("ADDRESS", "deliver to Plot No. 112, Peenya Industrial Area, Bengaluru 560058.",
     "Plot No. 112, Peenya Industrial Area, Bengaluru 560058"),
    ("ADDRESS", "Consignee address: Calle de Alcala 45, 28014 Madrid.", "Calle de Alcala 45"),
    ("PERSON", "Attn: Priya Raghavan, Tuas Marine Pte Ltd.", "Priya Raghavan"),
])
def test_customs_identifiers_are_found_as_written(detector, kind, text, value):
    assert (kind, value) in _found_as_written(detector, text)


def test_full_width_digits_with_joiners_are_found_as_written(detector):
    text = "SSN \uff11\uff19\uff17\u200c\uff11\uff10\uff17\u2060\uff11\uff10\uff19 on file."
    found = _found_as_written(detector, text)
    assert [k for k, _ in found] == ["US_SSN"] and found[0][1].startswith("\uff11") and found[0][1].endswith("\uff19")


def _found_as_written(detector: PiiDetector, text: str) -> list[tuple[str, str]]:
    return [(f.type, f.text) for f in detector.find_as_written(text)]


def test_eval_scores_every_claimed_type_on_the_customs_test_split():
    result = CliRunner().invoke(app, ["eval", "guard", "--task", "pii", "--data", str(DEV / "pii_test.jsonl"), "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output.strip().splitlines()[-1])
    assert set(scores["per_type"]) == set(PII_TYPES)
    measured = [t for t, v in scores["per_type"].items() if v["support"]]
    assert len(measured) >= 13, measured  # every type the set labels is scored, not only Presidio's eight
    assert scores["precision"] >= 0.95 and scores["recall"] >= 0.95, scores
