"""Starts the real stack once per test session: a Ray head, the regional app, vLLM on the
default model, on free loopback ports, with its own state folder; stops it afterwards."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from embassy import stack
from embassy.settings import EmbassySettings, load_settings
from embassy.tenants import create_key
from tests.conftest import DEFAULT_MODEL, TEST_MANIFESTS

MAX_INFLIGHT = 24
# The session stack's settings while it runs, so that a module needing the machine to itself
# can stop it first (stop_session_stack).
_running: list[EmbassySettings] = []


@dataclass
class LiveStack:
    url: str
    settings: EmbassySettings
    key: str
    restricted_key: str
    state: stack.StackState
    strict_key: str
    config_path: Path


def e2e_config(tmp: Path, model_store: Path) -> Path:
    config = {
        "region": "eu", "host": "127.0.0.1", "port": stack.free_port(),
        "state_dir": str(tmp / "state"), "model_store": str(model_store),
        "models": [DEFAULT_MODEL], "dev_tenant": None,
        "tenants": {"acme": {"jurisdiction": "EU", "models": [DEFAULT_MODEL]},
                    "restricted": {"jurisdiction": "US", "models": []},
                    "strict": {"jurisdiction": "EU", "models": [DEFAULT_MODEL], "pii": {"EMAIL": "block"}},
                    "docs": {"jurisdiction": "EU", "models": [DEFAULT_MODEL]}},
        "cluster": {"num_cpus": 4, "object_store_mb": 256, "pin_services_to_reserved_cpu": True},
        "graph": {"llm": {"num_cpus": 1.0, "max_ongoing_requests": 32, "max_queued_requests": 64}},
        "requests": {"max_body_bytes": 131072, "timeout_s": 60, "max_inflight": MAX_INFLIGHT,
                     "max_completion_tokens_default": 64,
                     # Above the default 16,000: the context-length test sends about 11k tokens.
                     "max_message_chars": 64_000, "max_request_chars": 128_000},
        # The stack shares 2 cores with vLLM and the test process: a 50 ms Redis deadline
        # bypasses the cache whenever the engine runs, which the flow tests cannot tell from
        # a bug. The deadline itself is tested on its own (test_cache_redis.py).
        "cache": {"timeout_ms": 250},
        # Likewise the guard's 2 s screening deadline, which counts the wait behind other
        # requests' screenings; the deadline is tested on its own (test_guard_core.py).
        "guardrail": {"screen_timeout_s": 10},
        # The test versions (tests/data/manifests) for the swap tests; a verdict from fewer
        # requests than in production, so that a canary can be judged within a test.
        "rollout": {"registry": ["models/manifests", str(TEST_MANIFESTS)], "min_requests": 20,
                    "analysis_interval_s": 2, "drain_s": 60},
    }
    path = tmp / "e2e.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="session")
def live(prepared_model, tmp_path_factory) -> LiveStack:
    _, folder = prepared_model
    tmp = tmp_path_factory.mktemp("stack")
    path = e2e_config(tmp, folder.parent)
    settings = load_settings(path, environ={})
    state = stack.start_stack(settings, path, progress=lambda msg: print(f"[stack] {msg}"))
    _running.append(settings)
    try:
        yield LiveStack(state.url, settings, create_key(settings.keys_path, "acme"),
                        create_key(settings.keys_path, "restricted"), state,
                        create_key(settings.keys_path, "strict"), path)
    finally:
        stop_session_stack()


def stop_session_stack() -> None:
    """Stop the session stack if one runs. The two-region test starts two more Ray
    clusters; beside a third on 2 cores their GCS and dashboard agents time out starting
    (CI, stop 24), so it runs last (test_zzz_*) and stops this one first."""
    while _running:
        stack.stop_stack(_running.pop())
