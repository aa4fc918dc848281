"""PII detection (real spaCy model), check digits, normalization and placeholders."""

from __future__ import annotations

import pytest

from deployments.guardrail import checksums
from deployments.guardrail.normalize import normalize
from deployments.guardrail.pii import PiiDetector, Redaction


@pytest.fixture(scope="module")
def detector() -> PiiDetector:
    return PiiDetector()


@pytest.mark.parametrize("kind,text,value", [
    ("EMAIL", "Write to jane.doe+customs@example.co.uk today.", "jane.doe+customs@example.co.uk"),
    ("PHONE", "Call +44 20 7946 0958 after nine.", "+44 20 7946 0958"),
    ("PHONE", "Call (212) 555-0147 after nine.", "(212) 555-0147"),
    ("PHONE", "Ring 030 12345678 in Berlin.", "030 12345678"),
    ("CREDIT_CARD", "Card 4111 1111 1111 1111 was charged.", "4111 1111 1111 1111"),
    ("IBAN", "Pay to GB82 WEST 1234 5698 7654 32 please.", "GB82 WEST 1234 5698 7654 32"),
    ("IP_ADDRESS", "The host 192.168.10.24 timed out.", "192.168.10.24"),
    ("IP_ADDRESS", "Reach 2001:db8::8a2e:370:7334 over v6.", "2001:db8::8a2e:370:7334"),
    ("US_SSN", "My SSN is 123-45-6789.", "123-45-6789"),
    ("UK_NINO", "NI number AB 12 34 56 C on file.", "AB 12 34 56 C"),
    ("AADHAAR", "Aadhaar 2341 2341 2346 verified.", "2341 2341 2346"),
    ("PAN", "PAN ABCPE1234F for the importer.", "ABCPE1234F"),
    ("NRIC", "NRIC S1234567D belongs to the consignee.", "S1234567D"),
    ("EMIRATES_ID", "Emirates ID 784-1980-1234567-8 attached.", "784-1980-1234567-8"),
    ("PASSPORT", "Passport number: X1234567 expires soon.", "X1234567"),
    ("DATE_OF_BIRTH", "She was born on 12/03/1984 in Porto.", "12/03/1984"),
    ("PERSON", "The consignee is Maria Gonzalez from Madrid.", "Maria Gonzalez"),
    ("ADDRESS", "Deliver to 221 Baker Street, Suite 4 by Monday.", "221 Baker Street, Suite 4"),
    ("ADDRESS", "The office is at Loorenstrasse 149 in Zurich.", "Loorenstrasse 149"),
])
def test_each_entity_type_is_found(detector, kind, text, value):
    found = [(f.type, f.text) for f in detector.find(text)]
    assert (kind, value) in found, found


@pytest.mark.parametrize("text", [
    "Card 4111 1111 1111 1112 was charged.",          # Luhn fails
    "Pay to GB82 WEST 1234 5698 7654 33 please.",     # mod-97 fails
    "Aadhaar 2341 2341 2345 verified.",               # Verhoeff fails
    "NRIC S1234567A belongs to the consignee.",       # check letter fails
    "SSN 000-12-3456 is not issued.",                 # area 000 never issued
    "The router answers at 999.300.1.1 sometimes.",   # not an IP address
])
def test_checksum_invalid_numbers_are_left_alone(detector, text):
    assert detector.find(text) == [], detector.find(text)


def test_check_digit_functions():
    assert checksums.luhn("4111111111111111") and not checksums.luhn("4111111111111112")
    assert checksums.iban("GB82WEST12345698765432") and not checksums.iban("GB82WEST12345698765433")
    assert checksums.verhoeff("234123412346") and not checksums.verhoeff("234123412345")
    assert checksums.sg_nric("S1234567D") and checksums.sg_nric("T1234567J") and not checksums.sg_nric("S1234567A")


def test_obfuscated_identifiers_are_caught_after_normalization(detector):
    # Full-width digits, zero-width spaces and a bidi override inside a card number and an e-mail.
    text = "Card ４１１１ １１１１\u200b １１１１ １１１１, mail ja\u200bne@exa\u202emple.com"
    normalized = normalize(text)
    kinds = {f.type for f in detector.find(normalized)}
    assert {"CREDIT_CARD", "EMAIL"} <= kinds
    assert detector.find(text) == [] or {f.type for f in detector.find(text)} != kinds


def test_same_value_same_placeholder_and_round_trip(detector):
    text = "Mail jane@example.com, then JANE@example.com again; Bob Smith and Ann Lee sign. Bob Smith pays."
    redaction = Redaction()
    redacted = redaction.apply(text, detector.find(text))
    assert "jane@example.com" not in redacted.lower() and "Bob Smith" not in redacted
    assert redacted.count("<EMAIL_1>") == 2 and "<EMAIL_2>" not in redacted
    assert redacted.count("<PERSON_1>") == 2 and "<PERSON_2>" in redacted
    assert redaction.restore(redacted).replace("JANE@", "jane@") == text.replace("JANE@", "jane@")
    # A placeholder map survives the trip between nodes.
    again = Redaction.from_mapping(redaction.mapping)
    assert again.restore("Dear <PERSON_1>, we wrote to <EMAIL_1>.") == "Dear Bob Smith, we wrote to jane@example.com."
    assert again.restore("<PERSON_9> is unknown") == "<PERSON_9> is unknown"


def test_ner_reads_only_the_sentences_that_could_name_someone():
    from deployments.guardrail.pii import _ner_spans

    text = ("It lists 240 cartons under HS 6109.10. The consignee is Mr. J. Smith in Hamburg. "
            "Payment went out on Tuesday. the contact is lena andersson. The value is EUR 48,000.")
    spans = _ner_spans(text)
    read = [t for _, t in spans]
    assert all(text[o:o + len(t)] == t for o, t in spans)  # offsets point back into the text
    # "Mr. J." does not end a sentence; lower-case names from the name lists still count.
    assert [t.strip() for t in read] == ["The consignee is Mr. J. Smith in Hamburg.", "the contact is lena andersson."]


def test_a_name_late_in_a_long_request_is_found_with_its_offsets(detector):
    text = ("Please check the invoice for 240 cartons of cotton shirts. The declared value is EUR 48,000. "
            "Which documents are still missing for import clearance? Contact Maria Gonzalez about it.")
    names = [f for f in detector.find(text) if f.type == "PERSON"]
    assert [text[f.start:f.end] for f in names] == ["Maria Gonzalez"]
