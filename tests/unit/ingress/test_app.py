"""Error mapping and response shape of the ingress, run without Ray or vLLM.

The graph behind the ingress is `FakeGraphNodes`, a deterministic fake: these tests check
the logic around the nodes (auth, admission, deadlines, error shapes), not the nodes.
The real graph is tested end to end in tests/integration.
"""

from __future__ import annotations

import asyncio
import json
from typing import AsyncIterator

import pytest
from fastapi.testclient import TestClient

from deployments.ingress.app import create_app
from deployments.ingress.core import ChatService, GraphNodes
from embassy.errors import ContextLengthExceeded
from deployments.cache.scope import scope_of
from embassy.graph_types import CacheLookup, GenerationDelta, GenerationRequest, GuardVerdict, Passage, \
    RequestContext, Retrieval
from embassy.settings import EmbassySettings
from embassy.tenants import KeyStore, create_key

MODEL = "m"


class FakeGraphNodes(GraphNodes):
    """Deterministic fake of the graph: answers "alpha beta gamma" one word per delta; its
    cache is a dict on the exact scope (the real one is tested against Redis)."""

    def __init__(self) -> None:
        self.ready = True
        self.delay_s = 0.0
        self.fail_with: BaseException | None = None
        self.aborted = 0
        self.seen: list[GenerationRequest] = []
        self.cached: dict[str, tuple[str, str]] = {}  # entry key -> (answer, corpus version)
        self.corpus_version = "v1"
        self.output_checks = 0
        self.redactions: dict[str, str] = {}
        self.erased: list[tuple[str, str | None]] = []
        self.ungrounded = False
        self.embeddings: list = []  # input verdicts' vectors, one per request (drift tests)
        self.refuse: str | None = None  # a category: the input guard refuses with it

    async def check_input(self, request: GenerationRequest) -> GuardVerdict:
        embedding = self.embeddings.pop(0) if self.embeddings else None
        if self.refuse:
            return GuardVerdict(False, "refuse", self.refuse, embedding=embedding)
        return GuardVerdict(allowed=True, request=request, redactions=self.redactions, embedding=embedding)

    async def lookup(self, request: GenerationRequest, corpus_version: str | None) -> CacheLookup:
        if request.sampling.temperature > 0:
            return CacheLookup(status="bypass", reason="temperature")
        entry = self.cached.get(scope_of(request, "1").entry_key())
        if entry is None:
            return CacheLookup(status="miss")
        return CacheLookup(status="hit", text=entry[0], corpus_version=entry[1], completion_tokens=3)

    async def store(self, request: GenerationRequest, answer: str, completion_tokens: int,
                    corpus_version: str) -> bool:
        self.cached[scope_of(request, "1").entry_key()] = (answer, corpus_version)
        return True

    async def invalidate_cache(self, match: dict[str, str]) -> int:
        removed = len(self.cached)
        self.cached.clear()
        return removed

    async def retrieve(self, request: GenerationRequest) -> Retrieval:
        return Retrieval((Passage("doc", "doc#0", "fake.md", 0.9, "fake passage"),), self.corpus_version,
                         status="grounded")

    async def erase_documents(self, subject: str, tenant: str | None) -> list[dict]:
        self.erased.append((subject, tenant))
        return [{"document_id": "doc", "source": "fake.md", "chunks": 2}]

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        self.seen.append(request)
        if self.fail_with:
            raise self.fail_with
        words = ["alpha", " beta", " gamma"]
        done = False
        try:
            for i, word in enumerate(words):
                await asyncio.sleep(self.delay_s)
                yield GenerationDelta(word, 1, 7, "stop" if i == len(words) - 1 else None)
            done = True
        finally:
            if not done:
                self.aborted += 1

    async def check_output(self, ctx: RequestContext, text: str, redactions=None, final=True, sent="",
                           system_prompts=(), context=()) -> GuardVerdict:
        self.output_checks += 1
        if self.ungrounded and final:  # the real scorer is tested in tests/unit/guardrail
            return GuardVerdict(True, "pass", "ungrounded", text=text, consumed=len(text),
                                scores={"groundedness": 0.1}, unsupported=("gamma is invented.",))
        return GuardVerdict(allowed=True, text=text, consumed=len(text))

    async def guard(self, ctx: RequestContext, text: str, direction: str, context=()) -> dict:
        self.guarded = ctx
        return {"allowed": True, "text": text,
                "scores": {"prompt_injection": 0.12, "topic": 0.5, **({"groundedness": 0.8} if context else {})}}

    def readiness(self) -> dict[str, bool]:
        return {"llm": self.ready}


