"""Ray Serve shim over the ingress: gives the core Ray handles and serves its FastAPI app."""

from __future__ import annotations

import asyncio
import time
import logging
from typing import AsyncIterator

from ray import serve

from deployments.ingress.app import create_app
from deployments.ingress.core import ChatService, GraphNodes
from embassy import metrics
from embassy.errors import EmbassyError, Overloaded, ServiceUnavailable
from embassy.graph_types import CacheLookup, GenerationDelta, GenerationRequest, GuardVerdict, Retrieval, \
    RequestContext
from embassy.settings import EmbassySettings
from embassy.tenants import KeyStore
from embassy.model_routes import ModelRoute, initial_routes
from graphs.names import LLM_DEPLOYMENT, llm_app_name

log = logging.getLogger("embassy.ingress")


def translate_ray_error(exc: BaseException) -> BaseException:
    """Turn Ray's wrappers into the graph's own errors; leave anything else as it is."""
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError
    from ray.serve.exceptions import BackPressureError

    if isinstance(exc, RayTaskError) and isinstance(exc.cause, EmbassyError):
        return exc.cause
    if isinstance(exc, EmbassyError):
        return exc
    if isinstance(exc, BackPressureError):
        return Overloaded("The model's queue is full. Please retry shortly.")
    if isinstance(exc, (RayActorError, ActorDiedError, ActorUnavailableError)):
        return ServiceUnavailable("A model replica failed. Please retry.", headers={"retry-after": "5"})
    return exc


class RayGraphNodes(GraphNodes):
    """The graph's nodes behind Ray Serve handles, plus a poller of their replica counts.

    Each model version runs as its own Serve application (graphs/regional.py); its handle
    is looked up by name on first use, so deploying or retiring a version changes only the
    routes (`set_routes`), never this replica's arguments."""

    def __init__(self, guardrail, cache, retriever, models: list[str], *, region: str, poll_s: float,
                 app_name: str = "") -> None:
        self.guardrail, self.cache, self.retriever = guardrail, cache, retriever
        self.models = list(models)
        self.routes: dict[str, ModelRoute] = {}
        self._streams: dict[tuple[str, str], object] = {}  # streaming handles, once per model version
        self.region = region
        self.poll_s = poll_s
        self._app_name = app_name
        self._ready = {name: False for name in [*("guardrail", "cache", "retriever"),
                                                *(f"llm:{m}" for m in self.models)]}
        self._task: asyncio.Task | None = None
        self._inflight: asyncio.Task | None = None  # the one refresh /readyz callers share
        self._refreshed_at = 0.0

    def set_routes(self, routes: dict[str, ModelRoute]) -> None:
        self.routes = dict(routes)

    def _targets(self) -> dict[str, tuple[str, str]]:
        """Each node's (application, deployment); a model is ready when its stable version is."""
        main = {"guardrail": (self._app_name, self.guardrail.deployment_name),
                "cache": (self._app_name, self.cache.deployment_name),
                "retriever": (self._app_name, self.retriever.deployment_name)}
        return {**main, **{f"llm:{m}": (llm_app_name(self._app_name, m, r.stable), LLM_DEPLOYMENT)
                           for m, r in self.routes.items()}}

    def _stream_handle(self, model: str, version: str):
        # `get_deployment_handle` and `.options()` build new handles: once per version, not per request.
        key = (model, version)
        if key not in self._streams:
            handle = serve.get_deployment_handle(LLM_DEPLOYMENT, llm_app_name(self._app_name, model, version))
            self._streams[key] = handle.options(stream=True)
        return self._streams[key]

    async def _call(self, method, *args):
        try:
            return await method.remote(*args)
        except Exception as exc:
            raise self._translate(exc) from None

    def _translate(self, exc: BaseException) -> BaseException:
        out = translate_ray_error(exc)
        if isinstance(out, ServiceUnavailable):  # a replica died: re-check now, not at the next poll
            asyncio.get_running_loop().create_task(self.refresh())
        return out

    async def check_input(self, request: GenerationRequest) -> GuardVerdict:
        return await self._call(self.guardrail.check_input, request)

    async def lookup(self, request: GenerationRequest, corpus_version: str | None) -> CacheLookup:
        return await self._call(self.cache.lookup, request, corpus_version)

    async def store(self, request: GenerationRequest, answer: str, completion_tokens: int,
                    corpus_version: str) -> bool:
        return await self._call(self.cache.store, request, answer, completion_tokens, corpus_version)

    async def invalidate_cache(self, match: dict[str, str]) -> int:
        return await self._call(self.cache.invalidate, match)

    async def retrieve(self, request: GenerationRequest) -> Retrieval:
        return await self._call(self.retriever.retrieve, request)

    async def corpus_version_of(self, tenant: str) -> str | None:
        return await self._call(self.retriever.corpus_version, tenant)

    async def erase_documents(self, subject: str, tenant: str | None) -> list[dict]:
        return await self._call(self.retriever.erase, subject, tenant)

    async def check_output(self, ctx: RequestContext, text: str, redactions: dict[str, str],
                           final: bool, sent: str, system_prompts: tuple[str, ...],
                           context: tuple[str, ...] = ()) -> GuardVerdict:
        return await self._call(self.guardrail.check_output, ctx, text, redactions, final, sent, system_prompts,
                                context)

    async def guard(self, ctx: RequestContext, text: str, direction: str, context: tuple[str, ...] = ()) -> dict:
        return await self._call(self.guardrail.guard, ctx, text, direction, context)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        version = request.model_version or self.routes[request.model].stable
        response = self._stream_handle(request.model, version).generate.remote(request)
        done = False
        try:
            async for delta in response:
                yield delta
            done = True
        except Exception as exc:
            raise self._translate(exc) from None
        finally:
            if not done:  # client gone, deadline, error: abort the engine request too
                response.cancel()

    # -- readiness ---------------------------------------------------------------------

    def readiness(self) -> dict[str, bool]:
        """Last observed readiness; the chat path reads this without any I/O."""
        return dict(self._ready)

    async def refresh(self) -> dict[str, bool]:
        """Ask Serve's controller how many replicas of each node run.

        serve.status() costs about 30 ms of CPU in this process (it rebuilds and pickles
        router configs), so it runs every `health_poll_s`, on each /readyz, and right
        after a call fails on a dead replica, not per request.
        """
        try:
            # It blocks on the controller: keep it off the event loop.
            status = await asyncio.to_thread(serve.status)
            for node, (app, name) in self._targets().items():
                application = status.applications.get(app)
                info = application.deployments.get(name) if application else None
                running = info.replica_states.get("RUNNING", 0) if info else 0
                self._ready[node] = running > 0
                for state, count in (info.replica_states.items() if info else [("RUNNING", 0)]):
                    metrics.DEPLOYMENT_REPLICAS.labels(self.region, node, str(state)).set(count)
                metrics.NODE_READY.labels(self.region, node).set(1 if running else 0)
            self._refreshed_at = time.monotonic()
        except Exception:
            log.warning("replica status check failed", exc_info=True)
        return self.readiness()

    async def fresh_readiness(self, max_age_s: float = 1.0, max_wait_s: float = 2.0) -> dict[str, bool]:
        """Readiness for /readyz: at most `max_age_s` old, one status call shared by every
        caller, and never more than `max_wait_s` of waiting. While Serve's controller is
        busy (replacing a replica on a loaded host) serve.status() took over 10 s; /readyz
        then answers from the last observed view rather than hang its prober."""
        if time.monotonic() - self._refreshed_at <= max_age_s:
            return self.readiness()
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.get_running_loop().create_task(self.refresh())
        try:
            return await asyncio.wait_for(asyncio.shield(self._inflight), max_wait_s)
        except asyncio.TimeoutError:
            return self.readiness()

    def start_polling(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.poll_s)


