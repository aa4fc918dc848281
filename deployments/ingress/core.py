"""Ingress core: authentication, admission, the walk through the graph, OpenAI responses.

Plain Python; `deployment.py` gives it Ray handles as `GraphNodes`, unit tests give it
deterministic fakes. The ingress orchestrates the graph (guardrail, then cache, then
retriever, then the LLM) instead of chaining node to node, so that streamed tokens cross
one Ray hop (LLM -> ingress) rather than one per node.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import Any, AsyncIterator

from deployments.cache.scope import scope_of
from deployments.ingress.gatekeeper import Gatekeeper
from deployments.ingress.generation import ScreenedGeneration, within
from deployments.ingress.protocol import ChatCompletionRequest
from deployments.ingress.recording import Recorder
from deployments.ingress.request_state import Prepared, RequestRecord
from deployments.retriever.prompt import grounded_request
from deployments.retriever.store import EMPTY_CORPUS
from embassy.audit import erase_subject as erase_subject_records
from embassy.erasure import RegionStores, check_match, check_subject, erase_subject
from embassy.errors import ConfigError, ContentFiltered, EmbassyError, InvalidRequest, PermissionDenied
from embassy.graph_types import CacheLookup, GenerationDelta, GenerationRequest, GuardVerdict, Message, \
    Retrieval, RequestContext, SamplingOptions, StageTimings
from embassy.model_routes import ModelRoute
from embassy.residency import Admission, ResidencyGate
from embassy.settings import EmbassySettings
from embassy.tenants import KeyStore, Tenant
from embassy.topology import load_topology

log = logging.getLogger("embassy.ingress")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
GRAPH_NODES = ("guardrail", "cache", "retriever", "llm")


class GraphNodes(ABC):
    """What the ingress needs from the rest of the graph."""

    @abstractmethod
    async def check_input(self, request: GenerationRequest) -> GuardVerdict: ...

    @abstractmethod
    async def lookup(self, request: GenerationRequest, corpus_version: str | None) -> CacheLookup: ...

    @abstractmethod
    async def store(self, request: GenerationRequest, answer: str, completion_tokens: int,
                    corpus_version: str) -> bool: ...

    @abstractmethod
    async def invalidate_cache(self, match: dict[str, str]) -> int: ...

    @abstractmethod
    async def retrieve(self, request: GenerationRequest) -> Retrieval: ...

    async def corpus_version_of(self, tenant: str) -> str | None:
        """The tenant's corpus version, read without any of the request's text (None: ask
        `retrieve`). The default never knows, so every request is retrieved for."""
        return None

    @abstractmethod
    async def erase_documents(self, subject: str, tenant: str | None) -> list[dict[str, Any]]:
        """Remove the documents about a data subject in this region; returns what was removed."""

    @abstractmethod
    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        """Deltas from the model. Closing the iterator must abort the generation."""

    @abstractmethod
    async def check_output(self, ctx: RequestContext, text: str, redactions: dict[str, str],
                           final: bool, sent: str, system_prompts: tuple[str, ...],
                           context: tuple[str, ...] = ()) -> GuardVerdict:
        """See `deployments.guardrail.core.Guardrail.check_output`."""

    @abstractmethod
    async def guard(self, ctx: RequestContext, text: str, direction: str,
                    context: tuple[str, ...] = ()) -> dict[str, Any]: ...

    @abstractmethod
    def readiness(self) -> dict[str, bool]:
        """Node name -> has a running replica (as last observed)."""


def request_id_from(header: str | None) -> str:
    """Keep a well-formed client id (so callers can correlate); otherwise mint one."""
    if header and _REQUEST_ID.match(header):
        return header
    return uuid.uuid4().hex


@dataclass(frozen=True)
class CacheControl:
    """A caller's say over the cache, from its `Cache-Control` header: `no-cache` skips the
    lookup (a fresh answer), `no-store` keeps the answer out of the cache."""

    lookup: bool = True
    store: bool = True

    @classmethod
    def from_header(cls, value: str | None) -> "CacheControl":
        directives = {d.strip().lower() for d in (value or "").split(",")}
        return cls(lookup="no-cache" not in directives, store="no-store" not in directives)


class MissFlights:
    """Concurrent identical misses make one model call: the first leads, the others wait
    for its answer and are served it as a hit. Per ingress replica (one per host; across
    hosts the cache itself dedupes once the first answer is stored)."""

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future] = {}

    async def join(self, key: str) -> tuple[str, int] | None | bool:
        """True: lead (call the model, then `settle`). Otherwise the leader's (answer,
        completion tokens), or None when it got no cacheable answer."""
        fut = self._waiting.get(key)
        if fut is None:
            self._waiting[key] = asyncio.get_running_loop().create_future()
            return True
        return await asyncio.shield(fut)

    def settle(self, key: str, result: tuple[str, int] | None) -> None:
        fut = self._waiting.pop(key, None)
        if fut is not None and not fut.done():
            fut.set_result(result)


class ChatService:
    """The chat API's behaviour behind the routes: admission (`gatekeeper`), the graph walk
    (`_prepare`, then one `ScreenedGeneration`) and what is recorded (`recorder`)."""

    def __init__(self, settings: EmbassySettings, keys: KeyStore, nodes: GraphNodes,
                 context_lengths: dict[str, int]) -> None:
        self.settings = settings
        self.nodes = nodes
        self.context_lengths = context_lengths
        self.region = settings.region
        self._flights = MissFlights()
        self._corpus_versions: dict[str, str] = {}  # tenant -> last version the retriever reported
        topology = load_topology(settings.resolve(settings.topology)) if settings.topology else None
        if topology is not None and (problems := topology.tenant_problems(settings.tenants)):
            raise ConfigError("tenants the topology cannot place\n" + "\n".join(problems))
        self.gatekeeper = Gatekeeper(settings, keys, ResidencyGate(topology, settings.region), context_lengths,
                                     nodes.readiness)
        self.recorder = Recorder(settings)
        self.routes: dict[str, ModelRoute] = {}  # by model id; none: each model's default version
        self._background: set[asyncio.Task] = set()

    # -- the graph walk ----------------------------------------------------------------

    def _check_sizes(self, body: ChatCompletionRequest) -> None:
        """Bound what the guard will read, before it reads any of it (its time grows with it)."""
        r = self.settings.requests
        if len(body.messages) > r.max_messages:
            raise InvalidRequest(f"A request may hold at most {r.max_messages} messages; this one has "
                                 f"{len(body.messages)}.", param="messages", code="array_above_max_length")
        total = 0
        for i, m in enumerate(body.messages):
            n = len(m.text())
            if n > r.max_message_chars:
                raise InvalidRequest(f"messages[{i}].content has {n} characters; a message may hold at most "
                                     f"{r.max_message_chars}.", param=f"messages.{i}.content",
                                     code="string_above_max_length")
            total += n
        if total > r.max_request_chars:
            raise InvalidRequest(f"The messages hold {total} characters; a request may hold at most "
                                 f"{r.max_request_chars}.", param="messages", code="string_above_max_length")

    def set_routes(self, routes: dict[str, ModelRoute]) -> None:
        """Which version of each model answers (`embassy models deploy`); applied live."""
        unknown = sorted(set(routes) - set(self.context_lengths))
        if unknown:
            raise ConfigError(f"routes name models not served here: {unknown}")
        self.routes = dict(routes)
        self.recorder.sampled_models = {m for m, r in routes.items() if r.canary is not None}

    def _generation_request(self, ctx: RequestContext, body: ChatCompletionRequest,
                            record: RequestRecord) -> GenerationRequest:
        self._check_sizes(body)
        limit = body.completion_limit
        context = self.context_lengths[body.model]
        if limit is not None and limit > context:
            raise InvalidRequest(f"max_tokens is too large: {limit}. This model's maximum context "
                                 f"length is {context} tokens.", param="max_tokens")
        route = self.routes.get(body.model)
        record.model_version = route.pick(record.conversation) if route else None
        return GenerationRequest(
            ctx=ctx, model=body.model, model_version=record.model_version or "",
            messages=tuple(Message(m.role, m.text()) for m in body.messages),
            sampling=SamplingOptions(max_tokens=limit, temperature=body.temperature, top_p=body.top_p,
                                     stop=body.stop_sequences, seed=body.seed,
                                     ignore_eos=body.ignore_eos, min_tokens=body.min_tokens,
                                     response_format=body.response_format.canonical()
                                     if body.response_format else None))

    async def _prepare(self, ctx: RequestContext, body: ChatCompletionRequest, started: float,
                       control: CacheControl, record: RequestRecord) -> Prepared:
        timings = StageTimings()
        timed = self.recorder.timed
        request = self._generation_request(ctx, body, record)
        # Whether the tenant has documents at all is asked beside the input guard: the
        # question carries none of the request's text, and a tenant without a corpus then
        # skips the retriever's hop after the guard (one hop less before the first token).
        version = asyncio.ensure_future(self.nodes.corpus_version_of(ctx.tenant))
        try:
            verdict = await timed(timings, "guardrail_input", self.nodes.check_input(request))
        except BaseException:
            version.cancel()
            raise
        record.guard = {"action": verdict.action, "category": verdict.category}
        record.embedding = verdict.embedding
        if not verdict.allowed:
            version.cancel()
            record.refused_prompt = request.messages[-1].content
            raise ContentFiltered(verdict.category or "policy")
        request = verdict.request or request
        record.prompt = request.messages[-1].content
        # Cache lookup and retrieval both work on the screened request and neither needs
        # the other's result, so they run side by side: one hop of latency, not two.
        # The lookup is restricted to the corpus version last seen for the tenant; the
        # version the retrieval reports is the one that counts. A hit discards the retrieval.
        lookup = (self.nodes.lookup(request, self._corpus_versions.get(ctx.tenant)) if control.lookup
                  else _value(CacheLookup("bypass", reason="the request asked for no-cache")))
        try:
            known = await version
        except Exception:  # the retriever's own call below reports its failure
            known = None
        retrieve = _value(Retrieval(corpus_version=EMPTY_CORPUS, status="no_corpus")) if known == EMPTY_CORPUS \
            else self.nodes.retrieve(request)
        cache, retrieval = await asyncio.gather(timed(timings, "cache", lookup),
                                                timed(timings, "retriever", retrieve))
        self._corpus_versions[ctx.tenant] = retrieval.corpus_version
        if cache.status == "hit" and cache.corpus_version != retrieval.corpus_version:
            cache = CacheLookup("miss", reason="the corpus changed since this answer was stored")
        canned = None
        if (cache.status != "hit" and retrieval.status == "nothing_relevant"
                and self.settings.retriever.when_nothing_relevant == "say_so"):
            canned = self.settings.retriever.no_answer_text
            record.answered_by = "no_answer_text"
        flight = None
        if cache.status == "miss" and control.store and canned is None:  # no-store: not shared either
            key = scope_of(request, request.model_version).entry_key()
            joined = await self._flights.join(key)
            if joined is True:
                flight = key
            elif joined is not None:
                cache = CacheLookup("hit", text=joined[0], reason="coalesced with an identical request",
                                    corpus_version=retrieval.corpus_version, completion_tokens=joined[1])
        # A hit is still cited: the passages are this question's, from the same corpus version.
        passages = list(retrieval.passages)
        request = replace(request, passages=tuple(passages) if cache.status != "hit" else ())
        model_request = grounded_request(request, self.settings.retriever.prompt_template)
        record.cache, record.grounding, record.corpus_version = cache.status, retrieval.status, \
            retrieval.corpus_version
        record.citations = [c.chunk_id for c in passages]
        return Prepared(ctx, body, request, timings, started, verdict, cache, passages,
                         retrieval, model_request, flight, control.store, canned)

    def _settle(self, p: Prepared, answer: str | None, completion_tokens: int) -> None:
        """After a miss: hand its answer (None: nothing cacheable) to the requests waiting on
        it, and offer it to the cache off the response's path."""
        if p.flight is not None:
            self._flights.settle(p.flight, (answer, completion_tokens) if answer is not None else None)
        if answer is not None and p.cache.status == "miss" and p.store and p.canned is None:
            task = asyncio.get_running_loop().create_task(self._store(p, answer, completion_tokens))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _store(self, p: Prepared, answer: str, completion_tokens: int) -> None:
        try:
            await self.nodes.store(p.request, answer, completion_tokens, p.corpus_version)
        except Exception as exc:  # the answer was served; a cache that cannot keep it is no error
            log.warning("cache store failed for request %s: %s", p.ctx.request_id, type(exc).__name__)

    async def invalidate_cache(self, caller: Tenant | None, match: dict[str, Any]) -> dict[str, Any]:
        """`POST /v1/admin/cache/invalidate`: an operator key may match any tags; a tenant
        key only its own entries. Entries live in this region's Redis only."""
        if caller is not None:
            if match.get("tenant", caller.id) != caller.id or "region" in match:
                raise PermissionDenied("A tenant key may invalidate its own entries only.", param="tenant")
            match = {**match, "tenant": caller.id}
        match = check_match(match, self.region)
        removed = await self.nodes.invalidate_cache(match)
        await self.recorder.audit_admin(caller, "cache.invalidate", {"match": match, "removed": removed})
        return {"region": self.region, "match": match, "removed": removed}

    async def erase(self, caller: Tenant | None, data: dict[str, Any]) -> dict[str, Any]:
        """`POST /v1/admin/erase`: a data subject's cache entries, documents and audit content
        in this region. A tenant key erases its own subjects; an operator key names the
        tenant (`"tenant"`): subject ids are per tenant, never matched across tenants."""
        subject = check_subject(data.get("subject"))
        unknown = sorted(set(data) - {"subject", "tenant"})
        if unknown:
            raise InvalidRequest(f"Unknown field(s) {unknown}.", param=unknown[0])
        if caller is None:  # subject ids are per tenant: an operator names whose
            tenant = self.gatekeeper.named_tenant(data.get("tenant")).id
        elif data.get("tenant", caller.id) != caller.id:
            raise PermissionDenied("A tenant key may erase only its own data subjects.", param="tenant")
        else:
            tenant = caller.id

        async def tombstone(*args) -> int:
            return await asyncio.to_thread(erase_subject_records, self.settings.audit_root, *args)
        stores = RegionStores(record=lambda action, fields: self.recorder.audit_admin(caller, action, fields),
                              invalidate=self.nodes.invalidate_cache, delete_documents=self.nodes.erase_documents,
                              tombstone=tombstone if self.recorder.audit is not None else None)
        by = f"tenant:{caller.id}" if caller is not None else "operator"
        out = await erase_subject(self.region, subject, tenant, by, stores)
        log.info("erased data subject in region %s: %d cache entries, %d documents, %d audit records",
                 self.region, out["cache_entries_removed"], len(out["documents_removed"]),
                 out["audit_records_tombstoned"])
        return out

    async def guard(self, tenant: Tenant, text: str, direction: str, request_id: str,
                    context: tuple[str, ...] = (), scores: bool = False) -> dict[str, Any]:
        """`POST /v1/guard`: screen one text with the region's guard, for this tenant.
        `scores`: the exact scores (operators); else only groundedness, which grades the
        caller's own answer and tells nothing about how to pass the input checks."""
        limit = self.settings.guardrail.max_guard_chars
        if len(text) > limit or sum(map(len, context)) > limit:
            raise InvalidRequest(f"'text' and 'context' may hold {limit} characters each.", param="text")
        ctx = RequestContext(request_id, tenant.id, self.region, tenant.jurisdiction)
        verdict = await self.nodes.guard(ctx, text, direction, context)
        if not scores and "scores" in verdict:
            verdict["scores"] = {k: v for k, v in verdict["scores"].items() if k == "groundedness"}
        return {"request_id": request_id, "direction": direction, **verdict}

    def _embassy_field(self, p: Prepared, output: GuardVerdict | None,
                       final: GuardVerdict | None = None) -> dict[str, Any]:
        """`final`: the last output check, the one that scored groundedness (default `output`)."""
        p.timings.add("total", (time.perf_counter() - p.started) * 1000)
        final = final or output
        score = final.scores.get("groundedness") if final else None
        return {
            "region": self.region,
            "request_id": p.ctx.request_id,
            "model_version": p.request.model_version or None,
            "timings_ms": p.timings.values,
            "cache": {"status": p.cache.status, "reason": p.cache.reason,
                      "tokens_saved": p.cache.completion_tokens if p.cache.status == "hit" else 0},
            "citations": [{"document_id": c.document_id, "chunk_id": c.chunk_id, "source": c.source,
                           "score": c.score, "snippet": c.text[:200]} for c in p.passages],
            "grounding": {"status": p.retrieval.status, "corpus_version": p.corpus_version,
                          "screened_injections": p.retrieval.screened_injections,
                          "score": score, "flagged": bool(final and final.unsupported),
                          "unsupported": list(final.unsupported) if final else [],
                          "answered_by": ("cache" if p.cache.status == "hit" else
                                          "no_answer_text" if p.canned is not None else "model")},
            # The verdict, not its scores: exact scores would let a caller tune an attack.
            "guardrail": {"input": {"action": p.guard_input.action, "category": p.guard_input.category},
                          "output": ({"action": output.action, "category": output.category}
                                     if output else None)},
        }

    def _deadline(self, override_ms: float | None) -> float:
        """The request's deadline on the event loop's clock."""
        timeout = self.settings.requests.timeout_s
        if override_ms is not None:  # a caller may shorten its deadline, never extend it
            timeout = min(timeout, override_ms / 1000)
        return asyncio.get_running_loop().time() + timeout

    # -- entry points ------------------------------------------------------------------

    def _context(self, tenant: Tenant, request_id: str, admission: Admission | None,
                 control: CacheControl) -> tuple[RequestContext, CacheControl]:
        admission = admission or Admission(tenant.jurisdiction, True)
        if not admission.may_store:  # processed here, kept only where the policy allows
            control = CacheControl(lookup=control.lookup, store=False)
        return RequestContext(request_id, tenant.id, self.region, admission.jurisdiction, admission.subject), control

    async def answer(self, tenant: Tenant, body: ChatCompletionRequest, request_id: str, *,
                     streaming: bool, record: RequestRecord, timeout_ms: float | None = None,
                     control: CacheControl = CacheControl(), admission: Admission | None = None
                     ) -> ScreenedGeneration:
        """Walk the graph up to the model's first delta: everything that can fail with an
        HTTP status (validation, the guard, the context-length check, the deadline) has
        failed by the time this returns. `record` collects what the request leaves behind."""
        started = time.perf_counter()
        deadline = self._deadline(timeout_ms)
        ctx, control = self._context(tenant, request_id, admission, control)
        p = await within(deadline, self._prepare(ctx, body, started, control, record))
        generation = ScreenedGeneration(
            p, self.nodes, self.recorder, record, self._settle, deadline=deadline,
            screen_every=self.settings.guardrail.stream_screen_chars if streaming else None,
            tenant_label=self.gatekeeper.tenant_label(tenant))
        await generation.start()
        return generation

    async def complete(self, tenant: Tenant, body: ChatCompletionRequest, request_id: str,
                       timeout_ms: float | None = None, control: CacheControl = CacheControl(),
                       admission: Admission | None = None, record: RequestRecord | None = None) -> dict[str, Any]:
        """A non-streaming chat completion, as OpenAI's response body."""
        g = await self.answer(tenant, body, request_id, streaming=False, record=record or RequestRecord(),
                              timeout_ms=timeout_ms, control=control, admission=admission)
        text = "".join([piece async for piece in g.pieces()])
        o = g.outcome
        return {
            "id": f"chatcmpl-{request_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": None, "finish_reason": o.finish}],
            "usage": {"prompt_tokens": o.prompt_tokens, "completion_tokens": o.completion_tokens,
                      "total_tokens": o.prompt_tokens + o.completion_tokens},
            "embassy": self._embassy_field(g.p, o.output, o.final),
        }

    async def stream(self, tenant: Tenant, body: ChatCompletionRequest, request_id: str,
                     timeout_ms: float | None = None, control: CacheControl = CacheControl(),
                     admission: Admission | None = None, record: RequestRecord | None = None
                     ) -> AsyncIterator[bytes]:
        """A streaming chat completion as SSE lines. What can fail with a status fails
        before this returns; the returned iterator only fails by sending an error event."""
        g = await self.answer(tenant, body, request_id, streaming=True, record=record or RequestRecord(),
                              timeout_ms=timeout_ms, control=control, admission=admission)
        return self._sse(g)

    async def _sse(self, g: ScreenedGeneration) -> AsyncIterator[bytes]:
        out = _SseChunks(g.p.ctx.request_id, g.p.body)
        yield out.chunk({"role": "assistant", "content": ""})
        try:
            async for piece in g.pieces():
                yield out.chunk({"content": piece})
        except EmbassyError as exc:
            # Headers are gone: report in-band, as OpenAI does, then end the stream.
            yield b"data: " + json.dumps(exc.body()).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"
            return
        o = g.outcome
        yield out.chunk({}, o.finish, embassy=self._embassy_field(g.p, o.output, o.final))
        if out.include_usage:
            yield out.usage(o.prompt_tokens, o.completion_tokens)
        yield b"data: [DONE]\n\n"


class _SseChunks:
    """OpenAI's `chat.completion.chunk` events for one response."""

    def __init__(self, request_id: str, body: ChatCompletionRequest) -> None:
        self.include_usage = bool(body.stream_options and body.stream_options.include_usage)
        self.base: dict[str, Any] = {"id": f"chatcmpl-{request_id}", "object": "chat.completion.chunk",
                                     "created": int(time.time()), "model": body.model}
        if self.include_usage:
            self.base["usage"] = None

    def chunk(self, delta: dict, finish: str | None = None, **extra: Any) -> bytes:
        payload = {**self.base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                             "finish_reason": finish}], **extra}
        return _event(payload)

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        """The closing usage event (send it when `include_usage`)."""
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        return _event({**self.base, "choices": [], "usage": usage})


def _event(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


async def _value(value):
    return value