@pytest.fixture
def env(tmp_path):
    settings = EmbassySettings.model_validate({
        "region": "eu", "models": [MODEL], "keys_file": str(tmp_path / "keys.yaml"), "state_dir": str(tmp_path),
        "tenants": {"acme": {"jurisdiction": "EU", "models": [MODEL]},
                    "nomodels": {"jurisdiction": "US", "models": []}},
        "requests": {"max_body_bytes": 2048, "max_inflight": 2, "timeout_s": 5,
                     "max_message_chars": 300, "max_request_chars": 500, "max_messages": 6},
        "guardrail": {"max_guard_chars": 100}})
    keys = KeyStore.from_settings(settings)
    key = create_key(settings.keys_path, "acme")
    other = create_key(settings.keys_path, "nomodels")
    nodes = FakeGraphNodes()
    service = ChatService(settings, keys, nodes, {MODEL: 100})
    async def fresh_readiness():
        return nodes.readiness()

    client = TestClient(create_app(service, fresh_readiness))
    client.service = service  # for tests that call the service directly (concurrency)
    return client, nodes, {"Authorization": f"Bearer {key}"}, {"Authorization": f"Bearer {other}"}


def chat(**over):
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **over}


def assert_error(resp, status: int, code: str | None = None, param: str | None = None):
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    if code:
        assert err["code"] == code
    if param:
        assert err["param"] == param
    assert "Traceback" not in resp.text and ".py" not in resp.text
    return err


def test_completion_shape_usage_and_embassy_field(env):
    client, _, auth, _ = env
    r = client.post("/v1/chat/completions", json=chat(), headers={**auth, "x-request-id": "abc-123"})
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "abc-123"
    body = r.json()
    assert body["choices"][0]["message"]["content"] == "alpha beta gamma"
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    emb = body["embassy"]
    assert emb["region"] == "eu" and emb["request_id"] == "abc-123"
    assert {"guardrail_input", "cache", "retriever", "llm", "guardrail_output", "total"} <= set(emb["timings_ms"])
    assert emb["citations"][0]["document_id"] == "doc"


def test_malformed_request_id_is_replaced(env):
    client, _, auth, _ = env
    r = client.post("/v1/chat/completions", json=chat(), headers={**auth, "x-request-id": "bad id!"})
    assert r.status_code == 200 and r.headers["x-request-id"] != "bad id"
    assert len(r.headers["x-request-id"]) == 32


def test_stream_ends_with_usage_and_done(env):
    client, _, auth, _ = env
    with client.stream("POST", "/v1/chat/completions", headers=auth,
                       json=chat(stream=True, stream_options={"include_usage": True})) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "alpha beta gamma"
    assert chunks[-1]["usage"]["completion_tokens"] == 3 and chunks[-1]["choices"] == []
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop" and "embassy" in chunks[-2]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}])
def test_401_without_or_with_wrong_key(env, headers):
    client = env[0]
    assert_error(client.post("/v1/chat/completions", json=chat(), headers=headers), 401, "invalid_api_key")
    assert_error(client.get("/v1/models", headers=headers), 401)


def test_401_comes_before_reading_the_body(env):
    client = env[0]
    assert_error(client.post("/v1/chat/completions", content=b"{not json"), 401)
    assert_error(client.post("/v1/chat/completions", content=b"x" * 5000), 401)


