"""Metrics, dashboard and alert rules: each outcome moves its metric, tenant labels stay
bounded, promtool accepts (and unit-tests) the rules, the dashboard loads and names only
metrics Embassy exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from embassy import metrics
from embassy.settings import PROJECT_ROOT
from tests.unit.ingress.test_app import chat, env  # noqa: F401 (a fixture)

OBS = PROJECT_ROOT / "cluster_configs" / "observability"
needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                                    reason="promtool is not installed (make install installs Debian's prometheus)")


def outcome(label: str) -> float:
    return metrics.REQUEST_OUTCOMES.labels("eu", "m", "acme", label)._value.get()


def test_each_outcome_moves_its_metric(env):
    client, nodes, auth, _ = env
    before = {k: outcome(k) for k in ("served", "cache_hit", "refused_prompt_injection", "error_503", "error_400")}
    assert client.post("/v1/chat/completions", json=chat(temperature=0), headers=auth).status_code == 200
    assert client.post("/v1/chat/completions", json=chat(temperature=0), headers=auth).status_code == 200  # hit
    nodes.refuse = "prompt_injection"
    assert client.post("/v1/chat/completions", json=chat(), headers=auth).status_code == 400
    nodes.refuse, nodes.ready = None, False
    assert client.post("/v1/chat/completions", json=chat(), headers=auth).status_code == 503
    nodes.ready = True
    assert client.post("/v1/chat/completions", json={"model": "m"}, headers=auth).status_code == 400
    after = {k: outcome(k) for k in before}
    assert {k: after[k] - before[k] for k in before} == {"served": 1, "cache_hit": 1, "refused_prompt_injection": 1,
                                                          "error_503": 1, "error_400": 1}


def _tenant_labels() -> set[str]:
    return {s.labels["tenant"] for family in (metrics.REQUESTS, metrics.REQUEST_OUTCOMES)
            for m in family.collect() for s in m.samples}


def test_tenant_labels_stay_bounded(env):
    client, _, auth, _ = env
    before = _tenant_labels()
    for i in range(30):
        client.post("/v1/chat/completions", json=chat(), headers={"Authorization": f"Bearer emb-forged-{i}"})
    client.post("/v1/chat/completions", json=chat(), headers=auth)
    assert _tenant_labels() - before <= {"acme", "unknown"}
    assert "unknown" in _tenant_labels() and not any(t.startswith("emb-") for t in _tenant_labels())


@needs_promtool
def test_promtool_accepts_and_unit_tests_the_rules():
    check = subprocess.run(["promtool", "check", "rules", str(OBS / "prometheus-rules.yml")], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run(["promtool", "test", "rules", "prometheus-rules.test.yml"], cwd=OBS, capture_output=True,
                          text=True)
    assert test.returncode == 0 and "SUCCESS" in test.stdout, test.stdout + test.stderr


def test_alerts_cover_what_operators_must_hear_about():
    rules = yaml.safe_load((OBS / "prometheus-rules.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert {"EmbassyHighErrorRatio", "EmbassyLatencyP99OverSLO", "EmbassyDriftDetected", "EmbassyGroundednessDrop",
            "EmbassyAuditChainBroken"} <= alerts


def _exported_names() -> set[str]:
    names = set()
    for value in vars(metrics).values():
        if hasattr(value, "_name") and hasattr(value, "_type"):
            base = value._name
            names |= {base, f"{base}_total", f"{base}_bucket", f"{base}_count", f"{base}_sum"}
    rules = yaml.safe_load((OBS / "prometheus-rules.yml").read_text())
    names |= {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    return names


def test_the_dashboard_loads_and_names_only_exported_metrics():
    dash = json.loads((OBS / "grafana-dashboard.json").read_text())
    assert dash["panels"] and dash["uid"] and dash["title"]
    exported = _exported_names()
    used = set()
    for panel in dash["panels"]:
        for target in panel["targets"]:
            used |= set(re.findall(r"\b(embassy[:_][a-z0-9_:]+)", target["expr"]))
    assert used and used <= exported, sorted(used - exported)
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for topic in ("latency", "tokens", "cache hit", "groundedness", "drift", "replicas", "queue", "audit"):
        assert topic in titles, topic
