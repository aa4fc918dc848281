"""Guardrail node core: the contract and the guard (`EmbassyGuardrail`).

Input: normalize, redact or block PII (typed placeholders, consistent within a request),
score every user message for prompt injection, check the last one against the declared
business domain. Output: redact PII the caller did not send, withhold an answer that
repeats the system prompt, then put the caller's own values back in place of placeholders.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from deployments.guardrail.normalize import normalize
from deployments.guardrail.pii import Redaction
from deployments.guardrail.stream_hold import stream_cut
from embassy.graph_types import GenerationRequest, GuardVerdict, Message, RequestContext
from embassy.settings import EmbassySettings


class Guardrail(ABC):
    @abstractmethod
    async def check_input(self, request: GenerationRequest) -> GuardVerdict:
        """Screen a request before cache and model.

        Returns a verdict whose `request` (possibly redacted) is what continues down the
        graph; `allowed=False` means refuse with `category`. Never raises for content.
        """

    @abstractmethod
    async def check_output(self, ctx: RequestContext, text: str, redactions: dict[str, str] | None = None,
                           final: bool = True, sent: str = "", system_prompts: tuple[str, ...] = (),
                           context: tuple[str, ...] = ()) -> GuardVerdict:
        """Screen answer text before it reaches the caller.

        `text` is the part not yet sent, `sent` what the caller already has. When `final`
        is false (mid-stream) the verdict may hold back a tail: it covers `consumed`
        characters of `text`, and the rest comes again with the next check.
        `redactions` is the input verdict's placeholder map; `system_prompts` are checked
        for leaks besides the configured one; `context` is the retrieved passages the model
        answered from: values in them are the tenant's own documents (redacted by its
        policy at ingest), not leaks.
        """


class EmbassyGuardrail(Guardrail):
    """The guard: PII, prompt injection and topic on input; leaks on output."""

    def __init__(self, settings: EmbassySettings) -> None:
        from deployments.guardrail import validators as v
        from embassy.embeddings import shared_embedder
        from deployments.guardrail.injection import InjectionModel
        from deployments.guardrail.pii import PiiDetector

        self._embed = shared_embedder().embed
        self._encode = shared_embedder().encode
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="guard-encoder")
        self.detector = PiiDetector()
        self.pii = v.PiiValidator(self.detector)
        self.injection = v.PromptInjectionValidator(InjectionModel.load())
        self.leak = v.SystemPromptLeakValidator()
        from deployments.guardrail.groundedness import GroundednessScorer

        self.groundedness = GroundednessScorer(self._embed)
        self.topic: Any = None
        self.configure(settings)
        self.detector.warm_up()
        self._embed(["warm up"])

    def configure(self, settings: EmbassySettings) -> None:
        """Apply thresholds and policies; called again on a live `user_config` change."""
        from deployments.guardrail import validators as v
        from deployments.guardrail.topic import TopicModel

        topics = settings.topic_settings()
        if self.topic is None or topics != self._topics:
            self.topic = v.TopicValidator(TopicModel(topics.allowed, topics.denied, self._embed,
                                                     topics.threshold, topics.k, topics.domain_terms))
            self._topics = topics
        self.settings = settings
        self.detector.use_ner = settings.guardrail.ner

    def embed_one(self, text: str):
        return self._embed([text])[0]

    def injection_score(self, text: str) -> float:
        _, trunks = self._encode([text])
        return self.injection.validate(text, {"trunk": trunks[0]}).metadata["score"]

    def policy(self, tenant: str) -> dict[str, str]:
        t = self.settings.tenants.get(tenant)
        return {**self.settings.guardrail.pii, **(t.pii if t else {})}

    # -- input -------------------------------------------------------------------------

    async def check_input(self, request: GenerationRequest) -> GuardVerdict:
        return self.screen_input(request)

    def screen_input(self, request: GenerationRequest) -> GuardVerdict:
        """Every message is the caller's (the operator's system prompt is added here, after
        screening): each is PII-screened and scored for injection, whatever its role, since
        an attack reads the same in a tool result or a system message as in a user turn.
        The topic is the last user turn's: the caller's own system or tool messages ("You
        are a helpful assistant", a search result) are rarely about the domain themselves."""
        g = self.settings.guardrail
        redaction = Redaction()
        policy = self.policy(request.ctx.tenant)
        normalized = [Message(m.role, normalize(m.content)) for m in request.messages]
        user = [m.content for m in normalized if m.role == "user"]
        firsts, tails = [], []
        for m in normalized:
            first, *tail = model_windows(m.content) or [None]
            firsts += [first] if first is not None else []
            tails += tail
        tails = list(dict.fromkeys(tails))  # a repeated block is scored once
        if len(tails) > MAX_TAIL_WINDOWS:
            # Each costs the model 30-50 ms; this many windows with attack features is refused
            # unscored rather than let one request hold the guard for seconds.
            return GuardVerdict(False, "refuse", "prompt_injection",
                                scores={"prompt_injection": 1.0, "windows_with_features": float(len(tails))})
        windows = list(dict.fromkeys(firsts + tails))
        # The encoder pass (ONNX Runtime, which releases the GIL) runs beside the PII
        # check (spaCy, which holds it): on 2 cores a 200-token prompt's input guard takes
        # 14 ms instead of 18.
        encoded = self._pool.submit(self._encode, windows + user[-1:]) if windows else None
        messages, findings, blocked = [], [], set()
        for m in normalized:
            result = self.pii.validate(m.content, {"policy": policy, "redaction": redaction})
            text = m.content
            if result.outcome == "fail":
                blocked.update(result.metadata["blocked"])
                findings += [(s.reason, s.start, s.end) for s in result.error_spans]
                text = result.fix_value
            messages.append(Message(m.role, text))
        scores: dict[str, float] = {}
        if blocked:
            return GuardVerdict(False, "refuse", "pii", findings=tuple(findings))
        embedding = None
        if windows:
            embeddings, trunks = encoded.result()
            injection = [self.injection.validate(t, {"trunk": h, "threshold": g.injection_threshold})
                         for t, h in zip(windows, trunks)]
            scores["prompt_injection"] = round(max(r.metadata["score"] for r in injection), 4)
            if user:
                embedding = embeddings[-1]
                topic = self.topic.validate(user[-1], {"embedding": embedding})
                scores["topic"] = round(topic.metadata["score"], 4)
            if any(r.outcome == "fail" for r in injection):
                return GuardVerdict(False, "refuse", "prompt_injection", scores=scores, findings=tuple(findings),
                                    embedding=embedding)
            if user and topic.outcome == "fail":
                return GuardVerdict(False, "refuse", "off_topic", scores=scores, findings=tuple(findings),
                                    embedding=embedding)
        if g.system_prompt:  # first, as the setting says, before any system message of the caller's
            messages.insert(0, Message("system", g.system_prompt))
        return GuardVerdict(True, "redact" if findings else "pass", "pii" if findings else None,
                            request=replace(request, messages=tuple(messages)), scores=scores,
                            findings=tuple(findings), redactions=redaction.mapping, embedding=embedding)

    # -- output ------------------------------------------------------------------------

    async def check_output(self, ctx: RequestContext, text: str, redactions: dict[str, str] | None = None,
                           final: bool = True, sent: str = "", system_prompts: tuple[str, ...] = (),
                           context: tuple[str, ...] = ()) -> GuardVerdict:
        return self.screen_output(ctx.tenant, text, redactions, final, sent, system_prompts, context)

    def screen_output(self, tenant: str, text: str, redactions: dict[str, str] | None = None,
                      final: bool = True, sent: str = "", system_prompts: tuple[str, ...] = (),
                      context: tuple[str, ...] = ()) -> GuardVerdict:
        g = self.settings.guardrail
        cut = len(text) if final else stream_cut(text, g.stream_hold_chars, sent)
        prompts = tuple(p for p in (*system_prompts, g.system_prompt) if p)
        if prompts:
            leak = self.leak.validate(sent + text, {"system_prompts": prompts,
                                                    "max_overlap": g.system_prompt_max_overlap})
            if leak.outcome == "fail":
                return GuardVerdict(False, "refuse", "system_prompt_leak", text=leak.fix_value, consumed=len(text))
        known = Redaction.from_mapping(redactions or {})
        # The end of what was sent goes in as left context, so that "passport " sent in
        # one piece still keys the number screened in the next; its own spans were
        # screened with it then.
        lead = _left_context(sent, g.stream_hold_chars)
        result = self.pii.validate(lead + text, {"policy": self.policy(tenant), "known": known})
        spans = [_shift(s, -len(lead)) for s in (result.error_spans or []) if s.end > len(lead)] \
            if result.outcome == "fail" else []
        if context:
            grounding = normalize(" ".join(context))
            spans = [s for s in spans if text[s.start:s.end] not in grounding]
        for s in spans:  # never send part of an identifier: hold it back whole
            if s.start < cut < s.end:
                cut = s.start
        spans = [s for s in spans if s.end <= cut]
        # Values the caller did not send are masked by type and never mapped back.
        out = known.restore(_mask(text[:cut], spans))
        scores, unsupported = {}, ()
        if final and context:  # the whole answer against what the model was given
            threshold = self.settings.guardrail.groundedness_threshold
            g = self.groundedness.score(sent + text, context, threshold)
            scores["groundedness"] = g.score
            if g.score < threshold:
                unsupported = tuple(g.unsupported)
                if self.settings.guardrail.groundedness_action == "refuse":
                    return GuardVerdict(False, "refuse", "ungrounded", text=self.settings.guardrail.groundedness_refusal,
                                        consumed=len(text), scores=scores, unsupported=unsupported)
        if spans:
            return GuardVerdict(False, "redact", "pii_leak", text=out, consumed=cut, scores=scores,
                                findings=tuple((s.reason, s.start, s.end) for s in spans), unsupported=unsupported)
        return GuardVerdict(True, "pass", "ungrounded" if unsupported else None, text=out, consumed=cut,
                            scores=scores, unsupported=unsupported)


# The encoder reads 256 tokens and drops the rest; longer texts are scored in windows that
# it reads whole, overlapping so that an attack on a window's edge is whole in the next one.
# Small windows, so an attack is most of its window: with an attack put in the middle or at
# the end of each of the 8 customs documents of tests/data/customs_corpus, every window of
# 400 characters scored caught 13 of 16 (900: 6, 600: 8; unwindowed: 6) and flagged 4 of 8
# benign documents (unwindowed: 3); as `model_windows` scores them, 12 of 16 and 2 of 8.
# The classifier misreads long documents either way (issue 16).
WINDOW_CHARS, WINDOW_OVERLAP = 400, 150


def injection_windows(text: str) -> list[str]:
    """`text` whole when the encoder reads it whole, else overlapping windows cut at spaces."""
    if len(text) <= WINDOW_CHARS:
        return [text] if text.strip() else []
    out, start = [], 0
    while start < len(text):
        end = min(start + WINDOW_CHARS, len(text))
        if end < len(text):  # cut at the last space in the window's second half, if it has one
            cut = text.rfind(" ", start + WINDOW_CHARS // 2, end)
            end = cut if cut > 0 else end
        out.append(text[start:end])
        if end == len(text):
            break
        start = max(end - WINDOW_OVERLAP, start + 1)
    return out


MAX_TAIL_WINDOWS = 8  # later windows with a hand feature that one request may have scored


def model_windows(text: str) -> list[str]:
    """The windows the injection model scores: the first always, a later one when one of
    the model's hand features fires in it. A window costs the model 30-50 ms on 2 cores, so
    scoring all 64 of a 16,000-character message would pass the guard's deadline; the hand
    features (instruction override, role play, spoofed delimiters, encoded payloads ...)
    cost well under a millisecond. An attack phrased to avoid all of them in a long text's
    tail is scored only as far as the first window reaches (256 tokens)."""
    from deployments.guardrail.injection import hand_features

    windows = injection_windows(text)
    return windows[:1] + [w for w in windows[1:] if hand_features(w).any()]


def _mask(text: str, spans) -> str:
    out, pos = [], 0
    for s in sorted(spans, key=lambda s: s.start):
        out += [text[pos:s.start], f"[{s.reason}]"]
        pos = s.end
    return "".join(out) + text[pos:]


def _left_context(sent: str, chars: int) -> str:
    """The last `chars` characters of `sent`, from a word's start."""
    if len(sent) <= chars:
        return sent
    tail = sent[-chars:]
    space = tail.find(" ")
    return tail[space + 1:] if space >= 0 else tail


def _shift(span, by: int):
    """An error span moved by `by` characters; a part before 0 (sent already) is clipped."""
    return type(span)(start=max(0, span.start + by), end=span.end + by, reason=span.reason)
