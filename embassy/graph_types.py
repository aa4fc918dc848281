"""Values that travel between the nodes of the graph.

Plain dataclasses, not pydantic models: every hop pickles them, and on 2 cores that cost
is paid per request and per streamed chunk. The ingress validates the HTTP body into
these once; nodes trust them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "developer", "user", "assistant", "tool"]


@dataclass(frozen=True)
class RequestContext:
    """Who asks, where, and under which id. Every node receives it (cache, retriever and
    audit key on `tenant` and `region`)."""

    request_id: str
    tenant: str
    region: str
    jurisdiction: str
    subject: str | None = None  # the data subject's id when the caller names one (erasure finds it)


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class SamplingOptions:
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False
    min_tokens: int = 0
    # `response_format` as a canonical JSON string ({"type", "schema"?}); None: free text.
    response_format: str | None = None


@dataclass(frozen=True)
class GenerationRequest:
    ctx: RequestContext
    model: str
    messages: tuple[Message, ...]
    sampling: SamplingOptions = SamplingOptions()
    passages: tuple["Passage", ...] = ()
    model_version: str = ""  # the version the ingress routed it to ("": the model's default)


@dataclass(frozen=True)
class GenerationDelta:
    """A piece of a generation. `prompt_tokens` is set on every delta (cheap, and the first
    one a client sees may be the last); `completion_tokens` counts the tokens in this delta."""

    text: str
    completion_tokens: int
    prompt_tokens: int
    finish_reason: str | None = None


@dataclass(frozen=True)
class GuardVerdict:
    """Outcome of a guardrail check. `request` is what continues down the graph; on output,
    `text` is what to send and `consumed` how many characters of the checked text it covers
    (a stream's tail is held back until the next check).

    `redactions` maps the request's placeholders to the caller's values. It travels only
    between the nodes of one request, in memory, so the answer can be re-identified for
    that caller; it is never cached, stored or logged.
    """

    allowed: bool
    action: Literal["pass", "redact", "refuse"] = "pass"
    category: str | None = None
    request: GenerationRequest | None = None
    text: str | None = None
    consumed: int = 0
    scores: dict[str, float] = field(default_factory=dict)
    findings: tuple[tuple[str, int, int], ...] = ()  # (type, start, end) in the normalized text
    redactions: dict[str, str] = field(default_factory=dict, repr=False)
    unsupported: tuple[str, ...] = ()  # answer sentences the retrieved passages do not support
    embedding: Any = field(default=None, repr=False)  # input: the last user message's vector (drift)


@dataclass(frozen=True)
class CacheLookup:
    """A hit carries the stored answer (redacted: placeholders, never the caller's values),
    the corpus version it was answered under and the completion tokens it saves."""

    status: Literal["hit", "miss", "bypass"]
    text: str | None = None
    reason: str | None = None
    corpus_version: str | None = None
    completion_tokens: int = 0


@dataclass(frozen=True)
class Retrieval:
    """Passages for a request, and the version of the corpus they came from (it changes
    whenever the tenant's documents do; cache entries are tied to it). `status`: see
    `deployments.retriever.core.Retriever.retrieve`."""

    passages: tuple["Passage", ...] = ()
    corpus_version: str = "none"
    status: Literal["grounded", "nothing_relevant", "no_corpus"] = "no_corpus"
    screened_injections: int = 0  # passages that carried instructions to the model (removed or dropped)


@dataclass(frozen=True)
class Passage:
    document_id: str
    chunk_id: str
    source: str
    score: float
    text: str


@dataclass
class StageTimings:
    """Milliseconds per stage, measured by the ingress around each hop."""

    values: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, ms: float) -> None:
        self.values[stage] = round(self.values.get(stage, 0.0) + ms, 3)
