"""Where a streamed answer may be cut (deployments/guardrail/stream_hold.py): only a tail
that could still become an identifier waits; plain text leaves at once."""

from __future__ import annotations

import pytest

from deployments.guardrail.stream_hold import stream_cut

HOLD = 48


@pytest.mark.parametrize("text", ["The", "A", "To do so", "The commercial invoice ", "Yes, it is"])
def test_plain_text_leaves_at_once(text):
    assert stream_cut(text, HOLD) == len(text)


@pytest.mark.parametrize("text,released", [
    ("The commercial", "The "),  # a word being written that is not a common one
    ("Contact Maria", ""),  # a capitalised word
    ("Call +44 20", "Call "),
    ("Write to john", "Write to "),
    ("Write to john.doe", "Write to "),
    ("Deliver to Calle de", "Deliver to "),  # a connector after a capitalised word
    ("Aadhaar 2341 2341", ""),
    ("Passport number: X12", "Passport number: "),
    ("The code is 1\u200b2", "The code is "),  # zero-width characters between digits
    ("PAN ABCPE", ""),
    ("NI number AB 12", "NI number "),
])
def test_a_tail_that_could_become_an_identifier_waits(text, released):
    assert text[:stream_cut(text, HOLD)] == released


def test_the_tail_is_released_once_a_plain_word_ends_it():
    text = "Call +44 20 7946 0958 and the"
    assert stream_cut(text, HOLD) == len(text)


def test_a_long_run_holds_back_no_more_than_an_identifiers_length():
    text = " ".join(["1234"] * 30)
    cut = stream_cut(text, HOLD)
    assert text[cut] == " " and HOLD <= len(text) - cut < HOLD + len("1234 ")


def test_a_capitalised_word_being_written_waits_unless_it_opens_a_sentence():
    assert stream_cut("The consignee is Maria Go", HOLD) == len("The consignee is ")
    assert stream_cut("Her NI number A", HOLD) == len("Her NI number ")
    assert stream_cut("A", HOLD) == 1
    assert stream_cut("A", HOLD, sent="It is paid. ") == 1
    assert stream_cut("A", HOLD, sent="Her NI number ") == 0
