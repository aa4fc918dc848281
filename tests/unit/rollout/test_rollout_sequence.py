"""The order of a swap, a canary and a rollback (embassy/rollout.py), against a deterministic
fake of Serve's declarative deploy that records which model versions run after each
deploy and fails any version named `broken` to start, as Serve would. The real stack runs
the same sequence in tests/integration/test_model_swap.py."""

from __future__ import annotations

import pytest

from embassy import rollout
from embassy.canary import Sample
from embassy.model_routes import RolloutState, effective_routes
from embassy.settings import load_settings
from embassy.stack import DeployFailed
from models.prepare import PreparationError
from models.registry import UnknownModel
from tests.conftest import DEFAULT_MODEL, LOCAL_CONFIG, TEST_MANIFESTS

M = DEFAULT_MODEL


class FakeServe:
    def __init__(self, settings, state_file):
        self.settings, self.state_file = settings, state_file
        self.running: list[list[str]] = []  # versions running after each deploy

    def deploy(self):
        route = effective_routes(self.settings, RolloutState.read(self.state_file))[M]
        if "broken" in route.deployed():
            self.running.append([v for v in route.deployed() if v != "broken"])
            raise DeployFailed(f"embassy-eu.llm.{M}.broken", "The deployment failed to start 3 times in a row.")
        self.running.append(route.deployed())


@pytest.fixture
def region(tmp_path):
    settings = load_settings(LOCAL_CONFIG, environ={})
    settings = settings.model_copy(update={"rollout": settings.rollout.model_copy(update={
        "registry": [*settings.rollout.registry, TEST_MANIFESTS], "min_requests": 20})})
    serve = FakeServe(settings, tmp_path / "rollout.json")
    audit, invalidated, samples = [], [], {}
    r = rollout.Region(settings, serve.state_file, serve.deploy, audit=lambda a, f: audit.append((a, f)),
                       invalidate_cache=lambda m, v: invalidated.append((m, v)) or 3,
                       samples=lambda m, v: samples.get(v, []), clear_samples=lambda m, vs: None)
    r.serve, r.audit_log, r.invalidated, r.fake_samples = serve, audit, invalidated, samples
    return r


def test_a_full_swap_starts_the_new_version_before_moving_traffic_and_retires_the_old(region):
    out = rollout.deploy(region, f"{M}@1b")
    assert region.serve.running == [["1", "1b"], ["1b", "1"], ["1b"]]  # at most one extra version
    assert max(len(v) for v in region.serve.running) == 2
    assert region.route(M).stable == "1b" and region.route(M).previous == "1"
    assert region.invalidated == [(M, "1")] and out["cache_entries_removed"] == 3
    assert region.audit_log[-1][0] == "model.deploy"


def test_a_version_that_does_not_start_is_removed_and_the_stable_one_keeps_serving(region):
    with pytest.raises(rollout.RolloutError, match=r"did not start.*@1 keeps serving.*3 times in a row"):
        rollout.deploy(region, f"{M}@broken")
    assert region.serve.running[-1] == ["1"] and region.route(M).stable == "1" and region.route(M).canary is None
    assert region.audit_log[-1][0] == "model.deploy_failed"


def test_unknown_versions_and_bad_checksums_are_refused_before_anything_deploys(region):
    with pytest.raises(UnknownModel, match="no version '7'"):
        rollout.deploy(region, f"{M}@7")

    def bad_checksum(manifest):
        raise PreparationError(f"{manifest.source.file}: SHA-256 0000 does not match manifest")
    with pytest.raises(PreparationError, match="does not match"):
        rollout.deploy(region, f"{M}@1b", prepare=bad_checksum)
    assert region.serve.running == []


def test_a_canary_is_promoted_in_steps_when_it_holds_and_rolled_back_when_worse(region):
    rollout.deploy(region, f"{M}@1b", canary_percent=10)
    assert region.route(M).canary == "1b" and region.route(M).canary_percent == 10
    with pytest.raises(rollout.RolloutError, match="runs as a canary"):
        rollout.deploy(region, f"{M}@broken")
    good = [Sample(ok=True, ttft_s=0.1 + i * 1e-4, itl_s=0.04) for i in range(40)]
    region.fake_samples.update({"1": good, "1b": good})
    assert rollout.analyse(region, M).decision == "promote"
    rollout.promote(region, M, reason="held")
    assert region.route(M).canary_percent == 25
    region.fake_samples["1b"] = [Sample(ok=False) for _ in range(40)]
    out = rollout.watch(region, M, sleep=lambda s: None)
    assert out["result"] == "rolled back" and "error_rate" in out["reason"]
    assert region.route(M).stable == "1" and region.route(M).canary is None
    assert region.serve.running[-1] == ["1"] and region.invalidated[-1] == (M, "1b")


def test_watch_promotes_through_every_step_to_the_stable_version(region):
    rollout.deploy(region, f"{M}@1b", canary_percent=10)
    good = [Sample(ok=True, ttft_s=0.1, itl_s=0.04) for _ in range(40)]
    region.fake_samples.update({"1": good, "1b": good})
    seen = []
    out = rollout.watch(region, M, lambda route, verdict: seen.append(route.canary_percent), sleep=lambda s: None)
    assert out["result"] == "promoted" and seen == [10, 25, 50]
    assert region.route(M).stable == "1b" and region.serve.running[-1] == ["1b"]


def test_rollback_after_a_swap_returns_to_the_previous_version(region):
    rollout.deploy(region, f"{M}@1b")
    rollout.rollback(region, M, reason="answers regressed")
    assert region.route(M).stable == "1" and region.audit_log[-1][1]["reason"] == "answers regressed"
