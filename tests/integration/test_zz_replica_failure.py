"""A node with no healthy replica answers 503, and Serve replaces it (runs last: it kills
the LLM replica). The killed replica's vLLM engine processes must not outlive the
replacement's start: left behind, each keeps its KV cache and the engine's cores."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import DEFAULT_MODEL

pytestmark = pytest.mark.e2e
BODY = {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "What is an HS code?"}], "max_tokens": 2}


def _pids(needle: str) -> list[int]:
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            name = open(f"/proc/{d}/cmdline", "rb").read().decode(errors="replace")
        except OSError:
            continue
        if needle in name:
            pids.append(int(d))
    return pids


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (the replica's vLLM EngineCore and its worker)."""
    children = {}
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _alive(pids: list[int]) -> list[int]:
    return [p for p in pids if os.path.exists(f"/proc/{p}")]


def _wait_for(url: str, status: int, seconds: float) -> float | None:
    """Seconds until `url` answers `status` (None: not within `seconds`); a probe that times
    out counts as not yet."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        try:
            if httpx.get(url, timeout=10).status_code == status:
                return time.monotonic() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return None


def _serve_log_tail(live, lines: int = 40) -> str:
    """The Serve controller's last lines: why a replacement did not come up."""
    logs = sorted(Path(live.state.temp_dir, "session_latest", "logs", "serve").glob("controller_*.log"))
    return "\n".join(logs[-1].read_text(errors="replace").splitlines()[-lines:]) if logs else "(no controller log)"


def test_503_while_the_llm_has_no_replica_then_recovery(live):
    headers = {"Authorization": f"Bearer {live.key}"}
    pids = _pids(f"ServeReplica:embassy-eu.llm.{DEFAULT_MODEL}.1:LLM")
    assert pids, "LLM replica process not found"
    engine = [c for pid in pids for c in _descendants(pid)]
    assert engine, "the replica's vLLM engine processes were not found"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()

    # A request sent before the ingress notices waits for a replica: it is served by the
    # replacement or runs into the request timeout (504), never dropped or answered 500.
    early: list[httpx.Response] = []
    sender = threading.Thread(target=lambda: early.append(httpx.post(
        f"{live.url}/v1/chat/completions", json=BODY, headers=headers, timeout=300)))
    sender.start()

    noticed = _wait_for(f"{live.url}/readyz", 503, 30)
    assert noticed is not None, "readyz never reported the dead replica"
    r = httpx.post(f"{live.url}/v1/chat/completions", json=BODY, headers=headers, timeout=30)
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "service_unavailable" and "Traceback" not in r.text
    assert r.headers.get("retry-after")

    # Serve replaces the replica; the graph becomes ready and serves again.
    recovered = _wait_for(f"{live.url}/readyz", 200, 300)
    print(f"\n[replica failure] 503 after {noticed:.1f} s; ready again "
          f"{'after %.0f s' % (time.monotonic() - killed_at) if recovered is not None else 'NOT within 300 s'}")
    assert recovered is not None, f"the LLM replica was not replaced within 300 s:\n{_serve_log_tail(live)}"
    # The replacement freed what the dead replica's engine held before starting its own.
    assert not _alive(engine), f"the killed replica's engine processes {_alive(engine)} outlived it"
    r = httpx.post(f"{live.url}/v1/chat/completions", json=BODY, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    sender.join(timeout=300)
    assert early and early[0].status_code in (200, 504), early[0].text if early else "no answer"