@serve.ingress()
class IngressDeployment:
    async def __init__(self, settings: dict, guardrail, cache, retriever) -> None:
        cfg = EmbassySettings.model_validate(settings)
        registry = cfg.registry()
        self.nodes = RayGraphNodes(guardrail, cache, retriever, cfg.models, region=cfg.region,
                                   poll_s=cfg.requests.health_poll_s,
                                   app_name=serve.get_replica_context().app_name)
        self.service = ChatService(cfg, KeyStore.from_settings(cfg), self.nodes,
                                   {m: registry[m].context_length for m in cfg.models})
        self.reconfigure({"routes": {m: r.model_dump(mode="json") for m, r in initial_routes(cfg).items()}})
        self.nodes.start_polling()
        self.service.recorder.start_audit_watch()

    def reconfigure(self, config: dict) -> None:
        """`user_config` {"routes": {model: ModelRoute}}: which version answers, applied to the
        running replica (a swap or canary step restarts nothing)."""
        routes = {m: ModelRoute.model_validate(r) for m, r in (config or {}).get("routes", {}).items()}
        if routes:
            self.service.set_routes(routes)
            self.nodes.set_routes(routes)
            log.info("model routes: %s", {m: r.model_dump(exclude_defaults=True) for m, r in routes.items()})

    def __serve_build_asgi_app__(self):
        # Serve's proxy already keeps or mints x-request-id and echoes it.
        return create_app(self.service, self.nodes.fresh_readiness, echo_request_id=False)
