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
import os
import socket
import re
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import Any, AsyncIterator

from deployments.cache.scope import scope_of
from deployments.ingress.protocol import ChatCompletionRequest
from deployments.retriever.prompt import grounded_request
from embassy import metrics
from embassy.errors import AuditUnavailable, ConfigError, ContentFiltered, EmbassyError, InvalidRequest, ModelNotFound, Overloaded, PermissionDenied, \
    RequestTimeout, ServiceUnavailable
from embassy.graph_types import CacheLookup, GenerationDelta, GenerationRequest, GuardVerdict, Message, \
    Passage, RequestContext, Retrieval, SamplingOptions, StageTimings
from embassy.placeholders import restore
from embassy.audit import AuditIntegrityError, erase_subject, keyed_digest, writer_for
from embassy.drift import DriftDetector
from embassy.residency import Admission, ResidencyGate
from embassy.settings import EmbassySettings
from embassy.tenants import KeyStore, Tenant
from embassy.topology import load_topology

log = logging.getLogger("embassy.ingress")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_SUBJECT = _REQUEST_ID  # data subject ids: the same alphabet
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


@dataclass
class _Prepared:
    ctx: RequestContext
    body: ChatCompletionRequest
    request: GenerationRequest
    timings: StageTimings
    started: float
    guard_input: GuardVerdict
    cache: CacheLookup
    passages: list[Passage]  # cited; the model saw them unless the answer came from the cache
    retrieval: Retrieval
    model_request: GenerationRequest  # `request` with the passages placed in the prompt
    flight: str | None = None  # this request leads the model call others with its key wait on
    store: bool = True
    canned: str | None = None  # nothing relevant retrieved: this answer, without the model

    @property
    def corpus_version(self) -> str:
        return self.retrieval.corpus_version

    def answer_from_cache(self) -> str:
        """A hit's answer for this caller: the stored text is redacted; its placeholders
        become this caller's own values."""
        return restore(self.cache.text or "", self.guard_input.redactions)


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
    def __init__(self, settings: EmbassySettings, keys: KeyStore, nodes: GraphNodes,
                 context_lengths: dict[str, int]) -> None:
        self.settings = settings
        self.keys = keys
        self.nodes = nodes
        self.context_lengths = context_lengths
        self.region = settings.region
        self._inflight = 0
        self._flights = MissFlights()
        self._corpus_versions: dict[str, str] = {}  # tenant -> last version the retriever reported
        topology = load_topology(settings.resolve(settings.topology)) if settings.topology else None
        if topology is not None and (problems := topology.tenant_problems(settings.tenants)):
            raise ConfigError("tenants the topology cannot place\n" + "\n".join(problems))
        self.residency = ResidencyGate(topology, settings.region)
        self.audit = writer_for(settings, f"ingress-{socket.gethostname()}-{os.getpid()}")
        self.audit_failing = False  # the last audit write failed
        d = settings.drift
        self.drift = DriftDetector(d.reference_size, d.window, d.check_every, d.alpha, d.confirm) \
            if d.enabled else None
        self._background: set[asyncio.Task] = set()

    # -- admission ---------------------------------------------------------------------

    def authorize_model(self, tenant: Tenant, model: str) -> None:
        if model not in self.context_lengths:
            raise ModelNotFound(f"The model '{model}' does not exist.", param="model")
        if model not in tenant.models:
            raise PermissionDenied(f"Your key may not use the model '{model}'.", param="model")

    def tenant_label(self, tenant: Tenant | None) -> str:
        return tenant.id if tenant and tenant.id in self.keys.tenants else "unknown"

    def admit(self) -> None:
        if self._inflight >= self.settings.requests.max_inflight:
            raise Overloaded("The server is at capacity. Please retry shortly.",
                             retry_after_s=self.settings.requests.retry_after_s)
        down = sorted(n for n, ok in self.nodes.readiness().items() if not ok)
        if down:
            raise ServiceUnavailable(f"Service temporarily unavailable ({', '.join(down)} not ready). "
                                     "Please retry.", headers={"retry-after": "5"})
        self._inflight += 1
        metrics.INFLIGHT.labels(self.region).inc()

    def release(self) -> None:
        self._inflight -= 1
        metrics.INFLIGHT.labels(self.region).dec()

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

    def _generation_request(self, ctx: RequestContext, body: ChatCompletionRequest) -> GenerationRequest:
        self._check_sizes(body)
        limit = body.completion_limit
        context = self.context_lengths[body.model]
        if limit is not None and limit > context:
            raise InvalidRequest(f"max_tokens is too large: {limit}. This model's maximum context "
                                 f"length is {context} tokens.", param="max_tokens")
        return GenerationRequest(
            ctx=ctx, model=body.model,
            messages=tuple(Message(m.role, m.text()) for m in body.messages),
            sampling=SamplingOptions(max_tokens=limit, temperature=body.temperature, top_p=body.top_p,
                                     stop=body.stop_sequences, seed=body.seed,
                                     ignore_eos=body.ignore_eos, min_tokens=body.min_tokens,
                                     response_format=body.response_format.canonical()
                                     if body.response_format else None))

    async def _timed(self, timings: StageTimings, stage: str, awaitable):
        t0 = time.perf_counter()
        try:
            return await awaitable
        finally:
            self._observe_stage(timings, stage, t0)

    def _observe_stage(self, timings: StageTimings, stage: str, t0: float) -> None:
        """Record a stage that began at `t0` in the response's timings and the histogram."""
        seconds = time.perf_counter() - t0
        timings.add(stage, seconds * 1000)
        metrics.STAGE_LATENCY.labels(self.region, stage).observe(seconds)

    async def _prepare(self, ctx: RequestContext, body: ChatCompletionRequest, started: float,
                       control: CacheControl, trace: dict) -> _Prepared:
        timings = StageTimings()
        request = self._generation_request(ctx, body)
        verdict = await self._timed(timings, "guardrail_input", self.nodes.check_input(request))
        trace["guard"] = {"action": verdict.action, "category": verdict.category}
        trace["_embedding"] = verdict.embedding  # for drift; not written to the audit record
        if not verdict.allowed:  # the refused text is kept only as a keyed digest
            trace["_refused_prompt"] = request.messages[-1].content
            raise ContentFiltered(verdict.category or "policy")
        request = verdict.request or request
        trace["prompt"] = request.messages[-1].content  # as the guard let it through: redacted
        # Cache lookup and retrieval both work on the screened request and neither needs
        # the other's result, so they run side by side: one hop of latency, not two.
        # The lookup is restricted to the corpus version last seen for the tenant; the
        # version the retrieval reports is the one that counts. A hit discards the retrieval.
        lookup = (self.nodes.lookup(request, self._corpus_versions.get(ctx.tenant)) if control.lookup
                  else _value(CacheLookup("bypass", reason="the request asked for no-cache")))
        cache, retrieval = await asyncio.gather(self._timed(timings, "cache", lookup),
                                                self._timed(timings, "retriever", self.nodes.retrieve(request)))
        self._corpus_versions[ctx.tenant] = retrieval.corpus_version
        if cache.status == "hit" and cache.corpus_version != retrieval.corpus_version:
            cache = CacheLookup("miss", reason="the corpus changed since this answer was stored")
        canned = None
        if (cache.status != "hit" and retrieval.status == "nothing_relevant"
                and self.settings.retriever.when_nothing_relevant == "say_so"):
            canned = self.settings.retriever.no_answer_text
            trace["answered_by"] = "no_answer_text"
        flight = None
        if cache.status == "miss" and control.store and canned is None:  # no-store: not shared either
            key = scope_of(request, "").entry_key()
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
        trace.update(cache=cache.status, grounding=retrieval.status, corpus_version=retrieval.corpus_version,
                     citations=[c.chunk_id for c in passages])
        return _Prepared(ctx, body, request, timings, started, verdict, cache, passages,
                         retrieval, model_request, flight, control.store, canned)

    def _settle(self, p: _Prepared, answer: str | None, completion_tokens: int) -> None:
        """After a miss: hand its answer (None: nothing cacheable) to the requests waiting on
        it, and offer it to the cache off the response's path."""
        if p.flight is not None:
            self._flights.settle(p.flight, (answer, completion_tokens) if answer is not None else None)
        if answer is not None and p.cache.status == "miss" and p.store and p.canned is None:
            task = asyncio.get_running_loop().create_task(self._store(p, answer, completion_tokens))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _store(self, p: _Prepared, answer: str, completion_tokens: int) -> None:
        try:
            await self.nodes.store(p.request, answer, completion_tokens, p.corpus_version)
        except Exception as exc:  # the answer was served; a cache that cannot keep it is no error
            log.warning("cache store failed for request %s: %s", p.ctx.request_id, type(exc).__name__)

    async def invalidate_cache(self, caller: Tenant | None, match: dict[str, Any]) -> dict[str, Any]:
        """`POST /v1/admin/cache/invalidate`: an operator key may match any tags; a tenant
        key only its own entries. Entries live in this region's Redis only."""
        allowed = ("tenant", "model", "model_version", "corpus_version", "region")
        bad = [k for k, v in match.items() if k not in allowed or not isinstance(v, str) or not v]
        if bad:
            raise InvalidRequest(f"Unknown or empty field(s) {sorted(bad)}; match on one or more of {list(allowed)}.",
                                 param=bad[0])
        if caller is not None:
            if match.get("tenant", caller.id) != caller.id or "region" in match:
                raise PermissionDenied("A tenant key may invalidate its own entries only.", param="tenant")
            match = {**match, "tenant": caller.id}
        if not match:
            raise InvalidRequest(f"Match on one or more of {list(allowed)}.", param=None)
        if match.get("region", self.region) != self.region:
            raise InvalidRequest(f"This is region '{self.region}'; invalidate another region's cache there.",
                                 param="region")
        removed = await self.nodes.invalidate_cache(match)
        await self.audit_admin(caller, "cache.invalidate", {"match": match, "removed": removed})
        return {"region": self.region, "match": match, "removed": removed}

    async def audit_request(self, tenant: Tenant | None, request_id: str, model: str, status: int,
                            trace: dict, admission: Admission | None) -> None:
        """One record per chat request, on disk before the response goes out. Content is
        what the guard let through (redacted), or only a hash of a refused prompt."""
        self._observe_drift(trace, status)
        if self.audit is None:
            return
        content = {k: trace[k] for k in ("prompt", "answer") if k in trace}
        fields = {"model": model, "status": status,
                  "jurisdiction": admission.jurisdiction if admission else (tenant.jurisdiction if tenant else None),
                  **{k: v for k, v in trace.items() if k not in ("prompt", "answer") and not k.startswith("_")}}
        if "_refused_prompt" in trace:
            fields["prompt_hmac"] = keyed_digest(self.audit.key, trace["_refused_prompt"])
        if content and admission is not None and not admission.may_store:
            # Processed here, but the subject's data may not be kept here: metadata only.
            fields["content_hmac"] = keyed_digest(self.audit.key, content)
            content = {}
        try:
            await self.audit.append("request", "chat.completion", tenant=tenant.id if tenant else None,
                                    request_id=request_id, subject=admission.subject if admission else None,
                                    fields=fields, content=content or None)
            self.audit_failing = False
        except (OSError, AuditIntegrityError) as exc:  # the answer is computed; its record is missing
            self.audit_failing = True
            metrics.AUDIT_WRITE_ERRORS.labels(self.region).inc()
            log.error("audit record for request %s not written: %s", request_id, exc)
            if self.settings.audit.fail_closed:
                raise AuditUnavailable() from None

    def check_audit_open(self) -> None:
        """Under `audit.fail_closed`, refuse a stream while the trail is failing: its record is
        written after the text is sent, too late to withhold it."""
        if self.audit is not None and self.settings.audit.fail_closed and self.audit_failing:
            raise AuditUnavailable()

    def _observe_drift(self, trace: dict, status: int) -> None:
        """Requests that reached the guard feed the drift detector; a due check runs in a
        thread on a snapshot, off the event loop."""
        if self.drift is None or "guard" not in trace:
            return
        refused = 1.0 if status == 400 and trace["guard"]["category"] in ("pii", "prompt_injection", "off_topic") \
            else 0.0
        answer = trace.get("answer")
        if self.drift.add(trace.get("_embedding"), refused=refused, groundedness=trace.get("groundedness"),
                          answer_length=float(len(answer)) if answer is not None else None):
            task = asyncio.get_running_loop().create_task(self._drift_check(self.drift.snapshot()))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _drift_check(self, snapshot: dict) -> None:
        alarms = await asyncio.to_thread(self.drift.evaluate, snapshot)
        for check in self.drift.last.values():
            metrics.DRIFT_P_VALUE.labels(self.region, check.signal).set(check.p_value)
            metrics.DRIFT_STATISTIC.labels(self.region, check.signal).set(check.statistic)
        for alarm in alarms:
            metrics.DRIFT_DETECTED.labels(self.region, alarm.signal).inc()
            log.warning("drift detected in region %s: %s (statistic %.4f, p %.4f)", self.region, alarm.signal,
                        alarm.statistic, alarm.p_value)
            if self.audit is not None:
                await self.audit.append("drift", "drift.detected", fields={
                    "signal": alarm.signal, "statistic": alarm.statistic, "p_value": alarm.p_value})

    def start_audit_watch(self) -> None:
        if self.audit is not None and self.settings.audit.verify_interval_s > 0:
            task = asyncio.get_running_loop().create_task(self._audit_watch())
            self._background.add(task)

    async def _audit_watch(self) -> None:
        from embassy.audit import verify_region

        while True:
            await asyncio.sleep(self.settings.audit.verify_interval_s)
            try:
                _, _, broken = await asyncio.to_thread(verify_region, self.settings.audit_root, self.audit.key)
            except OSError as exc:
                log.error("audit verification could not read the log: %s", exc)
                continue
            metrics.AUDIT_CHAIN_OK.labels(self.region).set(0 if broken else 1)
            for problem in broken:
                log.error("audit chain broken: %s", problem)

    async def audit_admin(self, caller: Tenant | None, action: str, fields: dict[str, Any]) -> int | None:
        if self.audit is not None:
            return await self.audit.append("admin", action, tenant=caller.id if caller else None,
                                           fields={"by": "tenant" if caller else "operator", **fields})
        return None

    async def erase(self, caller: Tenant | None, data: dict[str, Any]) -> dict[str, Any]:
        """`POST /v1/admin/erase`: a data subject's cache entries, documents and audit content
        in this region. A tenant key erases its own subjects; an operator key names the
        tenant (`"tenant"`): subject ids are per tenant, never matched across tenants."""
        subject = data.get("subject")
        if not isinstance(subject, str) or not _SUBJECT.match(subject):
            raise InvalidRequest("'subject' must be 1-128 letters, digits or ._:-", param="subject")
        unknown = sorted(set(data) - {"subject", "tenant"})
        if unknown:
            raise InvalidRequest(f"Unknown field(s) {unknown}.", param=unknown[0])
        if caller is None:  # subject ids are per tenant: an operator names whose
            tenant = self.named_tenant(data.get("tenant")).id
        elif data.get("tenant", caller.id) != caller.id:
            raise PermissionDenied("A tenant key may erase only its own data subjects.", param="tenant")
        else:
            tenant = caller.id
        # The erasure's own record first: the tombstones name it and who asked.
        requested = await self.audit_admin(caller, "erase.requested", {"subject": subject, "tenant_erased": tenant})
        entries = await self.nodes.invalidate_cache({"subject": subject, "tenant": tenant})
        documents = await self.nodes.erase_documents(subject, tenant)
        by = f"tenant:{caller.id}" if caller is not None else "operator"
        records = await asyncio.to_thread(erase_subject, self.settings.audit_root, subject, tenant, by, requested) \
            if self.audit is not None else 0
        log.info("erased data subject in region %s: %d cache entries, %d documents, %d audit records",
                 self.region, entries, len(documents), records)
        out = {"region": self.region, "subject": subject, "tenant": tenant, "cache_entries_removed": entries,
               "documents_removed": documents, "chunks_removed": sum(d["chunks"] for d in documents),
               "audit_records_tombstoned": records}
        await self.audit_admin(caller, "erase", {k: v for k, v in out.items() if k != "documents_removed"})
        return out

    async def _screened_hit(self, p: _Prepared) -> str:
        """A hit passes the output guard again: whoever can write the region's Redis could
        otherwise plant an answer that no guard ever read."""
        verdict = await self._timed(p.timings, "guardrail_output", self._check_output(p, p.cache.text or "", True))
        return p.answer_from_cache() if verdict.allowed else verdict.text

    def _check_output(self, p: _Prepared, text: str, final: bool, sent: str = ""):
        # The screened request's system messages: the caller's own and the configured one.
        system_prompts = tuple(m.content for m in p.request.messages if m.role == "system")
        context = tuple(passage.text for passage in p.model_request.passages)  # what the model read
        return self.nodes.check_output(p.ctx, text, p.guard_input.redactions, final, sent, system_prompts, context)

    def named_tenant(self, name: Any) -> Tenant:
        """The tenant an operator's call acts for (`"tenant"` in its body)."""
        tenant = self.keys.tenants.get(name) if isinstance(name, str) else None
        if tenant is None:
            raise InvalidRequest("An operator key must name a configured tenant in 'tenant'.", param="tenant")
        return tenant

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

    def _embassy_field(self, p: _Prepared, output: GuardVerdict | None,
                       final: GuardVerdict | None = None) -> dict[str, Any]:
        """`final`: the last output check, the one that scored groundedness (default `output`)."""
        p.timings.add("total", (time.perf_counter() - p.started) * 1000)
        final = final or output
        score = final.scores.get("groundedness") if final else None
        return {
            "region": self.region,
            "request_id": p.ctx.request_id,
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

    async def _with_deadline(self, awaitable, deadline: float):
        # asyncio.timeout_at arms one timer; wait_for would start a task per streamed chunk.
        try:
            async with asyncio.timeout_at(deadline):
                return await awaitable
        except TimeoutError:
            raise RequestTimeout("The request timed out.") from None

    def _observe_usage(self, tenant: Tenant, model: str, prompt: int, completion: int) -> None:
        label = self.tenant_label(tenant)
        metrics.TOKENS.labels(self.region, model, label, "prompt").inc(prompt)
        metrics.TOKENS.labels(self.region, model, label, "completion").inc(completion)

    # -- entry points ------------------------------------------------------------------

    def _context(self, tenant: Tenant, request_id: str, admission: Admission | None,
                 control: CacheControl) -> tuple[RequestContext, CacheControl]:
        admission = admission or Admission(tenant.jurisdiction, True)
        if not admission.may_store:  # processed here, kept only where the policy allows
            control = CacheControl(lookup=control.lookup, store=False)
        return RequestContext(request_id, tenant.id, self.region, admission.jurisdiction, admission.subject), control

    async def complete(self, tenant: Tenant, body: ChatCompletionRequest, request_id: str,
                       timeout_ms: float | None = None, control: CacheControl = CacheControl(),
                       admission: Admission | None = None, trace: dict | None = None) -> dict[str, Any]:
        """A non-streaming chat completion, as OpenAI's response body. `trace` collects what
        the audit record keeps (redacted text and outcomes)."""
        trace = {} if trace is None else trace
        started = time.perf_counter()
        deadline = self._deadline(timeout_ms)
        ctx, control = self._context(tenant, request_id, admission, control)
        p = await self._with_deadline(self._prepare(ctx, body, started, control, trace), deadline)
        if p.cache.status == "hit" or p.canned is not None:
            trace["answer"] = p.canned or p.cache.text  # stored text: redacted
            return self._completion(p, p.canned or await self._screened_hit(p), "stop", 0, 0, None)
        cacheable = None
        prompt_tokens = completion_tokens = 0
        try:
            parts: list[str] = []
            finish = None
            stream = self.nodes.generate(p.model_request)
            t0 = time.perf_counter()
            try:
                while True:
                    try:
                        delta = await self._with_deadline(anext(stream), deadline)
                    except StopAsyncIteration:
                        break
                    if not parts:
                        first_at = time.perf_counter()
                        metrics.TIME_TO_FIRST_TOKEN.labels(self.region, body.model).observe(first_at - started)
                    parts.append(delta.text)
                    prompt_tokens = delta.prompt_tokens
                    completion_tokens += delta.completion_tokens
                    finish = delta.finish_reason or finish
            finally:
                await stream.aclose()
                self._observe_stage(p.timings, "llm", t0)
            if parts:
                self._observe_itl(body.model, first_at, completion_tokens)
            text = "".join(parts)
            trace["answer"] = text  # the model's own text: placeholders, not the caller's values
            output = await self._timed(p.timings, "guardrail_output", self._check_output(p, text, final=True))
            self._observe_groundedness(output, trace)
            if not output.allowed:
                finish = "content_filter"
            elif finish in ("stop", "length") and not output.unsupported:  # flagged: never cached
                cacheable = text
        finally:
            self._settle(p, cacheable, completion_tokens)
        self._observe_usage(tenant, body.model, prompt_tokens, completion_tokens)
        trace.update(finish=finish, output_guard=output.category, tokens=[prompt_tokens, completion_tokens])
        return self._completion(p, output.text, finish, prompt_tokens, completion_tokens, output)

    def _observe_itl(self, model: str, first_at: float, completion_tokens: int) -> None:
        """Mean time between tokens after the first (batched deltas carry several)."""
        if completion_tokens > 1:
            metrics.INTER_TOKEN_LATENCY.labels(self.region, model).observe(
                (time.perf_counter() - first_at) / (completion_tokens - 1))

    def _observe_groundedness(self, final: GuardVerdict, trace: dict) -> None:
        score = final.scores.get("groundedness")
        if score is None:
            return
        metrics.GROUNDEDNESS.labels(self.region).observe(score)
        trace.update(groundedness=score, ungrounded=bool(final.unsupported))
        if final.unsupported:
            action = self.settings.guardrail.groundedness_action
            metrics.GROUNDEDNESS_FLAGGED.labels(self.region, action).inc()
            log.warning("request answer flagged as ungrounded (score %.3f, %d unsupported sentence(s)); %s",
                        score, len(final.unsupported), action)

    def _completion(self, p: _Prepared, text: str | None, finish: str | None,
                    prompt_tokens: int, completion_tokens: int, output: GuardVerdict | None) -> dict[str, Any]:
        request_id, body = p.ctx.request_id, p.body
        return {
            "id": f"chatcmpl-{request_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": None, "finish_reason": finish or "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
            "embassy": self._embassy_field(p, output),
        }

    async def stream(self, tenant: Tenant, body: ChatCompletionRequest, request_id: str,
                     timeout_ms: float | None = None, control: CacheControl = CacheControl(),
                     admission: Admission | None = None, trace: dict | None = None) -> AsyncIterator[bytes]:
        """A streaming chat completion as SSE lines.

        Everything that can fail with a status (validation, guardrail, the context-length
        check, the deadline) is raised before the first byte, so the caller still gets a
        proper status; the returned iterator only fails by sending an error event.
        """
        started = time.perf_counter()
        deadline = self._deadline(timeout_ms)
        trace = {} if trace is None else trace
        ctx, control = self._context(tenant, request_id, admission, control)
        p = await self._with_deadline(self._prepare(ctx, body, started, control, trace), deadline)
        if p.cache.status == "hit" or p.canned is not None:
            metrics.TIME_TO_FIRST_TOKEN.labels(self.region, body.model).observe(time.perf_counter() - started)
            trace["answer"] = p.canned or p.cache.text
            return self._sse_text(p, p.canned or await self._screened_hit(p))
        gen = self.nodes.generate(p.model_request)
        t0 = time.perf_counter()
        try:
            first = await self._with_deadline(anext(gen), deadline)
        except BaseException:
            await gen.aclose()
            self._settle(p, None, 0)
            raise
        metrics.TIME_TO_FIRST_TOKEN.labels(self.region, body.model).observe(time.perf_counter() - started)
        return self._sse(tenant, p, gen, first, deadline, t0, trace)

    async def _sse_text(self, p: _Prepared, text: str) -> AsyncIterator[bytes]:
        """An answer made without the model (a cache hit, the no-answer text) as a stream:
        the chunks a generation sends, a few words each."""
        out = _SseChunks(p.ctx.request_id, p.body)
        yield out.chunk({"role": "assistant", "content": ""})
        for piece in re.findall(r"\S+\s*|\s+", text):
            yield out.chunk({"content": piece})
        yield out.chunk({}, "stop", embassy=self._embassy_field(p, None))
        if out.include_usage:
            yield out.usage(0, 0)
        yield b"data: [DONE]\n\n"

    async def _sse(self, tenant: Tenant, p: _Prepared, gen: AsyncIterator[GenerationDelta],
                   first: GenerationDelta | None, deadline: float, t0: float,
                   trace: dict) -> AsyncIterator[bytes]:
        out = _SseChunks(p.ctx.request_id, p.body)
        first_at = time.perf_counter()  # the first delta has arrived
        raw: list[str] = []  # the model's own (redacted) text: what the cache may keep
        cacheable = None
        prompt_tokens = completion_tokens = 0
        finish = None
        pending = sent = ""  # model text not yet screened / already screened and sent
        verdicts: list[GuardVerdict] = []
        # The first text is screened as soon as the guard may release any (time to first
        # token); after that every `stream_screen_chars` new characters, since each check
        # costs the guard CPU beside the engine.
        every = self.settings.guardrail.stream_screen_chars
        fresh = 0  # characters that came since the last check

        async def screen(final: bool) -> str:
            """Pass the pending text through the output guard; return what may be sent."""
            nonlocal pending, sent
            v = await self._timed(p.timings, "guardrail_output", self._check_output(p, pending, final, sent))
            verdicts.append(v)
            sent += pending[:v.consumed]
            pending = pending[v.consumed:]
            return v.text or ""

        try:
            try:
                yield out.chunk({"role": "assistant", "content": ""})
                delta = first
                while delta is not None:
                    prompt_tokens = delta.prompt_tokens or prompt_tokens
                    completion_tokens += delta.completion_tokens
                    finish = delta.finish_reason or finish
                    pending += delta.text
                    raw.append(delta.text)
                    fresh += len(delta.text)
                    if delta.text and (not sent or fresh >= every):
                        fresh = 0
                        text = await screen(final=False)
                        if text:
                            yield out.chunk({"content": text})
                        if verdicts[-1].category == "system_prompt_leak":
                            break  # stop generating: closing the stream aborts the engine request
                    try:
                        delta = await self._with_deadline(anext(gen), deadline)
                    except StopAsyncIteration:
                        delta = None
            except EmbassyError as exc:
                # Headers are gone: report in-band, as OpenAI does, then end the stream.
                yield b"data: " + json.dumps(exc.body()).encode() + b"\n\n"
                yield b"data: [DONE]\n\n"
                return
            finally:
                await gen.aclose()
                self._observe_stage(p.timings, "llm", t0)
                self._observe_itl(p.body.model, first_at, completion_tokens)
            if not verdicts or verdicts[-1].category != "system_prompt_leak":
                text = await screen(final=True)
                if text:
                    yield out.chunk({"content": text})
            filtered = [v for v in verdicts if not v.allowed]
            self._observe_groundedness(verdicts[-1], trace)
            if filtered:
                finish = "content_filter"
            elif finish in ("stop", "length") and not verdicts[-1].unsupported:  # flagged: never cached
                cacheable = "".join(raw)
            output = filtered[-1] if filtered else verdicts[-1]
            self._observe_usage(tenant, p.body.model, prompt_tokens, completion_tokens)
            trace.update(answer="".join(raw), finish=finish, output_guard=output.category,
                         tokens=[prompt_tokens, completion_tokens])
            yield out.chunk({}, finish or "stop", embassy=self._embassy_field(p, output, verdicts[-1]))
        finally:
            self._settle(p, cacheable, completion_tokens)
        if out.include_usage:
            yield out.usage(prompt_tokens, completion_tokens)
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
