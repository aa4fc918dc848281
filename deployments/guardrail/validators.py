"""The guard's checks as guardrails-ai validators, registered under `embassy/` names.

The graph calls `validate()` on these directly instead of through `Guard`: a `Guard` call
adds about 4 ms of bookkeeping per validation (its call history, tracing), which alone
would take a third of the input guard's 15 ms budget (benchmarks/guard_latency.py measures
both paths). `build_guard()` composes the same validators with `Guard` for callers that
want its interface; both paths give the same verdicts.

guardrails-ai exports usage telemetry by default; `disable_telemetry()` turns it off before
any validator or guard is built, and a test proves no guard call opens a connection.
"""

from __future__ import annotations

from typing import Any

from embassy.settings import PiiAction


def disable_telemetry() -> None:
    """guardrails-ai reads ~/.guardrailsrc (enable_metrics defaults to on) in `Guard()` and
    validators; make its settings say off, whatever that file holds."""
    from guardrails import settings
    from guardrails.classes import rc

    off = rc.RC.from_dict({"enable_metrics": False, "use_remote_inferencing": False})
    settings.rc = off
    rc.RC.load = classmethod(lambda cls, logger=None: off)  # Guard() reloads it otherwise


disable_telemetry()

from guardrails import Guard  # noqa: E402  (after the telemetry switch)
from guardrails.validator_base import (  # noqa: E402
    ErrorSpan,
    FailResult,
    PassResult,
    ValidationResult,
    Validator,
    register_validator,
)

from deployments.guardrail.pii import PiiDetector, Redaction  # noqa: E402


@register_validator(name="embassy/pii", data_type="string")
class PiiValidator(Validator):
    """Fails when PII is found; `fix_value` is the text with typed placeholders.

    metadata: `policy` (type -> redact|block|allow), `redaction` (the request's Redaction,
    which records placeholders), optional `known` (a Redaction whose values are the caller's
    own: on output, those are not leaks).
    """

    def __init__(self, detector: PiiDetector, on_fail: Any = None) -> None:
        super().__init__(on_fail=on_fail)
        self.detector = detector

    def _validate(self, value: Any, metadata: dict[str, Any]) -> ValidationResult:
        policy: dict[str, PiiAction] = metadata.get("policy", {})
        known: Redaction | None = metadata.get("known")
        findings = [f for f in self.detector.find(value)
                    if policy.get(f.type, "redact") != "allow" and not (known and known.knows(f.type, f.text))]
        if not findings:
            return PassResult()
        blocked = sorted({f.type for f in findings if policy.get(f.type) == "block"})
        redaction: Redaction = metadata.get("redaction") or Redaction()
        return FailResult(
            error_message=f"PII found: {', '.join(sorted({f.type for f in findings}))}",
            fix_value=redaction.apply(value, findings),
            error_spans=[ErrorSpan(start=f.start, end=f.end, reason=f.type) for f in findings],
            metadata={"blocked": blocked, "types": sorted({f.type for f in findings})})


@register_validator(name="embassy/prompt_injection", data_type="string")
class PromptInjectionValidator(Validator):
    """Fails when the injection score of the text reaches the threshold.
    metadata: `trunk` (the text's hidden state from the shared encoder pass that also
    embeds it for the topic check), `threshold`."""

    def __init__(self, model, on_fail: Any = None) -> None:
        super().__init__(on_fail=on_fail)
        self.model = model

    def _validate(self, value: Any, metadata: dict[str, Any]) -> ValidationResult:
        score = self.model.score(value, metadata["trunk"])
        threshold = metadata.get("threshold") or self.model.threshold
        if score > threshold:  # as calibrated: the threshold is the highest benign score kept
            return FailResult(error_message="prompt injection", metadata={"score": score})
        return PassResult(metadata={"score": score})


@register_validator(name="embassy/topic", data_type="string")
class TopicValidator(Validator):
    """Fails when the text is outside the deployment's declared business domain.
    metadata: `embedding`."""

    def __init__(self, topics, on_fail: Any = None) -> None:
        super().__init__(on_fail=on_fail)
        self.topics = topics

    def _validate(self, value: Any, metadata: dict[str, Any]) -> ValidationResult:
        verdict = self.topics.check(metadata["embedding"], value)
        meta = {"score": verdict.score, "topic": verdict.topic, "denied_topic": verdict.denied_topic}
        if not verdict.on_topic:
            return FailResult(error_message="off topic", metadata=meta)
        return PassResult(metadata=meta)


@register_validator(name="embassy/system_prompt_leak", data_type="string")
class SystemPromptLeakValidator(Validator):
    """Fails when an answer reproduces a large part of the system prompt: the share of the
    system prompt's word 5-grams that also occur in the answer reaches `max_overlap`."""

    def __init__(self, on_fail: Any = None) -> None:
        super().__init__(on_fail=on_fail)

    @staticmethod
    def _grams(text: str, n: int = 5) -> set[tuple[str, ...]]:
        words = text.lower().split()
        return {tuple(words[i:i + n]) for i in range(max(0, len(words) - n + 1))}

    def _validate(self, value: Any, metadata: dict[str, Any]) -> ValidationResult:
        prompts = [p for p in metadata.get("system_prompts", ()) if p]
        answer = self._grams(value)
        for prompt in prompts:
            grams = self._grams(prompt)
            if grams and len(grams & answer) / len(grams) >= metadata.get("max_overlap", 0.5):
                return FailResult(error_message="system prompt leak",
                                  fix_value="[withheld: the answer repeated the system prompt]")
        return PassResult()


def build_guard(*validators: Validator) -> Guard:
    """The same checks composed with guardrails-ai's Guard (no telemetry)."""
    return Guard(name="embassy").use(*validators)
