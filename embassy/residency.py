"""Residency enforced at a region's door, before anything of a request is processed or kept.

The data subject's jurisdiction is the tenant's (or, for tenants allowed to, the
`x-embassy-data-subject` header's). If this region may not process it, the request is
refused with 421 Misdirected Request naming the endpoint of a region that may and is up;
if every region that may is down, with 503: it fails closed and is never served
elsewhere. The payload itself never crosses a border: the only cross-region traffic is
health probes of the other regions' `/readyz`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass

from embassy.errors import InvalidRequest, MisdirectedRequest, ServiceUnavailable, UnknownJurisdiction
from embassy.tenants import Tenant
from embassy.topology import Topology

log = logging.getLogger("embassy.residency")
SUBJECT_JURISDICTION_HEADER = "x-embassy-data-subject"
SUBJECT_ID_HEADER = "x-embassy-subject-id"
_JURISDICTION = re.compile(r"^[A-Z]{2}$")
_SUBJECT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@dataclass(frozen=True)
class Admission:
    jurisdiction: str
    may_store: bool  # false: processed here, but nothing of it is kept (no cache entry)
    subject: str | None = None


class ResidencyGate:
    """`topology=None`: a single region that serves every tenant (development)."""

    def __init__(self, topology: Topology | None, region: str, probe_ttl_s: float = 5.0,
                 probe_timeout_s: float = 1.0) -> None:
        self.topology = topology
        self.region = region
        self.probe_ttl_s = probe_ttl_s
        self.probe_timeout_s = probe_timeout_s
        self._health: dict[str, tuple[float, bool]] = {}

    async def admit(self, tenant: Tenant, jurisdiction_header: str | None, subject_header: str | None) -> Admission:
        """Raises:
            InvalidRequest: a header the tenant may not send, or a malformed or unknown code.
            UnknownJurisdiction: the tenant's own jurisdiction is unknown to the topology (403).
            MisdirectedRequest: this region may not process the subject's data (421).
            ServiceUnavailable: no region that may is up (503).
        """
        subject = None
        if subject_header is not None:
            if not _SUBJECT_ID.match(subject_header):
                raise InvalidRequest(f"{SUBJECT_ID_HEADER} must be 1-128 letters, digits or ._:-",
                                     param=SUBJECT_ID_HEADER)
            subject = subject_header
        jurisdiction = tenant.jurisdiction
        if jurisdiction_header is not None:
            if not tenant.subject_header:
                raise InvalidRequest(f"Your key may not set {SUBJECT_JURISDICTION_HEADER}; the tenant's "
                                     "jurisdiction applies.", param=SUBJECT_JURISDICTION_HEADER)
            if not _JURISDICTION.match(jurisdiction_header):
                raise InvalidRequest(f"{SUBJECT_JURISDICTION_HEADER} must be a two-letter jurisdiction code.",
                                     param=SUBJECT_JURISDICTION_HEADER)
            jurisdiction = jurisdiction_header
        if self.topology is None:
            return Admission(jurisdiction, True, subject)
        # A member state's code is its union's jurisdiction (DE -> EU): the policy is the
        # union's, never the permissive default. A code the topology does not know is
        # refused, not served under that default.
        code, jurisdiction = jurisdiction, self.topology.jurisdiction_of(jurisdiction)
        if not self.topology.knows(code):
            if jurisdiction_header is not None:
                raise InvalidRequest(f"{SUBJECT_JURISDICTION_HEADER}: {code!r} is not a country or jurisdiction "
                                     "this deployment knows.", param=SUBJECT_JURISDICTION_HEADER)
            raise UnknownJurisdiction(f"Your tenant's jurisdiction {code!r} is not in this deployment's topology; "
                                   "an operator must correct the tenant.")
        policy = self.topology.residency(jurisdiction, tenant.id)
        if policy.allows(self.region):
            return Admission(jurisdiction, policy.allows(self.region, "store"), subject)
        candidates = [r for r in self.topology.regions if policy.allows(r)]
        for region in candidates:
            if await self._is_up(region):
                endpoint = self.topology.regions[region].endpoint
                raise MisdirectedRequest(
                    f"This region ({self.region}) may not process data of {jurisdiction} data subjects; "
                    f"send the request to {endpoint}.", headers={"x-embassy-region-endpoint": endpoint})
        raise ServiceUnavailable(
            f"No region that may process data of {jurisdiction} data subjects is available; it is not "
            "served elsewhere. Please retry.", headers={"retry-after": "30"})

    async def _is_up(self, region: str) -> bool:
        now = time.monotonic()
        cached = self._health.get(region)
        if cached and now - cached[0] < self.probe_ttl_s:
            return cached[1]
        ok = await asyncio.to_thread(self._probe, self.topology.regions[region].endpoint)
        self._health[region] = (now, ok)
        return ok

    def _probe(self, endpoint: str) -> bool:
        import httpx

        try:
            return httpx.get(f"{endpoint.rstrip('/')}/readyz", timeout=self.probe_timeout_s).status_code == 200
        except httpx.HTTPError:
            return False
