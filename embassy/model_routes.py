"""Which version of each model answers: the routing table the ingress applies per request,
and the rollout state `embassy models` keeps for a region (one JSON file in its run folder).

A model has one stable version and at most one canary that takes `canary_percent` of its
requests, chosen per request, or per conversation when the caller names one and the
rollout is sticky. Versions being retired still run until their requests finish, but get
no new ones.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ModelRoute(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    stable: str
    canary: str | None = None
    canary_percent: float = Field(0.0, ge=0, le=100)
    sticky: bool = Field(False, description="A conversation id keeps its requests on one version.")
    retiring: tuple[str, ...] = Field((), description="Still running, no new requests.")
    previous: str | None = Field(None, description="The stable version before the last swap.")

    @model_validator(mode="after")
    def _canary_differs(self) -> "ModelRoute":
        if self.canary is not None and self.canary == self.stable:
            raise ValueError("the canary must be another version than the stable one")
        if self.canary is None and self.canary_percent:
            raise ValueError("canary_percent without a canary")
        return self

    def deployed(self) -> list[str]:
        """Every version that must have replicas: stable, canary, those being retired."""
        out = [self.stable] + ([self.canary] if self.canary else [])
        return out + [v for v in self.retiring if v not in out]

    def pick(self, conversation: str | None = None, rng: random.Random | None = None) -> str:
        """The version for one request."""
        if self.canary is None or self.canary_percent <= 0:
            return self.stable
        if self.sticky and conversation:
            digest = hashlib.sha256(conversation.encode()).digest()
            bucket = int.from_bytes(digest[:4], "big") % 10_000 / 100  # 0.00 .. 99.99
        else:
            bucket = (rng or random).random() * 100
        return self.canary if bucket < self.canary_percent else self.stable


class RolloutState(BaseModel):
    """The region's routes by model id, as `embassy models` last deployed them."""

    model_config = ConfigDict(extra="forbid")
    models: dict[str, ModelRoute] = Field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> "RolloutState":
        try:
            return cls.model_validate_json(path.read_text())
        except FileNotFoundError:
            return cls()

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.model_dump(mode="json"), indent=1) + "\n")
        tmp.replace(path)  # never a half-written state file


def initial_routes(settings) -> dict[str, ModelRoute]:
    """A fresh region: each served model on its configured (else default) version."""
    registry = settings.registry()
    return {m: ModelRoute(stable=registry.get_version(m, settings.rollout.versions.get(m)).version)
            for m in settings.models}


def effective_routes(settings, state: RolloutState) -> dict[str, ModelRoute]:
    """The routes for the settings' models: the rollout state's where it has one."""
    base = initial_routes(settings)
    return {m: state.models.get(m, route) for m, route in base.items()}
