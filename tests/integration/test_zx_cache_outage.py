"""Redis killed under the running graph: requests are still answered, and the cache comes
back by itself once Redis does. Named to run after the other cache tests."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from embassy.redis_server import start_redis
from tests.integration.test_cache import ask, cache_of, stored
from tests.integration.test_api import metric, post

pytestmark = pytest.mark.e2e


def test_redis_killed_mid_run_then_restarted(live, tmp_path):
    body = ask("Which documents prove the preferential origin of consignment 1234?")
    stored(live, body)
    os.kill(live.state.redis_pid, signal.SIGKILL)
    bypassed_before = metric(live, "embassy_cache_bypass_total", reason="redis_unavailable")
    for _ in range(3):  # answered by the model, each within the normal time
        r = post(live, body)
        assert cache_of(r)["status"] == "bypass" and "unavailable" in cache_of(r)["reason"]
        assert r.json()["choices"][0]["message"]["content"]
    assert metric(live, "embassy_cache_bypass_total", reason="redis_unavailable") - bypassed_before >= 3
    port = int(live.state.redis_url.rsplit(":", 1)[1].split("/")[0])
    server = start_redis(Path(tmp_path), port=port)
    try:
        deadline = time.monotonic() + 30
        while cache_of(post(live, body))["status"] == "bypass":  # until the retry window has passed
            assert time.monotonic() < deadline, "the cache did not resume"
            time.sleep(0.5)
        assert stored(live, body)["embassy"]["cache"]["status"] == "hit"  # it stores and serves again
    finally:
        server.stop()