def test_403_model_not_allowed_and_404_unknown_model(env):
    client, _, auth, other = env
    assert_error(client.post("/v1/chat/completions", json=chat(), headers=other), 403, param="model")
    assert_error(client.post("/v1/chat/completions", json=chat(model="nope"), headers=auth), 404,
                 "model_not_found")


@pytest.mark.parametrize("body,param", [
    ({"model": MODEL, "messages": []}, "messages"),
    ({"model": MODEL}, "messages"),
    (chat(messages=[{"role": "wizard", "content": "x"}]), "messages.0.role"),
    (chat(max_tokens=-1), "max_tokens"),
    (chat(max_tokens=0), "max_tokens"),
    (chat(max_tokens=101), "max_tokens"),
    (chat(max_completion_tokens=-5), "max_completion_tokens"),
    (chat(temperature=3), "temperature"),
    (chat(n=2), "n"),
    (chat(stop=["a", "b", "c", "d", "e"]), "stop"),
    (chat(tools=[{"type": "function"}]), None),
    (chat(stream_options={"include_usage": True}), None),
    (chat(max_tokens=4, min_tokens=5), "min_tokens"),
    (chat(min_tokens=-1), "min_tokens"),
])
def test_400_schema_violations(env, body, param):
    client, _, auth, _ = env
    assert_error(client.post("/v1/chat/completions", json=body, headers=auth), 400, param=param)


def test_400_malformed_json_and_non_object(env):
    client, _, auth, _ = env
    assert_error(client.post("/v1/chat/completions", content=b"{not json", headers=auth), 400)
    assert_error(client.post("/v1/chat/completions", content=b"[1, 2]", headers=auth), 400)


def test_400_json_nested_past_the_parser_stack(env):
    client, _, auth, _ = env
    deep = b"[" * 1200  # under the body limit; json.loads gives up (RecursionError) before its end
    err = assert_error(client.post("/v1/chat/completions", content=deep, headers=auth), 400)
    assert "nests too deeply" in err["message"]
    assert_error(client.post("/v1/guard", content=deep, headers=auth), 400)


def test_400_response_format_schema_nested_too_deep(env):
    client, _, auth, _ = env
    schema: dict = {"type": "string"}
    for _ in range(40):
        schema = {"type": "array", "items": schema}
    fmt = {"type": "json_schema", "json_schema": {"name": "deep", "schema": schema}}
    err = assert_error(client.post("/v1/chat/completions", json=chat(response_format=fmt), headers=auth), 400)
    assert "deeper than" in err["message"]


@pytest.mark.parametrize("messages,param,code", [
    ([{"role": "user", "content": "x" * 301}], "messages.0.content", "string_above_max_length"),
    ([{"role": "system", "content": "s" * 10}, {"role": "user", "content": [{"type": "text", "text": "y" * 301}]}],
     "messages.1.content", "string_above_max_length"),
    ([{"role": "user", "content": "z" * 200}] * 3, "messages", "string_above_max_length"),  # 600 > 500
    ([{"role": "user", "content": "hi"}] * 7, "messages", "array_above_max_length"),
])
def test_400_past_the_character_and_message_limits_before_the_guard(env, messages, param, code):
    client, nodes, auth, _ = env
    nodes.seen.clear()
    checks = []
    real = nodes.check_input

    async def counting(request):
        checks.append(request)
        return await real(request)
    nodes.check_input = counting
    err = assert_error(client.post("/v1/chat/completions", json=chat(messages=messages), headers=auth), 400,
                       code, param)
    assert "at most" in err["message"]
    assert checks == [] and nodes.seen == []  # the guard never read it
    ok = client.post("/v1/chat/completions", json=chat(messages=[{"role": "user", "content": "x" * 300}]),
                     headers=auth)
    assert ok.status_code == 200, ok.text


def test_400_context_length_from_the_engine(env):
    client, nodes, auth, _ = env
    nodes.fail_with = ContextLengthExceeded("too long", param="messages")
    for stream in (False, True):
        err = assert_error(client.post("/v1/chat/completions", json=chat(stream=stream), headers=auth), 400)
        assert err["code"] == "context_length_exceeded"


