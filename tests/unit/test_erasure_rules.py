"""The erasure and invalidation rules that the admin endpoints and the CLI share
(embassy/erasure.py). The stores are in-memory stand-ins: this tests the order of the steps
and the records, not the stores (tests/integration/test_erasure.py runs the real ones)."""

from __future__ import annotations

import asyncio

import pytest

from embassy.erasure import RegionStores, check_match, check_subject, erase_subject
from embassy.errors import InvalidRequest


@pytest.mark.parametrize("subject", ["", "a b", "x" * 129, None, 42, "cust/42"])
def test_a_malformed_subject_is_refused(subject):
    with pytest.raises(InvalidRequest):
        check_subject(subject)


@pytest.mark.parametrize("match,param", [({}, None), ({"colour": "red"}, "colour"), ({"tenant": ""}, "tenant"),
                                         ({"model": 3}, "model"), ({"region": "us"}, "region")])
def test_a_bad_match_is_refused(match, param):
    with pytest.raises(InvalidRequest) as raised:
        check_match(match, "eu")
    assert raised.value.param == param


def test_a_good_match_passes_as_it_is():
    assert check_match({"tenant": "acme", "region": "eu"}, "eu") == {"tenant": "acme", "region": "eu"}


def test_an_erasure_records_first_removes_everywhere_then_records_what_it_did():
    steps: list[tuple] = []

    async def record(action, fields):
        steps.append(("record", action, fields))
        return len(steps)

    async def invalidate(match):
        steps.append(("cache", match))
        return None  # the cache was unreachable: reported as such, not as 0

    async def delete_documents(subject, tenant):
        steps.append(("documents", subject, tenant))
        return [{"document_id": "d1", "source": "a.md", "chunks": 3}, {"document_id": "d2", "source": "b.md",
                                                                      "chunks": 2}]

    async def tombstone(subject, tenant, by, requested):
        steps.append(("tombstone", subject, tenant, by, requested))
        return 7

    out = asyncio.run(erase_subject("eu", "cust-42", "acme", "operator",
                                    RegionStores(record, invalidate, delete_documents, tombstone)))
    assert [s[0] for s in steps] == ["record", "cache", "documents", "tombstone", "record"]
    assert steps[0][1:] == ("erase.requested", {"subject": "cust-42", "tenant_erased": "acme"})
    assert steps[3] == ("tombstone", "cust-42", "acme", "operator", 1)  # names the request's record
    assert out["cache_entries_removed"] is None and out["chunks_removed"] == 5 and out["audit_records_tombstoned"] == 7
    assert steps[4][1] == "erase" and "documents_removed" not in steps[4][2] and steps[4][2]["chunks_removed"] == 5
