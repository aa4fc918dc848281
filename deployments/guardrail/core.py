"""Guardrail node core: the contract, and the pass-through used until detectors land."""

from __future__ import annotations

from abc import ABC, abstractmethod

from embassy.graph_types import GenerationRequest, GuardVerdict, RequestContext


class Guardrail(ABC):
    @abstractmethod
    async def check_input(self, request: GenerationRequest) -> GuardVerdict:
        """Screen a request before cache and model.

        Returns a verdict whose `request` (possibly redacted) is what continues down the
        graph; `allowed=False` means refuse with `category`. Never raises for content.
        """

    @abstractmethod
    async def check_output(self, ctx: RequestContext, text: str) -> GuardVerdict:
        """Screen an answer before it reaches the caller; `text` is what to send."""


class PassThroughGuardrail(Guardrail):
    """Pass-through: allows every request and answer unchanged. Stands in the graph so that
    the hop's cost is measured from day one; the guardrail issue replaces it."""

    async def check_input(self, request: GenerationRequest) -> GuardVerdict:
        return GuardVerdict(allowed=True, action="pass", request=request)

    async def check_output(self, ctx: RequestContext, text: str) -> GuardVerdict:
        return GuardVerdict(allowed=True, action="pass", text=text)