def test_413_body_over_limit(env):
    client, _, auth, _ = env
    big = chat(messages=[{"role": "user", "content": "x" * 5000}])
    assert_error(client.post("/v1/chat/completions", json=big, headers=auth), 413)


def test_429_when_admission_is_full_with_retry_after(env):
    client, nodes, auth, _ = env
    nodes.delay_s = 0.3

    async def flood():
        import httpx

        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await asyncio.gather(*[c.post("/v1/chat/completions", json=chat(), headers=auth)
                                          for _ in range(6)])

    responses = asyncio.run(flood())
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 2 and statuses.count(429) == 4
    limited = next(r for r in responses if r.status_code == 429)
    assert_error(limited, 429, "queue_full")
    assert limited.headers["retry-after"] == "1"
    # Slots are freed afterwards.
    assert client.post("/v1/chat/completions", json=chat(), headers=auth).status_code == 200


def test_503_when_a_node_has_no_replica(env):
    client, nodes, auth, _ = env
    nodes.ready = False
    assert_error(client.post("/v1/chat/completions", json=chat(), headers=auth), 503)
    assert client.get("/readyz").status_code == 503
    nodes.ready = True
    assert client.get("/readyz").status_code == 200


def test_504_past_the_deadline_aborts_generation(env):
    client, nodes, auth, _ = env
    nodes.delay_s = 0.2
    for stream in (False, True):
        before = nodes.aborted
        r = client.post("/v1/chat/completions", json=chat(stream=stream),
                        headers={**auth, "x-embassy-timeout-ms": "300"})
        if stream and r.status_code == 200:  # first token came in time: error is sent in-band
            assert '"code": "timeout"' in r.text and r.text.rstrip().endswith("data: [DONE]")
        else:
            assert_error(r, 504, "timeout")
        assert nodes.aborted == before + 1


def test_unexpected_error_is_a_generic_500(env):
    client, nodes, auth, _ = env
    nodes.fail_with = RuntimeError("secret detail at /srv/internal/path.py")
    err = assert_error(client.post("/v1/chat/completions", json=chat(), headers=auth), 500)
    assert "secret" not in err["message"]


def test_models_lists_only_what_the_tenant_may_use(env):
    client, _, auth, other = env
    assert [m["id"] for m in client.get("/v1/models", headers=auth).json()["data"]] == [MODEL]
    assert client.get("/v1/models", headers=other).json()["data"] == []


def test_metrics_move(env):
    client, _, auth, _ = env
    def count() -> float:
        text = client.get("/metrics").text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("embassy_requests_total{") and 'status="200"' in line)
    before = count()
    client.post("/v1/chat/completions", json=chat(), headers=auth)
    assert count() == before + 1


@pytest.mark.parametrize("body,status,param", [
    ({"direction": "input"}, 400, "text"),                       # no text
    ({"text": 42}, 400, "text"),                                 # not a string
    ({"text": "x" * 101}, 400, "text"),                          # over guardrail.max_guard_chars
    ({"text": "hello", "direction": "sideways"}, 400, "direction"),
    ({"text": "y" * 3000}, 413, None),                           # over the body limit
])
def test_guard_endpoint_refuses_bad_input(env, body, status, param):
    client, _, auth, _ = env
    assert_error(client.post("/v1/guard", json=body, headers=auth), status, param=param)


def test_guard_endpoint_needs_a_key_and_answers_with_the_nodes_verdict(env):
    client, _, auth, _ = env
    assert_error(client.post("/v1/guard", json={"text": "hello"}), 401, "invalid_api_key")
    r = client.post("/v1/guard", json={"text": "hello", "direction": "output"}, headers=auth)
    assert r.status_code == 200 and r.json()["direction"] == "output" and r.json()["text"] == "hello"


