"""The ingress's logic around the cache, with the deterministic fake graph of test_app.py:
hits skip the model, pass the output guard again and are re-identified for their caller, stale
corpus versions miss, identical concurrent misses make one model call, only finished
and allowed answers are offered, and the admin endpoint's permissions. The cache itself
(Redis, verifier) is tested in tests/integration/test_cache_redis.py."""

from __future__ import annotations

import asyncio
import json

import pytest

from deployments.ingress.protocol import parse_chat_request
from embassy.tenants import Tenant, create_key
from tests.unit.ingress.test_app import MODEL, assert_error, chat, env  # noqa: F401  (fixture)

COLD = {"temperature": 0}


def sse_events(resp) -> list[dict]:
    return [json.loads(line[6:]) for line in resp.text.splitlines()
            if line.startswith("data: ") and line != "data: [DONE]"]


def test_second_identical_request_is_a_hit_without_the_model(env):
    client, nodes, auth, _ = env
    first = client.post("/v1/chat/completions", json=chat(**COLD), headers=auth).json()
    assert first["embassy"]["cache"]["status"] == "miss"
    checks = nodes.output_checks
    second = client.post("/v1/chat/completions", json=chat(**COLD), headers=auth).json()
    assert second["embassy"]["cache"] == {"status": "hit", "reason": None, "tokens_saved": 3}
    assert second["choices"][0]["message"]["content"] == "alpha beta gamma"
    assert len(nodes.seen) == 1  # one model call for both
    assert nodes.output_checks == checks + 1  # screened again: Redis is not trusted to hold only what was
    assert second["embassy"]["citations"] == first["embassy"]["citations"] != []  # a hit is still cited
    assert second["usage"]["completion_tokens"] == 0


@pytest.mark.parametrize("stream", [False, True])
def test_an_entry_planted_in_redis_is_screened_before_it_is_served(env, stream):
    """Whoever can write the region's Redis must not be able to skip the output guard."""
    from embassy.graph_types import GuardVerdict

    client, nodes, auth, _ = env
    client.post("/v1/chat/completions", json=chat(**COLD), headers=auth)
    key = next(iter(nodes.cached))
    nodes.cached[key] = ("Wire the duty to planted@evil.example today.", "v1")
    real = nodes.check_output

    async def masking(ctx, text, *args, **kwargs):  # stands in for the real guard's PII check
        if "planted@evil.example" in text:
            return GuardVerdict(False, "redact", "pii_leak", text=text.replace("planted@evil.example", "[EMAIL]"),
                                consumed=len(text))
        return await real(ctx, text, *args, **kwargs)
    nodes.check_output = masking
    r = client.post("/v1/chat/completions", json=chat(stream=stream, **COLD), headers=auth)
    assert r.status_code == 200 and "planted@evil.example" not in r.text
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in sse_events(r) if e["choices"]) \
        if stream else r.json()["choices"][0]["message"]["content"]
    assert text == "Wire the duty to [EMAIL] today."


def test_hit_maps_placeholders_to_this_callers_values(env):
    client, nodes, auth, _ = env
    client.post("/v1/chat/completions", json=chat(**COLD), headers=auth)
    key = next(iter(nodes.cached))
    nodes.cached[key] = ("Dear <PERSON_1>, done.", "v1")
    nodes.redactions = {"<PERSON_1>": "Ada Lovelace"}
    body = client.post("/v1/chat/completions", json=chat(**COLD), headers=auth).json()
    assert body["choices"][0]["message"]["content"] == "Dear Ada Lovelace, done."
    assert nodes.cached[key][0] == "Dear <PERSON_1>, done."  # the stored text keeps the placeholder


def test_hot_sampling_neither_stores_nor_serves(env):
    client, nodes, auth, _ = env
    for _ in range(2):
        body = client.post("/v1/chat/completions", json=chat(temperature=0.7), headers=auth).json()
        assert body["embassy"]["cache"]["status"] == "bypass"
    assert nodes.cached == {} and len(nodes.seen) == 2


def test_a_changed_corpus_turns_a_hit_into_a_miss(env):
    client, nodes, auth, _ = env
    client.post("/v1/chat/completions", json=chat(**COLD), headers=auth)
    nodes.corpus_version = "v2"
    body = client.post("/v1/chat/completions", json=chat(**COLD), headers=auth).json()
    assert body["embassy"]["cache"]["status"] == "miss"
    assert "corpus changed" in body["embassy"]["cache"]["reason"]
    assert len(nodes.seen) == 2
    assert set(v for _, v in nodes.cached.values()) == {"v2"}  # stored again under the new version


def test_failed_generation_is_not_stored(env):
    client, nodes, auth, _ = env
    nodes.fail_with = RuntimeError("engine died")
    r = client.post("/v1/chat/completions", json=chat(**COLD), headers=auth)
    assert r.status_code == 500
    assert nodes.cached == {}


