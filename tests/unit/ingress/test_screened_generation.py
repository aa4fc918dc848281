"""`stream: true` and `false` run one screened-generation pipeline: for the same answer they
send the same text with the same finish reason, usage and verdicts, and leave the same audit
record. The graph is the deterministic fake of test_app (the logic around the nodes)."""

from __future__ import annotations

import json

import pytest

from embassy.audit import export
from embassy.graph_types import GuardVerdict
from tests.unit.ingress.test_app import chat, env  # noqa: F401  (env is a fixture)


def streamed(r) -> dict:
    """An SSE response folded into the shape of a non-streamed one."""
    text, finish, extension, usage = "", None, None, None
    for line in r.text.splitlines():
        if line.startswith("data: {"):
            chunk = json.loads(line[6:])
            assert "error" not in chunk, chunk
            for choice in chunk["choices"]:
                text += choice["delta"].get("content") or ""
                finish = choice["finish_reason"] or finish
            extension = chunk.get("embassy") or extension
            usage = chunk.get("usage") or usage
    return {"choices": [{"message": {"content": text}, "finish_reason": finish}], "usage": usage,
            "embassy": extension}


def comparable(body: dict) -> tuple:
    e = body["embassy"]
    return (body["choices"][0]["message"]["content"], body["choices"][0]["finish_reason"], body["usage"],
            e["guardrail"], e["cache"], e["grounding"], [c["chunk_id"] for c in e["citations"]])


def request_records(client) -> list[dict]:
    return [r for r in export(client.service.settings.audit_root) if r["kind"] == "request"]


def without_identity(record: dict) -> tuple:
    return record["fields"], record["content"]


@pytest.mark.parametrize("case", ["miss", "hit", "ungrounded", "refused_output"])
def test_streamed_and_whole_answers_are_the_same_answer(env, case):  # noqa: F811
    client, nodes, auth, _ = env
    nodes.ungrounded = case == "ungrounded"
    if case == "refused_output":  # the output guard masks a word of the answer
        async def mask(ctx, text, redactions=None, final=True, sent="", system_prompts=(), context=()):
            return GuardVerdict("beta" not in text, "redact" if "beta" in text else "pass",
                                "pii_leak" if "beta" in text else None,
                                text=text.replace("beta", "[PERSON]"), consumed=len(text))
        nodes.check_output = mask
    body = chat(temperature=0)
    # A miss must stay a miss for the second request: the first one stores nothing.
    headers = {**auth, "cache-control": "no-store"} if case != "hit" else auth
    if case == "hit":  # both served from the cache, from the entry this first request leaves
        assert client.post("/v1/chat/completions", json=body, headers=auth).json()["embassy"]["cache"]["status"] \
            == "miss"
    whole = client.post("/v1/chat/completions", json=body, headers=headers)
    stream = client.post("/v1/chat/completions", json={**body, "stream": True, "stream_options": {"include_usage": True}}, headers=headers)
    assert whole.status_code == stream.status_code == 200
    assert comparable(whole.json()) == comparable(streamed(stream))
    assert whole.json()["embassy"]["cache"]["status"] == ("hit" if case == "hit" else "miss")
    first, second = request_records(client)[-2:]
    assert without_identity(first) == without_identity(second)
    assert first["fields"]["cache"] == whole.json()["embassy"]["cache"]["status"]
