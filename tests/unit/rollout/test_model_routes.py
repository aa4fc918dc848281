"""Per-request version choice: the canary's share, sticky conversations, invalid routes."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from embassy.model_routes import ModelRoute, RolloutState


def test_without_a_canary_every_request_goes_to_stable():
    route = ModelRoute(stable="1")
    assert {route.pick(str(i)) for i in range(200)} == {"1"}
    assert route.deployed() == ["1"]


def test_the_canary_gets_its_share_of_requests():
    route = ModelRoute(stable="1", canary="2", canary_percent=10)
    rng = random.Random(0)
    share = sum(route.pick(None, rng) == "2" for _ in range(20_000)) / 20_000
    assert 0.09 < share < 0.11


def test_sticky_routing_keeps_a_conversation_on_one_version_and_splits_conversations():
    route = ModelRoute(stable="1", canary="2", canary_percent=30, sticky=True)
    for conversation in ("a", "b", "order-77"):
        assert len({route.pick(conversation, random.Random(seed)) for seed in range(50)}) == 1
    share = sum(route.pick(f"conv-{i}") == "2" for i in range(5000)) / 5000
    assert 0.27 < share < 0.33


def test_zero_percent_canary_is_deployed_but_gets_no_traffic():
    route = ModelRoute(stable="1", canary="2", canary_percent=0, retiring=("0",))
    assert route.deployed() == ["1", "2", "0"]
    assert {route.pick(None, random.Random(s)) for s in range(500)} == {"1"}


@pytest.mark.parametrize("bad", [{"stable": "1", "canary": "1"}, {"stable": "1", "canary_percent": 5},
                                 {"stable": "1", "canary": "2", "canary_percent": 101}])
def test_invalid_routes_are_refused(bad):
    with pytest.raises(ValidationError):
        ModelRoute(**bad)


def test_state_file_round_trips_and_a_missing_one_is_empty(tmp_path):
    path = tmp_path / "rollout.json"
    assert RolloutState.read(path).models == {}
    RolloutState(models={"m": ModelRoute(stable="1", canary="2", canary_percent=25)}).write(path)
    assert RolloutState.read(path).models["m"].canary_percent == 25
