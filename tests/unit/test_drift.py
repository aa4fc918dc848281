"""Drift detection: real prompt embeddings (CLINC domains), a shift is caught and
stationary traffic is not; through the ingress (fake graph), an alarm moves its metric and
leaves an audit record."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from embassy.audit import export
from embassy.drift import DriftDetector, mmd_test
from embassy.settings import PROJECT_ROOT

# 200 CLINC150 train prompts from each of three domains (tests/data/README.md).
SAMPLE = PROJECT_ROOT / "tests" / "data" / "clinc_sample.json"


@pytest.fixture(scope="module")
def domains():
    from embassy.embeddings import shared_embedder

    picked = json.loads(SAMPLE.read_text())
    embed = shared_embedder().embed
    return {d: embed(t) for d, t in picked.items()}


def test_mmd_separates_domains_and_not_halves_of_one(domains):
    _, p_same = mmd_test(domains["banking"][:100], domains["banking"][100:])
    _, p_diff = mmd_test(domains["banking"][:100], domains["travel"][:100])
    assert p_same > 0.05 and p_diff < 0.005


def test_a_shift_raises_one_alarm_and_stationary_traffic_none(domains):
    detector = DriftDetector(reference_size=100, window=100, check_every=25)
    mixed = np.vstack([domains["banking"], domains["kitchen_and_dining"]])
    order = np.random.default_rng(1).permutation(len(mixed))
    stationary = [a for v in mixed[order] for a in detector.observe(v)]
    assert stationary == []
    shifted = [a for v in domains["travel"] for a in detector.observe(v)]
    assert [a.signal for a in shifted] == ["embedding"]


def test_an_alarm_through_the_ingress_moves_its_metric_and_is_audited(tmp_path, domains):
    from fastapi.testclient import TestClient

    from deployments.ingress.app import create_app
    from deployments.ingress.core import ChatService
    from embassy import metrics
    from embassy.settings import EmbassySettings
    from embassy.tenants import KeyStore, create_key
    from tests.unit.ingress.test_app import MODEL, FakeGraphNodes, chat

    settings = EmbassySettings.model_validate({
        "region": "drift-test", "models": [MODEL], "state_dir": str(tmp_path),
        "tenants": {"acme": {"jurisdiction": "EU", "models": [MODEL]}},
        "drift": {"reference_size": 40, "window": 40, "check_every": 10}})
    nodes = FakeGraphNodes()
    nodes.embeddings = list(domains["banking"][:80]) + list(domains["travel"][:80])
    service = ChatService(settings, KeyStore.from_settings(settings), nodes, {MODEL: 100})

    async def readiness():
        return nodes.readiness()
    auth = {"Authorization": f"Bearer {create_key(settings.keys_path, 'acme')}"}
    before = metrics.DRIFT_DETECTED.labels("drift-test", "embedding")._value.get()
    with TestClient(create_app(service, readiness)) as client:  # one event loop: checks run in the background
        for i in range(160):
            assert client.post("/v1/chat/completions", json=chat(), headers=auth).status_code == 200
        deadline = time.monotonic() + 10
        while metrics.DRIFT_DETECTED.labels("drift-test", "embedding")._value.get() == before:
            assert time.monotonic() < deadline, "no drift alarm"
            time.sleep(0.1)
    assert any(r["action"] == "drift.detected" and r["fields"]["signal"] == "embedding"
               for r in export(settings.audit_root))
