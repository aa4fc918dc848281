"""Per-request state of a chat completion, typed: what the graph walk decided (`Prepared`)
and what the request leaves behind for the audit trail, the metrics and drift (`RequestRecord`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from deployments.ingress.protocol import ChatCompletionRequest
from embassy.graph_types import CacheLookup, GenerationRequest, GuardVerdict, Passage, RequestContext, \
    Retrieval, StageTimings
from embassy.placeholders import restore

REFUSALS = ("pii", "prompt_injection", "off_topic")  # input-guard categories counted as refusals


@dataclass
class RequestRecord:
    """Filled along the walk; written once, when the request ends. Text fields hold what
    the guard let through (redacted); a refused prompt is kept only to be digested."""

    guard: dict[str, str | None] | None = None  # the input verdict: {"action", "category"}
    prompt: str | None = None  # the last user message as the guard let it through
    answer: str | None = None  # the model's (or the cache's) text: placeholders, not values
    answered_by: str | None = None  # "no_answer_text" when nothing relevant was retrieved
    cache: str | None = None
    grounding: str | None = None
    corpus_version: str | None = None
    citations: list[str] | None = None
    finish: str | None = None
    output_guard: str | None = None
    tokens: list[int] | None = None  # [prompt, completion]
    groundedness: float | None = None
    ungrounded: bool | None = None
    model_version: str | None = None  # the version that answered (or would have)
    ttft_s: float | None = None
    itl_s: float | None = None  # mean time between tokens after the first
    # Never written to the audit record as they are:
    embedding: Any = field(default=None, repr=False)  # the input's vector, for drift
    refused_prompt: str | None = field(default=None, repr=False)  # written only as a keyed digest
    conversation: str | None = field(default=None, repr=False)  # the caller's id, for sticky routing

    _METADATA = ("guard", "answered_by", "cache", "grounding", "corpus_version", "citations", "finish",
                 "output_guard", "tokens", "groundedness", "ungrounded", "model_version")

    def content(self) -> dict[str, str]:
        return {k: v for k in ("prompt", "answer") if (v := getattr(self, k)) is not None}

    def metadata(self) -> dict[str, Any]:
        """The audit record's fields: what was decided, without the text."""
        return {k: v for k in self._METADATA if (v := getattr(self, k)) is not None}

    def refused_by_guard(self) -> str | None:
        return self.guard["category"] if self.guard and self.guard["category"] in REFUSALS else None

    def outcome(self, status: int) -> str:
        """The request's outcome for `embassy_request_outcomes_total` (bounded label values)."""
        if status == 200:
            if self.cache == "hit":
                return "cache_hit"
            return "no_answer" if self.answered_by == "no_answer_text" else "served"
        if status == 400 and (category := self.refused_by_guard()):
            return f"refused_{category}"
        if status == 421:
            return "misdirected"
        return f"error_{status}" if status in (400, 401, 403, 404, 413, 429, 499, 500, 503, 504) else "error_other"


@dataclass
class Prepared:
    """A request past the input guard, the cache lookup and the retriever: what the answer
    is made from."""

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

    @property
    def needs_model(self) -> bool:
        return self.cache.status != "hit" and self.canned is None

    def answer_from_cache(self) -> str:
        """A hit's answer for this caller: the stored text is redacted; its placeholders
        become this caller's own values."""
        return restore(self.cache.text or "", self.guard_input.redactions)