def test_guard_scores_go_to_operators_only(env, tmp_path):
    """A tenant gets the verdict and groundedness; the injection and topic scores, an oracle
    for tuning an attack, only an operator naming the tenant."""
    client, nodes, auth, _ = env
    r = client.post("/v1/guard", json={"text": "hello"}, headers=auth)
    assert r.status_code == 200 and r.json()["scores"] == {}
    r = client.post("/v1/guard", json={"text": "hello", "direction": "output", "context": ["hello"]}, headers=auth)
    assert r.json()["scores"] == {"groundedness": 0.8}
    admin = {"Authorization": f"Bearer {create_key(client.service.settings.keys_path, None, admin=True)}"}
    r = client.post("/v1/guard", json={"text": "hello", "tenant": "acme"}, headers=admin)
    assert r.status_code == 200 and r.json()["scores"] == {"prompt_injection": 0.12, "topic": 0.5}
    assert nodes.guarded.tenant == "acme"
    assert_error(client.post("/v1/guard", json={"text": "hello"}, headers=admin), 400, param="tenant")
    assert_error(client.post("/v1/guard", json={"text": "hello", "tenant": "ghost"}, headers=admin), 400,
                 param="tenant")
    chat_scores = client.post("/v1/chat/completions", json=chat(), headers=auth).json()["embassy"]["guardrail"]
    assert "scores" not in chat_scores["input"] and "action" in chat_scores["input"]


