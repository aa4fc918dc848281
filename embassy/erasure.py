"""Erasing a data subject and invalidating cache entries in one region: the checks, the order
of the steps and the records, shared by the admin endpoints (`POST /v1/admin/erase`,
`POST /v1/admin/cache/invalidate`) and the CLI (`embassy erase`, `embassy cache invalidate`).
Each caller brings its own way to reach the region's stores (Ray handles, or the stores
opened directly)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from embassy.errors import InvalidRequest

SUBJECT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
MATCH_FIELDS = ("tenant", "model", "model_version", "corpus_version", "region")


def check_subject(subject: Any) -> str:
    if not isinstance(subject, str) or not SUBJECT_ID.match(subject):
        raise InvalidRequest("'subject' must be 1-128 letters, digits or ._:-", param="subject")
    return subject


def check_match(match: dict[str, Any], region: str) -> dict[str, str]:
    """A cache-invalidation match: known fields with non-empty string values, at least one,
    and never another region's (each region's Redis is its own)."""
    bad = [k for k, v in match.items() if k not in MATCH_FIELDS or not isinstance(v, str) or not v]
    if bad:
        raise InvalidRequest(f"Unknown or empty field(s) {sorted(bad)}; match on one or more of "
                             f"{list(MATCH_FIELDS)}.", param=bad[0])
    if not match:
        raise InvalidRequest(f"Match on one or more of {list(MATCH_FIELDS)}.", param=None)
    if match.get("region", region) != region:
        raise InvalidRequest(f"This is region '{region}'; invalidate another region's cache there.",
                             param="region")
    return match


@dataclass
class RegionStores:
    """What an erasure acts on. `invalidate` returns the entries removed, or None when the
    cache could not be reached (the erasure is then incomplete and says so)."""

    record: Callable[[str, dict], Awaitable[int | None]]  # an admin audit record; its sequence number
    invalidate: Callable[[dict], Awaitable[int | None]]
    delete_documents: Callable[[str, str], Awaitable[list[dict[str, Any]]]]
    tombstone: Callable[[str, str, str, int | None], Awaitable[int]] | None  # None: no audit trail


async def erase_subject(region: str, subject: str, tenant: str, by: str, stores: RegionStores) -> dict[str, Any]:
    """Remove the subject's cache entries, documents and audit content; return what was removed."""
    # The erasure's own record first: the tombstones name it and who asked.
    requested = await stores.record("erase.requested", {"subject": subject, "tenant_erased": tenant})
    entries = await stores.invalidate({"subject": subject, "tenant": tenant})
    documents = await stores.delete_documents(subject, tenant)
    records = await stores.tombstone(subject, tenant, by, requested) if stores.tombstone else 0
    out = {"region": region, "subject": subject, "tenant": tenant, "cache_entries_removed": entries,
           "documents_removed": documents, "chunks_removed": sum(d["chunks"] for d in documents),
           "audit_records_tombstoned": records}
    await stores.record("erase", {k: v for k, v in out.items() if k != "documents_removed"})
    return out