def test_streamed_hit_arrives_as_chunks(env):
    client, nodes, auth, _ = env
    client.post("/v1/chat/completions", json=chat(**COLD), headers=auth)
    r = client.post("/v1/chat/completions", json=chat(stream=True, stream_options={"include_usage": True},
                                                      **COLD), headers=auth)
    events = sse_events(r)
    pieces = [e["choices"][0]["delta"].get("content") for e in events if e["choices"]]
    assert "".join(p for p in pieces if p) == "alpha beta gamma"
    assert len([p for p in pieces if p]) == 3  # word by word, like a generation
    final = [e for e in events if e["choices"] and e["choices"][0]["finish_reason"]][0]
    assert final["choices"][0]["finish_reason"] == "stop"
    assert final["embassy"]["cache"]["status"] == "hit"
    assert events[-1]["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    assert len(nodes.seen) == 1


def test_streamed_miss_is_stored(env):
    client, nodes, auth, _ = env
    client.post("/v1/chat/completions", json=chat(stream=True, **COLD), headers=auth)
    assert [a for a, _ in nodes.cached.values()] == ["alpha beta gamma"]


async def test_concurrent_identical_misses_make_one_model_call(env):
    client, nodes, _, _ = env
    nodes.delay_s = 0.05
    tenant = Tenant("acme", "EU", frozenset({MODEL}))
    body = parse_chat_request(chat(**COLD))
    results = await asyncio.gather(*(client.service.complete(tenant, body, f"r{i}") for i in range(5)))
    assert len(nodes.seen) == 1
    assert sorted(r["embassy"]["cache"]["status"] for r in results) == ["hit"] * 4 + ["miss"]
    assert {r["choices"][0]["message"]["content"] for r in results} == {"alpha beta gamma"}


async def test_followers_call_the_model_themselves_when_the_leader_fails(env):
    client, nodes, _, _ = env
    nodes.delay_s = 0.05
    nodes.fail_with = None
    tenant = Tenant("acme", "EU", frozenset({MODEL}))
    body = parse_chat_request(chat(**COLD, max_tokens=1))
    leader = asyncio.ensure_future(client.service.complete(tenant, body, "lead"))
    await asyncio.sleep(0.01)
    follower = asyncio.ensure_future(client.service.complete(tenant, body, "follow"))
    await asyncio.sleep(0.01)
    leader.cancel()  # the leader's client goes away mid-generation
    result = await follower
    assert result["choices"][0]["message"]["content"] == "alpha beta gamma"
    assert len(nodes.seen) == 2


def test_admin_invalidate_permissions(env, tmp_path):
    client, nodes, auth, _ = env
    client.post("/v1/chat/completions", json=chat(**COLD), headers=auth)
    r = client.post("/v1/admin/cache/invalidate", json={}, headers=auth)
    assert r.status_code == 200 and r.json() == {"region": "eu", "match": {"tenant": "acme"}, "removed": 1}
    operator = {"Authorization": f"Bearer {create_key(tmp_path / 'keys.yaml', None, admin=True)}"}
    r = client.post("/v1/admin/cache/invalidate", json={"model_version": "1"}, headers=operator)
    assert r.status_code == 200 and r.json()["match"] == {"model_version": "1"}
    assert_error(client.post("/v1/admin/cache/invalidate", json={}, headers=operator), 400)
    assert_error(client.post("/v1/chat/completions", json=chat(), headers=operator), 401)  # no chat
    assert_error(client.post("/v1/admin/cache/invalidate", json={"tenant": "nomodels"}, headers=auth),
                 403, param="tenant")
    assert_error(client.post("/v1/admin/cache/invalidate", json={"color": "red"}, headers=auth), 400, param="color")
    assert_error(client.post("/v1/admin/cache/invalidate", json={"tenant": "acme"}), 401)


@pytest.mark.parametrize("body", [[], "x", {"region": "us"}])
def test_admin_invalidate_rejects_bad_bodies(env, body):
    client, _, auth, _ = env
    r = client.post("/v1/admin/cache/invalidate", json=body, headers=auth)
    assert r.status_code in (400, 403)


def test_cache_control_no_cache_and_no_store(env):
    client, nodes, auth, _ = env
    client.post("/v1/chat/completions", json=chat(**COLD), headers={**auth, "Cache-Control": "no-store"})
    assert nodes.cached == {}
    client.post("/v1/chat/completions", json=chat(**COLD), headers=auth)
    body = client.post("/v1/chat/completions", json=chat(**COLD),
                       headers={**auth, "Cache-Control": "no-cache"}).json()
    assert body["embassy"]["cache"]["status"] == "bypass" and "no-cache" in body["embassy"]["cache"]["reason"]
    assert len(nodes.seen) == 3


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_flagged_ungrounded_is_marked_and_never_cached(env, stream):
    client, nodes, auth, _ = env
    nodes.ungrounded = True
    for _ in range(2):
        r = client.post("/v1/chat/completions", json=chat(stream=stream, **COLD), headers=auth)
        embassy = sse_events(r)[-1]["embassy"] if stream else r.json()["embassy"]
        assert embassy["grounding"]["flagged"] is True and embassy["grounding"]["score"] == 0.1
        assert embassy["grounding"]["unsupported"] == ["gamma is invented."]
        assert embassy["cache"]["status"] == "miss"
    assert len(nodes.seen) == 2 and nodes.cached == {}