def test_response_format_reaches_the_engine_canonical_and_keys_the_cache(env):
    client, nodes, auth, _ = env
    schema = {"type": "object", "properties": {"b": {"type": "integer"}, "a": {"type": "string"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
    assert client.post("/v1/chat/completions", json=chat(response_format=fmt, temperature=0), headers=auth).status_code == 200
    sent = nodes.seen[-1].sampling.response_format
    assert json.loads(sent) == {"type": "json_schema", "schema": schema} and sent == json.dumps(
        json.loads(sent), sort_keys=True, separators=(",", ":"))
    # The same question without the constraint is another cache entry, not a hit.
    r = client.post("/v1/chat/completions", json=chat(temperature=0), headers=auth)
    assert r.json()["embassy"]["cache"]["status"] == "miss" and nodes.seen[-1].sampling.response_format is None
    assert client.post("/v1/chat/completions", json=chat(response_format={"type": "text"}, temperature=0),
                       headers=auth).json()["embassy"]["cache"]["status"] == "hit"


@pytest.mark.parametrize("fmt", [{"type": "json_schema"}, {"type": "xml"},
                                 {"type": "json_object", "json_schema": {"name": "x", "schema": {}}},
                                 {"type": "json_schema", "json_schema": {"name": "bad name!", "schema": {}}}])
def test_a_malformed_response_format_is_a_400_naming_it(env, fmt):
    client, nodes, auth, _ = env
    r = client.post("/v1/chat/completions", json=chat(response_format=fmt), headers=auth)
    assert_error(r, 400, param=r.json()["error"]["param"])
    assert r.json()["error"]["param"].startswith("response_format")
    assert not nodes.seen


@pytest.mark.parametrize("fail_closed", [True, False])
def test_an_audit_write_failure_withholds_the_answer_when_fail_closed(env, fail_closed):
    client, _, auth, _ = env
    service = client.service
    service.settings = service.recorder.settings = service.settings.model_copy(
        update={"audit": service.settings.audit.model_copy(update={"fail_closed": fail_closed})})

    async def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")
    real = service.recorder.audit.append
    service.recorder.audit.append = broken
    r = client.post("/v1/chat/completions", json=chat(), headers=auth)
    stream = client.post("/v1/chat/completions", json=chat(stream=True), headers=auth)
    if fail_closed:
        assert_error(r, 503, "audit_unavailable")
        assert "alpha" not in r.text and r.headers["retry-after"] == "5"
        assert_error(stream, 503, "audit_unavailable")  # refused while the trail is failing
    else:
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "alpha beta gamma"
        assert stream.status_code == 200
    service.recorder.audit.append = real
    assert client.post("/v1/chat/completions", json=chat(), headers=auth).status_code == 200
    assert client.post("/v1/chat/completions", json=chat(stream=True), headers=auth).status_code == 200


def test_rendered_region_settings_fail_closed():
    from embassy.render import region_settings
    from embassy.settings import PROJECT_ROOT
    from embassy.topology import load_topology

    path = PROJECT_ROOT / "cluster_configs" / "regions.yaml"
    assert region_settings(load_topology(path), "eu", path)["audit"]["fail_closed"] is True


def test_a_tenant_without_documents_is_answered_without_a_retrieval_hop(env):
    """The corpus version is asked beside the input guard (with the tenant only); an empty
    corpus skips the retriever after the guard. A corpus makes the retriever be asked."""
    client, nodes, auth, _ = env
    asked, retrieved = [], []

    async def corpus_version_of(tenant):
        asked.append(tenant)
        return nodes.version_now

    async def retrieve(request):
        retrieved.append(request.ctx.request_id)
        return Retrieval((Passage("doc", "doc#0", "fake.md", 0.9, "fake passage"),), "v1", status="grounded")
    nodes.corpus_version_of, nodes.retrieve = corpus_version_of, retrieve
    nodes.version_now = "empty"
    r = client.post("/v1/chat/completions", json=chat(), headers=auth)
    assert r.status_code == 200 and r.json()["embassy"]["grounding"]["status"] == "no_corpus"
    assert asked == ["acme"] and retrieved == []
    nodes.version_now = "v1"
    r = client.post("/v1/chat/completions", json=chat(), headers=auth)
    assert r.json()["embassy"]["grounding"]["status"] == "grounded" and len(retrieved) == 1
    nodes.version_now = None  # the store could not say: the retriever is asked
    client.post("/v1/chat/completions", json=chat(), headers=auth)
    assert len(retrieved) == 2
    nodes.refuse = "prompt_injection"  # refused by the guard: nothing is retrieved
    assert client.post("/v1/chat/completions", json=chat(), headers=auth).status_code == 400
    assert len(retrieved) == 2


def test_the_routed_version_answers_and_every_response_names_it(env):
    """Routes (`set_routes`, the ingress's user_config) pick the version per request; the
    model call, the cache scope, the headers and the body all carry it."""
    from embassy.model_routes import ModelRoute

    client, nodes, auth, _ = env
    plain = client.post("/v1/chat/completions", json=chat(), headers=auth)
    assert "x-embassy-model-version" not in plain.headers and plain.json()["embassy"]["model_version"] is None
    client.service.set_routes({MODEL: ModelRoute(stable="1", canary="2", canary_percent=100)})
    r = client.post("/v1/chat/completions", json=chat(), headers=auth)
    assert r.headers["x-embassy-model-version"] == "2" and r.json()["embassy"]["model_version"] == "2"
    assert nodes.seen[-1].model_version == "2"
    assert scope_of(nodes.seen[-1], "2").key != scope_of(nodes.seen[-1], "1").key
    with client.stream("POST", "/v1/chat/completions", headers=auth, json=chat(stream=True)) as s:
        assert s.headers["x-embassy-model-version"] == "2"
    client.service.set_routes({MODEL: ModelRoute(stable="1", canary="2", canary_percent=50, sticky=True)})
    seen = {client.post("/v1/chat/completions", json=chat(), headers={**auth, "x-embassy-conversation-id": "c-1"}
                        ).headers["x-embassy-model-version"] for _ in range(6)}
    assert len(seen) == 1  # one conversation, one version


def test_routes_for_a_model_not_served_are_refused(env):
    from embassy.errors import ConfigError
    from embassy.model_routes import ModelRoute

    client, *_ = env
    with pytest.raises(ConfigError, match="not served here"):
        client.service.set_routes({"other-model": ModelRoute(stable="1")})


def test_model_routes_are_for_operator_keys_only(env):
    client, _, auth, _ = env
    assert_error(client.get("/v1/admin/models", headers=auth), 403)
