"""HTTP surface of the ingress: routes that map results and errors to HTTP, nothing else.

Every exception becomes OpenAI's error shape here and only here; anything that is not an
`EmbassyError` is logged with its request id and answered with a generic 500, never a
trace or a path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any, AsyncIterator, Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.datastructures import MutableHeaders

from deployments.ingress.core import CacheControl, ChatService, request_id_from
from deployments.ingress.gatekeeper import Gatekeeper
from deployments.ingress.protocol import parse_chat_request
from deployments.ingress.request_state import RequestRecord
from embassy import metrics
from embassy.errors import AuditUnavailable, EmbassyError, InvalidRequest, PayloadTooLarge, PermissionDenied

log = logging.getLogger("embassy.ingress")

TIMEOUT_HEADER = "x-embassy-timeout-ms"
CONVERSATION_HEADER = "x-embassy-conversation-id"  # keeps a sticky canary's conversation on one version
VERSION_HEADER = "x-embassy-model-version"  # which version of the model answered


class RequestIdMiddleware:
    """Give every request an `x-request-id` (the client's, if well formed) and echo it.

    The same contract as Ray Serve's proxy, for running the app without Ray.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = MutableHeaders(scope=scope)
        request_id = request_id_from(headers.get("x-request-id"))
        headers["x-request-id"] = request_id

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["x-request-id"] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)


