"""Ray Serve shim over the guardrail core. `graphs/` turns it into a deployment.

The guard's part of the settings arrives again as `user_config` when an operator changes
thresholds or policies: Serve calls `reconfigure` on the running replicas, no restart.
A check that raises fails closed: the caller gets 503, never an unguarded pass.

Screening is CPU work (patterns, NER, the encoder): it runs in one worker thread, off the
replica's event loop, so one long text never stalls the replica's other calls, and past
`guardrail.screen_timeout_s` the caller gets 503 (fail closed) without waiting for it.
One thread: spaCy's pipeline is not documented as thread-safe, and the GIL would make
more threads share one core anyway.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from deployments.guardrail.core import EmbassyGuardrail
from embassy.errors import EmbassyError, ServiceUnavailable
from embassy.graph_types import GenerationRequest, GuardVerdict, Message, RequestContext
from embassy.settings import EmbassySettings

log = logging.getLogger("embassy.guardrail")


class GuardrailDeployment:
    screen_timeout_s = 2.0  # guardrail.screen_timeout_s, set by reconfigure

    def __init__(self, settings: dict, user_config: dict | None = None) -> None:
        """`settings` without the live parts (embassy.serve_apps.static_settings); Serve then
        calls `reconfigure` with them. `user_config` here serves callers without Serve."""
        self._base = settings
        self.core: EmbassyGuardrail | None = None
        self._screening = ThreadPoolExecutor(1, thread_name_prefix="guard-screen")
        if user_config is not None:
            self.reconfigure(user_config)

    def reconfigure(self, user_config: dict) -> None:
        """`user_config`: {"guardrail": live guard fields, "tenant_pii": {tenant: policy}}."""
        merged = {**self._base, "guardrail": {**self._base.get("guardrail", {}), **user_config["guardrail"]},
                  "tenants": {name: {**t, "pii": user_config.get("tenant_pii", {}).get(name, {})}
                              for name, t in self._base.get("tenants", {}).items()}}
        settings = EmbassySettings.model_validate(merged)
        self.screen_timeout_s = settings.guardrail.screen_timeout_s
        if self.core is None:
            self.core = EmbassyGuardrail(settings)
        else:
            self.core.configure(settings)

    async def _fail_closed(self, what: str, check: Callable[[], GuardVerdict]) -> GuardVerdict:
        """Run a check in the screening thread; if it raises anything but an EmbassyError,
        or passes the deadline, refuse with 503."""
        timeout = self.screen_timeout_s
        try:
            return await asyncio.wait_for(
                asyncio.get_running_loop().run_in_executor(self._screening, check), timeout)
        except EmbassyError:
            raise
        except TimeoutError:
            log.error("guardrail %s passed its %.1f s deadline", what, timeout)
            raise ServiceUnavailable("The content filter took too long; the request was not processed.",
                                     code="guardrail_timeout") from None
        except Exception as exc:
            # Never log the text being screened; the exception type is enough to find the bug.
            log.error("guardrail %s failed: %s", what, type(exc).__name__)
            raise ServiceUnavailable("The content filter is unavailable; the request was not processed. "
                                     "Please retry.", code="guardrail_unavailable") from None

    async def check_input(self, request: GenerationRequest) -> GuardVerdict:
        return await self._fail_closed("input check", lambda: self.core.screen_input(request))

    async def check_output(self, ctx: RequestContext, text: str, redactions: dict | None = None,
                           final: bool = True, sent: str = "", system_prompts: tuple[str, ...] = (),
                           context: tuple[str, ...] = ()
                           ) -> GuardVerdict:
        return await self._fail_closed("output check", lambda: self.core.screen_output(
            ctx.tenant, text, redactions, final, sent, system_prompts, context))

    async def guard(self, ctx: RequestContext, text: str, direction: str,
                    context: tuple[str, ...] = ()) -> dict[str, Any]:
        """`POST /v1/guard`: the verdict on one text, with findings and the redacted text;
        for output with `context` (passages), its groundedness too."""
        if direction == "input":
            request = GenerationRequest(ctx=ctx, model="", messages=(Message("user", text),))
            v = await self._fail_closed("guard call", lambda: self.core.screen_input(request))
            redacted = v.request.messages[-1].content if v.request else None
        else:
            v = await self._fail_closed("guard call", lambda: self.core.screen_output(ctx.tenant, text, context=context))
            redacted = v.text
        return {"allowed": v.allowed, "action": v.action,
                "categories": [v.category] if v.category else [],
                "scores": v.scores,
                "findings": [{"type": t, "start": s, "end": e} for t, s, e in v.findings],
                "unsupported": list(v.unsupported), "text": redacted}

    async def ready(self) -> bool:
        return self.core is not None
