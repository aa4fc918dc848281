"""A guard policy change reaches the running guardrail replicas without a restart.
(Named to run after the other e2e tests: it redeploys the app.)"""

from __future__ import annotations

import os
import time

import httpx
import pytest
import yaml

from embassy import stack
from embassy.settings import load_settings
from tests.integration.test_guardrail import assert_refused, chat
from tests.integration.test_api import post

pytestmark = pytest.mark.e2e
TEXT = "Which HS code fits the laptop I ship to jane.doe@example.com?"


def replica_pids() -> set[tuple[str, int]]:
    """(deployment, pid) of every Serve replica process of the app on this host."""
    found = set()
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = open(f"/proc/{d}/cmdline", "rb").read().decode(errors="replace")
        except OSError:
            continue
        if "ServeReplica:embassy-eu" in cmdline:  # the region's app and its model versions' apps
            name = cmdline.split("ServeReplica:")[1].split("\0")[0]  # "<app>:<deployment>"
            found.add((name.rsplit(":", 1)[1].split(".")[0], int(d)))
    return found


def apply(live, config: dict) -> None:
    """Edit the region file in place and apply it, as an operator would (Serve keys the
    app's code version on the file's path, so the same path means no code change)."""
    live.config_path.write_text(yaml.safe_dump(config))
    stack.apply_config(load_settings(live.config_path, environ={}), live.config_path)


def wait_for(live, predicate, seconds: float = 60) -> float:
    """Poll until `predicate(response)`; /readyz must stay 200 all along (nothing restarts)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        assert httpx.get(f"{live.url}/readyz", timeout=10).status_code == 200
        if predicate(post(live, chat(TEXT))):
            return time.monotonic() - t0
        time.sleep(0.5)
    raise AssertionError(f"the policy change did not apply within {seconds}s")


def test_a_policy_change_applies_live_without_restarting_replicas(live):
    original = yaml.safe_load(live.config_path.read_text())
    assert post(live, chat(TEXT)).status_code == 200
    before = replica_pids()
    assert {name for name, _ in before} >= {"Guardrail", "Ingress", "LLM"}
    changed = yaml.safe_load(live.config_path.read_text())
    changed["tenants"]["acme"]["pii"] = {"EMAIL": "block"}
    try:
        apply(live, changed)
        wait_for(live, lambda r: r.status_code == 400)
        assert_refused(post(live, chat(TEXT)), "pii")
        assert replica_pids() == before  # reconfigured in place: the same processes
    finally:
        apply(live, original)
    wait_for(live, lambda r: r.status_code == 200)