def error_response(exc: BaseException, request_id: str) -> JSONResponse:
    if not isinstance(exc, EmbassyError):
        log.error("request %s failed", request_id, exc_info=exc)
        exc = EmbassyError("The server had an error while processing your request.")
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def read_json(request: Request, limit: int) -> Any:
    """The body parsed as JSON: 413 past `limit`, 400 when it is not JSON."""
    raw = await read_body(request, limit)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("The request body is not valid JSON.") from None
    except RecursionError:  # deeper than the parser's stack: no valid request nests like that
        raise InvalidRequest("The request body nests too deeply.") from None


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing with 413 as soon as it passes `limit` (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request body is larger than the limit of {limit} bytes.")
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise PayloadTooLarge(f"Request body is larger than the limit of {limit} bytes.")
    return bytes(body)


def _timeout_override(request: Request) -> float | None:
    raw = request.headers.get(TIMEOUT_HEADER)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise InvalidRequest(f"Header '{TIMEOUT_HEADER}' must be a number of milliseconds.") from None
    if not value > 0:
        raise InvalidRequest(f"Header '{TIMEOUT_HEADER}' must be positive.")
    return value


def create_app(service: ChatService, readiness: Callable[[], Awaitable[dict[str, bool]]],
               echo_request_id: bool = True) -> FastAPI:
    """The ingress's routes.

    Args:
        readiness: a fresh check of every node (for /readyz; the chat path uses the
            service's cached view).
        echo_request_id: add `x-request-id` to responses. Off under Ray Serve, whose proxy
            already keeps a client's id (or mints one), passes it in, and echoes it.
    """
    app = FastAPI(title="Embassy", docs_url=None, redoc_url=None, openapi_url=None)
    region = service.region

    if echo_request_id:
        app.add_middleware(RequestIdMiddleware)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "alive", "region": region}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        nodes = await readiness()
        ok = bool(nodes) and all(nodes.values())
        return JSONResponse({"ready": ok, "region": region, "nodes": nodes}, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        payload, content_type = metrics.render()
        return Response(payload, media_type=content_type)

    @app.get("/v1/models")
    async def list_models(request: Request) -> JSONResponse:
        request_id = request_id_from(request.headers.get("x-request-id"))
        try:
            tenant = service.gatekeeper.authenticate(request.headers)
        except EmbassyError as exc:
            return error_response(exc, request_id)
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "embassy"}
                for m in sorted(service.context_lengths) if m in tenant.models]
        return JSONResponse({"object": "list", "data": data})

    @app.post("/v1/guard")
    async def guard(request: Request) -> Response:
        """Screen one text: {"text", "direction": "input"|"output", "context": [passages]}
        -> the guard's verdict (with `context`, an output's groundedness)."""
        request_id = request_id_from(request.headers.get("x-request-id"))
        try:
            # A tenant's key screens with its own policy; an operator's names the tenant and
            # also gets the exact scores (for tenants they would be an oracle to tune attacks).
            gatekeeper = service.gatekeeper
            caller = gatekeeper.operator_or_tenant(request.headers)
            if caller is not None:  # residency before a byte of the body, as for chat
                await gatekeeper.subject_residency(caller, request.headers)
            data = await read_json(request, service.settings.requests.max_body_bytes)
            if not isinstance(data, dict) or not isinstance(data.get("text"), str):
                raise InvalidRequest("'text' must be a string.", param="text")
            tenant = caller or gatekeeper.named_tenant(data.get("tenant"))
            if caller is None:
                await gatekeeper.subject_residency(tenant, request.headers)
            direction = data.get("direction", "input")
            if direction not in ("input", "output"):
                raise InvalidRequest("'direction' must be 'input' or 'output'.", param="direction")
            context = data.get("context", [])
            if not isinstance(context, list) or not all(isinstance(c, str) for c in context):
                raise InvalidRequest("'context' must be a list of strings.", param="context")
            if context and direction != "output":
                raise InvalidRequest("'context' applies to direction 'output'.", param="context")
            return JSONResponse(await service.guard(tenant, data["text"], direction, request_id, tuple(context),
                                                    scores=caller is None))
        except Exception as exc:
            return error_response(exc, request_id)

    @app.get("/v1/admin/models")
    async def model_routes(request: Request) -> Response:
        """Operators: which version of each model this ingress routes to, and the canary's share."""
        request_id = request_id_from(request.headers.get("x-request-id"))
        try:
            if service.gatekeeper.operator_or_tenant(request.headers) is not None:
                raise PermissionDenied("Model routes are for operator keys.", param=None)
            return JSONResponse({"region": service.region, "models": {
                m: r.model_dump(mode="json") for m, r in service.routes.items()}})
        except Exception as exc:
            return error_response(exc, request_id)

    @app.post("/v1/admin/cache/invalidate")
    async def invalidate_cache(request: Request) -> Response:
        """Remove cache entries matching {"tenant", "model", "model_version",
        "corpus_version", "region"} (any of them). Operator keys may match anything; a
        tenant key only its own entries."""
        return await _admin(request, service, service.invalidate_cache, "of tags to match")

    @app.post("/v1/admin/erase")
    async def erase(request: Request) -> Response:
        """Erase a data subject in this region: {"subject": ID} -> what was removed."""
        return await _admin(request, service, service.erase, '{"subject": ID}')

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        request_id = request_id_from(request.headers.get("x-request-id"))
        started = time.perf_counter()
        gatekeeper = service.gatekeeper
        model, tenant, status, admission = "unknown", None, 500, None
        admitted = handed_off = recorded = False  # handed_off: the stream frees its own slot
        record = RequestRecord()  # what the audit record keeps, filled along the way

        async def finish(status: int) -> None:  # shielded: a client that leaves does not cancel it
            await asyncio.shield(service.recorder.request_done(
                tenant, gatekeeper.tenant_label(tenant), request_id, model, status, started, record, admission))

        try:
            # Authenticate from the header before reading a byte of the body; residency too:
            # a region that may not process the subject's data reads none of it.
            tenant = gatekeeper.authenticate(request.headers)
            admission = await gatekeeper.subject_residency(tenant, request.headers)
            data = await read_json(request, service.settings.requests.max_body_bytes)
            if isinstance(data, dict) and isinstance(data.get("model"), str):
                model = data["model"] if data["model"] in service.context_lengths else "unknown"
            body = parse_chat_request(data)
            gatekeeper.authorize_model(tenant, body.model)
            timeout_ms = _timeout_override(request)
            control = CacheControl.from_header(request.headers.get("cache-control"))
            record.conversation = request.headers.get(CONVERSATION_HEADER)
            gatekeeper.take_slot()
            admitted = True
            if body.stream:
                service.recorder.check_audit_open()
                events = await service.stream(tenant, body, request_id, timeout_ms, control, admission, record)
                status, handed_off = 200, True
                return StreamingResponse(_release_after(events, gatekeeper, finish),
                                         media_type="text/event-stream",
                                         headers={"cache-control": "no-cache", **_version_header(record)})
            result = await service.complete(tenant, body, request_id, timeout_ms, control, admission, record)
            status, recorded = 200, True
            # The record before the answer: under audit.fail_closed a failed write is a 503 instead.
            await finish(200)
            return JSONResponse(result, headers=_version_header(record))
        except BaseException as exc:
            status = exc.status if isinstance(exc, EmbassyError) else 500
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            if not isinstance(exc, Exception):  # cancelled: the client went away
                status = 499
                raise
            return error_response(exc, request_id)
        finally:
            if not handed_off:
                if admitted:
                    gatekeeper.release_slot()
                if not recorded:
                    with contextlib.suppress(AuditUnavailable):  # the caller gets its error already
                        await finish(status)

    return app


def _version_header(record: RequestRecord) -> dict[str, str]:
    return {VERSION_HEADER: record.model_version} if record.model_version else {}


async def _admin(request: Request, service: ChatService, action, body_shape: str) -> Response:
    """An admin endpoint: an operator or tenant key, a JSON object body, `action(caller, body)`."""
    request_id = request_id_from(request.headers.get("x-request-id"))
    try:
        caller = service.gatekeeper.operator_or_tenant(request.headers)
        data = await read_json(request, service.settings.requests.max_body_bytes)
        if not isinstance(data, dict):
            raise InvalidRequest(f"The body must be a JSON object {body_shape}.", param=None)
        return JSONResponse(await action(caller, data))
    except Exception as exc:
        return error_response(exc, request_id)


async def _release_after(events: AsyncIterator[bytes], gatekeeper: Gatekeeper,
                         finish: Callable[[int], Awaitable[None]]) -> AsyncIterator[bytes]:
    """Stream the events; free the admission slot and count the request when it ends."""
    status = 200
    try:
        async for event in events:
            yield event
    except BaseException:
        status = 499  # client went away mid-stream
        raise
    finally:
        await events.aclose()
        gatekeeper.release_slot()
        with contextlib.suppress(AuditUnavailable):  # sent already; the next stream is refused
            await finish(status)
