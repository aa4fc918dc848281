"""A node with no healthy replica answers 503 (runs last: it kills the LLM replica)."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import pytest

from tests.conftest import DEFAULT_MODEL

pytestmark = pytest.mark.e2e
BODY = {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "What is an HS code?"}], "max_tokens": 2}


def _llm_replica_pids() -> list[int]:
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            name = open(f"/proc/{d}/cmdline", "rb").read().decode(errors="replace")
        except OSError:
            continue
        if f"ServeReplica:embassy-eu:LLM:{DEFAULT_MODEL}" in name:
            pids.append(int(d))
    return pids


def _wait_for(url: str, status: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if httpx.get(url, timeout=10).status_code == status:
            return True
        time.sleep(0.5)
    return False


def test_503_while_the_llm_has_no_replica_then_recovery(live):
    headers = {"Authorization": f"Bearer {live.key}"}
    pids = _llm_replica_pids()
    assert pids, "LLM replica process not found"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)

    # A request sent before the ingress notices waits for a replica: it is served by the
    # replacement or runs into the request timeout (504), never dropped or answered 500.
    early: list[httpx.Response] = []
    sender = threading.Thread(target=lambda: early.append(httpx.post(
        f"{live.url}/v1/chat/completions", json=BODY, headers=headers, timeout=300)))
    sender.start()

    assert _wait_for(f"{live.url}/readyz", 503, 30), "readyz never reported the dead replica"
    r = httpx.post(f"{live.url}/v1/chat/completions", json=BODY, headers=headers, timeout=30)
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "service_unavailable" and "Traceback" not in r.text
    assert r.headers.get("retry-after")

    # Serve replaces the replica; the graph becomes ready and serves again.
    assert _wait_for(f"{live.url}/readyz", 200, 300), "the LLM replica was not replaced"
    r = httpx.post(f"{live.url}/v1/chat/completions", json=BODY, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    sender.join(timeout=300)
    assert early and early[0].status_code in (200, 504), early[0].text if early else "no answer"
