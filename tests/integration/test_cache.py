"""The semantic cache in the real graph: Redis started by the stack, Ray Serve, vLLM."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import httpx
import pytest
import redis

from tests.conftest import DEFAULT_MODEL
from tests.integration.test_api import metric, post

pytestmark = pytest.mark.e2e


def ask(text: str, *, system: str | None = None, history: list[dict] | None = None, **kw) -> dict:
    msgs = ([{"role": "system", "content": system}] if system else []) + (history or []) + \
        [{"role": "user", "content": text}]
    return {"model": DEFAULT_MODEL, "messages": msgs, "max_tokens": 16, "temperature": 0, **kw}


def cache_of(resp: httpx.Response) -> dict:
    assert resp.status_code == 200, resp.text
    return resp.json()["embassy"]["cache"]


def stored(live, body: dict, key: str | None = None, wait_s: float = 10) -> dict:
    """Send `body` until it is a hit (the first answer is stored off the response's path)."""
    deadline = time.monotonic() + wait_s
    while True:
        r = post(live, body, key=key)
        if cache_of(r)["status"] == "hit" or time.monotonic() > deadline:
            return r.json()
        time.sleep(0.2)


def test_a_repeated_question_is_answered_from_the_cache(live):
    body = ask("Which documents does the export declaration for shipment 4711 need?")
    first = post(live, body).json()
    assert first["embassy"]["cache"]["status"] == "miss"
    hits_before = metric(live, "embassy_cache_lookups_total", outcome="hit")
    second = stored(live, body)
    assert second["embassy"]["cache"]["status"] == "hit"
    assert second["embassy"]["cache"]["tokens_saved"] == first["usage"]["completion_tokens"] > 0
    assert second["choices"][0]["message"]["content"] == first["choices"][0]["message"]["content"]
    assert second["usage"]["completion_tokens"] == 0
    assert metric(live, "embassy_cache_lookups_total", outcome="hit") > hits_before
    assert metric(live, "embassy_cache_tokens_saved_total") > 0


@pytest.mark.parametrize("variant", ["tenant", "system_prompt", "conversation"])
def test_an_entry_is_served_only_within_its_scope(live, variant):
    text = f"What does the customs broker need for consignment 90{len(variant)} ({variant})?"
    stored(live, ask(text))
    if variant == "tenant":
        r = post(live, ask(text), key=live.strict_key)
    elif variant == "system_prompt":
        r = post(live, ask(text, system="Answer as a customs officer of Singapore."))
    else:
        r = post(live, ask(text, history=[{"role": "user", "content": "We import ceramic tiles."},
                                          {"role": "assistant", "content": "Understood."}]))
    assert cache_of(r)["status"] == "miss"


def test_hot_sampling_is_neither_stored_nor_served(live):
    body = ask("Which Incoterm puts the export clearance on the seller for order 5150?", temperature=0.8)
    for _ in range(2):
        got = cache_of(post(live, body))
        assert got["status"] == "bypass" and "temperature" in got["reason"]
    assert cache_of(post(live, {**body, "temperature": 0}))["status"] == "miss"


def test_a_streamed_request_is_served_from_the_cache_as_chunks(live):
    body = ask("How is the customs value of shipment 3141 computed under CIF?")
    text = stored(live, body)["choices"][0]["message"]["content"]
    with httpx.stream("POST", f"{live.url}/v1/chat/completions", json={**body, "stream": True}, timeout=60,
                      headers={"Authorization": f"Bearer {live.key}"}) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines()
                  if line.startswith("data: ") and line != "data: [DONE]"]
    pieces = [e["choices"][0]["delta"].get("content") or "" for e in events]
    assert "".join(pieces) == text and sum(1 for p in pieces if p) > 1
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    assert events[-1]["embassy"]["cache"]["status"] == "hit"


async def test_concurrent_identical_misses_make_one_model_call(live):
    body = ask("Prepare the packing list summary for container MSKU 2718281.", max_tokens=32, ignore_eos=True)
    completion_before = metric(live, "embassy_tokens_total", kind="completion")
    async with httpx.AsyncClient(timeout=120, headers={"Authorization": f"Bearer {live.key}"}) as c:
        rs = await asyncio.gather(*(c.post(f"{live.url}/v1/chat/completions", json=body) for _ in range(4)))
    statuses = sorted(cache_of(r)["status"] for r in rs)
    assert statuses == ["hit", "hit", "hit", "miss"], [cache_of(r) for r in rs]
    assert len({r.json()["choices"][0]["message"]["content"] for r in rs}) == 1
    assert metric(live, "embassy_tokens_total", kind="completion") - completion_before == 32


def test_no_unredacted_pii_reaches_redis(live):
    email, name = "maria.gonzalez@example.com", "Maria Gonzalez"
    body = ask(f"Draft the export declaration cover note for {name}, e-mail {email}, shipment 6021.")
    hit = stored(live, body)
    assert hit["embassy"]["cache"]["status"] == "hit"
    r = redis.Redis.from_url(live.state.redis_url)
    dump = b"".join(v for k in r.scan_iter(count=1000) if r.type(k) == b"hash" for v in r.hgetall(k).values())
    assert b"<EMAIL_1>" in dump and b"<PERSON_1>" in dump  # the entry is there, redacted
    assert email.encode() not in dump and name.encode() not in dump
    r.close()


def test_invalidation_from_the_cli_and_the_admin_endpoint(live):
    body = ask("Which certificate of origin applies to consignment 8080 under the EU-Japan EPA?")
    stored(live, body)
    out = subprocess.run([sys.executable, "-m", "embassy.cli", "cache", "invalidate", "--tenant", "acme",
                          "--config", str(live.config_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["removed"] >= 1
    assert cache_of(post(live, body))["status"] == "miss"
    stored(live, body)
    r = httpx.post(f"{live.url}/v1/admin/cache/invalidate", json={"model": DEFAULT_MODEL}, timeout=30,
                   headers={"Authorization": f"Bearer {live.key}"})
    assert r.status_code == 200 and r.json()["match"] == {"model": DEFAULT_MODEL, "tenant": "acme"}
    assert r.json()["removed"] >= 1
    assert cache_of(post(live, body))["status"] == "miss"
