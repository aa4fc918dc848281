"""Ray Serve shim over the guardrail core. `graphs/` turns it into a deployment."""

from __future__ import annotations

from deployments.guardrail.core import PassThroughGuardrail
from embassy.graph_types import GenerationRequest, GuardVerdict, RequestContext


class GuardrailDeployment:
    def __init__(self, settings: dict) -> None:
        self.core = PassThroughGuardrail()

    async def check_input(self, request: GenerationRequest) -> GuardVerdict:
        return await self.core.check_input(request)

    async def check_output(self, ctx: RequestContext, text: str) -> GuardVerdict:
        return await self.core.check_output(ctx, text)

    async def ready(self) -> bool:
        return True
