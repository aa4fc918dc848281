"""One error hierarchy for the whole graph.

Nodes raise these; only the ingress turns them into OpenAI-shaped HTTP responses
(`{"error": {"message", "type", "param", "code"}}`). Messages are written for the
caller: they never carry stack traces, internal paths or another tenant's data.
"""

from __future__ import annotations

from typing import Any


class EmbassyError(Exception):
    """Base class. Subclasses fix the HTTP status, the OpenAI error type and a default code."""

    status: int = 500
    type: str = "server_error"
    code: str | None = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    # Ray re-raises a replica's exception in the caller by pickling it; keep every field.
    def __reduce__(self):
        return (_rebuild, (type(self), self.message, self.param, self.code, self.headers))

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type,
                          "param": self.param, "code": self.code}}


def _rebuild(cls, message, param, code, headers):
    return cls(message, param=param, code=code, headers=headers)


class InvalidRequest(EmbassyError):
    status, type, code = 400, "invalid_request_error", "invalid_request"


class ContentFiltered(InvalidRequest):
    """A prompt refused by the guardrail. Azure OpenAI's convention: 400, code
    `content_filter`, and the category under `innererror.content_filter_result`."""

    code = "content_filter"
    _MESSAGES = {"pii": "The prompt contains personal data that this deployment does not accept.",
                 "prompt_injection": "The prompt was flagged as a prompt-injection attempt.",
                 "off_topic": "The prompt is outside the topics this deployment serves."}

    def __init__(self, category: str, **kw: Any) -> None:
        kw.setdefault("param", "messages")
        message = kw.pop("message", None) or self._MESSAGES.get(category, "The prompt was refused.")
        super().__init__(f"{message} (content filter: {category})", **kw)
        self.category = category

    def __reduce__(self):
        return (_rebuild_filtered, (self.category, self.message, self.param))

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["error"]["innererror"] = {"code": "ResponsibleAIPolicyViolation",
                                       "content_filter_result": {self.category: {"filtered": True}}}
        return body


def _rebuild_filtered(category, message, param):
    err = ContentFiltered(category, param=param)
    err.message = message
    err.args = (message,)
    return err


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class AuthenticationFailed(EmbassyError):
    status, type, code = 401, "invalid_request_error", "invalid_api_key"


class PermissionDenied(EmbassyError):
    status, type, code = 403, "permission_error", "model_not_allowed"


class UnknownJurisdiction(PermissionDenied):
    """The tenant's configured jurisdiction is not in the topology: refused, never served
    under the default policy."""
    code = "unknown_jurisdiction"


class NotFound(EmbassyError):
    status, type, code = 404, "invalid_request_error", "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class PayloadTooLarge(EmbassyError):
    status, type, code = 413, "invalid_request_error", "payload_too_large"


class Overloaded(EmbassyError):
    """The graph's bounded queues are full; the caller should retry after `retry-after` seconds."""

    status, type, code = 429, "rate_limit_error", "queue_full"

    def __init__(self, message: str, *, retry_after_s: int = 1, **kw: Any) -> None:
        kw.setdefault("headers", {"retry-after": str(retry_after_s)})
        super().__init__(message, **kw)


class MisdirectedRequest(EmbassyError):
    """This region may not process the request's data (residency); the message and the
    `x-embassy-region-endpoint` header name a region that may."""

    status, type, code = 421, "invalid_request_error", "misdirected_request"


class ServiceUnavailable(EmbassyError):
    status, type, code = 503, "server_error", "service_unavailable"


class AuditUnavailable(ServiceUnavailable):
    """`audit.fail_closed`: no answer goes out without its audit record."""

    code = "audit_unavailable"

    def __init__(self, message: str = "The request could not be recorded in the audit trail, so it was not "
                                      "served. Please retry.", **kw) -> None:
        kw.setdefault("headers", {"retry-after": "5"})
        super().__init__(message, **kw)


class RequestTimeout(EmbassyError):
    status, type, code = 504, "server_error", "timeout"


class ConfigError(Exception):
    """A settings or manifest file is invalid. The message names the file and the field."""
