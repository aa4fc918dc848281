"""Admission at the ingress: who the caller is, whether this region may process its data
subject's data, which models it may use, and whether there is a slot for it now. Every
check here runs before the graph does any work, most before a byte of the body is read."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from embassy import metrics
from embassy.errors import InvalidRequest, ModelNotFound, Overloaded, PermissionDenied, ServiceUnavailable
from embassy.residency import SUBJECT_ID_HEADER, SUBJECT_JURISDICTION_HEADER, Admission, ResidencyGate
from embassy.settings import EmbassySettings
from embassy.tenants import KeyStore, Tenant


class Gatekeeper:
    def __init__(self, settings: EmbassySettings, keys: KeyStore, residency: ResidencyGate,
                 models: Mapping[str, int], readiness: Callable[[], dict[str, bool]]) -> None:
        self.settings = settings
        self.keys = keys
        self.residency = residency
        self.models = models  # served model -> context length
        self.readiness = readiness
        self._inflight = 0

    def authenticate(self, headers: Mapping[str, str]) -> Tenant:
        """The tenant of the key in `Authorization` (401 otherwise)."""
        return self.keys.authenticate(headers.get("authorization"))

    def operator_or_tenant(self, headers: Mapping[str, str]) -> Tenant | None:
        """Admin endpoints: None for an operator key, else the key's tenant."""
        return self.keys.authenticate_admin_or_tenant(headers.get("authorization"))

    async def subject_residency(self, tenant: Tenant, headers: Mapping[str, str]) -> Admission:
        """Raises as `ResidencyGate.admit` when this region may not process the subject's data."""
        return await self.residency.admit(tenant, headers.get(SUBJECT_JURISDICTION_HEADER),
                                          headers.get(SUBJECT_ID_HEADER))

    def named_tenant(self, name: Any) -> Tenant:
        """The tenant an operator's call acts for (`"tenant"` in its body)."""
        tenant = self.keys.tenants.get(name) if isinstance(name, str) else None
        if tenant is None:
            raise InvalidRequest("An operator key must name a configured tenant in 'tenant'.", param="tenant")
        return tenant

    def tenant_label(self, tenant: Tenant | None) -> str:
        return tenant.id if tenant and tenant.id in self.keys.tenants else "unknown"

    def authorize_model(self, tenant: Tenant, model: str) -> None:
        if model not in self.models:
            raise ModelNotFound(f"The model '{model}' does not exist.", param="model")
        if model not in tenant.models:
            raise PermissionDenied(f"Your key may not use the model '{model}'.", param="model")

    def take_slot(self) -> None:
        """One of `requests.max_inflight` slots, while every node has a replica; `release_slot` after."""
        if self._inflight >= self.settings.requests.max_inflight:
            raise Overloaded("The server is at capacity. Please retry shortly.",
                             retry_after_s=self.settings.requests.retry_after_s)
        down = sorted(n for n, ok in self.readiness().items() if not ok)
        if down:
            raise ServiceUnavailable(f"Service temporarily unavailable ({', '.join(down)} not ready). "
                                     "Please retry.", headers={"retry-after": "5"})
        self._inflight += 1
        metrics.INFLIGHT.labels(self.settings.region).inc()

    def release_slot(self) -> None:
        self._inflight -= 1
        metrics.INFLIGHT.labels(self.settings.region).dec()
